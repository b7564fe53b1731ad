//! Types shared by the netfast datapath (`netfast-ebpf`) and its loader (`netfast`).
//!
//! Every map key and value is `#[repr(C)]` with explicit padding, so the kernel and
//! userspace agree on the layout byte for byte. Addresses and ports are kept in
//! network byte order, exactly as they sit in the packet, so the datapath never swaps.
#![no_std]

pub mod counters;
pub mod ct;
pub mod datapath_config;
pub mod endpoint;
pub mod fragment;
pub mod host_local;
pub mod layout;
pub mod names;
pub mod publish;
pub mod tcp;

pub use counters::Counter;
pub use ct::{CtEntry, CtTuple};
pub use datapath_config::DatapathConfig;
pub use endpoint::Endpoint;
pub use fragment::{FragEntry, FragKey};
pub use host_local::{HostAddr, SockRevEntry, SockRevKey};
pub use publish::{Backend, PublishKey};

/// The name [`CtTuple`] had before it took the field's name (nf_conntrack's tuple).
#[deprecated(note = "renamed to CtTuple")]
pub type FlowKey = CtTuple;
/// The name [`CtEntry`] had before it took the field's name (a ct entry).
#[deprecated(note = "renamed to CtEntry")]
pub type FlowState = CtEntry;
/// The name [`PublishKey`] had while published ports were called forwards.
#[deprecated(note = "renamed to PublishKey")]
pub type ForwardKey = PublishKey;

/// IP protocol numbers the datapath translates.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

#[cfg(test)]
mod tests {
    /// Code written against the old names still builds and means the same types.
    #[test]
    #[allow(deprecated)]
    fn old_names_are_aliases() {
        use core::any::TypeId;
        assert_eq!(
            TypeId::of::<super::FlowKey>(),
            TypeId::of::<super::CtTuple>()
        );
        assert_eq!(
            TypeId::of::<super::FlowState>(),
            TypeId::of::<super::CtEntry>()
        );
        assert_eq!(
            TypeId::of::<super::ForwardKey>(),
            TypeId::of::<super::PublishKey>()
        );
    }
}
