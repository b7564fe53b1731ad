//! IPv4 fragment tracking: only a datagram's first fragment carries the ports, so the
//! datapath records them when it translates a first fragment and applies the same
//! translation to the later ones. Cilium's `bpf/lib/ipfrag.h` keeps the same record.

use bytemuck::{Pod, Zeroable};

/// A datagram as it arrives at the uplink, before translation: RFC 791 identifies
/// the fragments of one datagram by source, destination, protocol and IP id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FragKey {
    /// Network byte order.
    pub src_addr: u32,
    /// Network byte order.
    pub dst_addr: u32,
    /// The IP identification field, network byte order.
    pub ip_id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// The ports of a translated first fragment: with the `FragKey` they make the tuple
/// that the later fragments are looked up by in `CONNTRACK`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FragEntry {
    /// Network byte order (the ICMP echo identifier, as in `CtTuple`).
    pub src_port: u16,
    /// Network byte order.
    pub dst_port: u16,
    pub _pad: u32,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE, ns) when the first fragment passed. Records older than
    /// [`crate::names::FRAGMENT_TIMEOUT_NS`] are ignored, as the kernel's reassembly
    /// gives up after `net.ipv4.ipfrag_time`.
    pub seen_ns: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, explicitly padded, and checked by bytemuck's `Pod` derive.
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragEntry {}
}

const _: () = assert!(core::mem::size_of::<FragKey>() == 12);
const _: () = assert!(core::mem::size_of::<FragEntry>() == 16);
