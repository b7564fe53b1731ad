//! Types shared by the netfast datapath (`netfast-ebpf`) and its loader (`netfast`).
//!
//! Every map key and value is `#[repr(C)]` with explicit padding, so the kernel and
//! userspace agree on the layout byte for byte. Addresses and ports are kept in
//! network byte order, exactly as they sit in the packet, so the datapath never swaps.
#![no_std]

pub mod counters;
pub mod datapath_config;
pub mod flow;
pub mod forward;
pub mod fragment;
pub mod layout;
pub mod names;
pub mod tcp;

pub use counters::Counter;
pub use datapath_config::DatapathConfig;
pub use flow::{FlowKey, FlowState};
pub use forward::{Backend, ForwardKey};
pub use fragment::{FragEntry, FragKey};

/// IP protocol numbers the datapath translates.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}
