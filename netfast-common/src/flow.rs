//! Conntrack: one flow is two entries in the `CONNTRACK` LRU map, one per direction.

use bytemuck::{Pod, Zeroable};

/// A packet's 5-tuple as the datapath sees it on the uplink, before translation.
///
/// For ICMP echo the identifier stands in for a port: a request carries it as
/// `src_port` (with `dst_port` 0), a reply as `dst_port` (with `src_port` 0), so the
/// reply's key is the request's key reversed, as for TCP and UDP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey {
    /// Network byte order.
    pub src_addr: u32,
    /// Network byte order.
    pub dst_addr: u32,
    /// Network byte order.
    pub src_port: u16,
    /// Network byte order.
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The key of the packets that travel the other way.
    pub const fn reversed(&self) -> Self {
        Self {
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// `FlowState::kind`: which translation made the flow.
pub const KIND_DNAT: u8 = 1;
pub const KIND_SNAT: u8 = 2;

/// `FlowState::direction`: the first packet's direction, or the replies'.
pub const DIR_ORIGINAL: u8 = 1;
pub const DIR_REPLY: u8 = 2;

/// What to do with a packet whose tuple matches a `FlowKey`.
///
/// The side that is rewritten follows from `kind` and `direction`: DNAT rewrites the
/// destination of original packets and the source of replies; SNAT the reverse.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowState {
    /// The address written into the packet. Network byte order.
    pub nat_addr: u32,
    /// The port (or ICMP identifier) written into the packet. Network byte order.
    pub nat_port: u16,
    pub kind: u8,
    pub direction: u8,
    /// Every TCP flag seen in this direction, OR-ed together.
    pub tcp_flags: u8,
    pub _pad: [u8; 7],
    /// `bpf_ktime_get_ns` when the flow was created.
    pub created_ns: u64,
    /// `bpf_ktime_get_ns` of the last packet in this direction.
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl FlowState {
    /// True when the destination is rewritten, false when the source is.
    pub const fn rewrites_destination(&self) -> bool {
        (self.kind == KIND_DNAT) == (self.direction == DIR_ORIGINAL)
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are `#[repr(C)]`, padded explicitly, and `Pod` by bytemuck's
    // derive, which rejects implicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowState {}
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);
const _: () = assert!(core::mem::size_of::<FlowState>() == 48);
