//! The host's addresses as they are now, asked of the kernel's routing table with
//! `bpf_fib_lookup`, so that addresses added or changed after `up` count at once,
//! without a daemon, and without a map that userspace would have to keep in step.
//! Asked only on the new-flow paths: a miss and an established flow never get here.
//!
//! What `bpf_ipv4_fib_lookup` (net/core/filter.c) answers, and why these checks:
//! - it returns `BPF_FIB_LKUP_RET_SUCCESS` only for a unicast route (`RTN_UNICAST`),
//!   and fills `ifindex` (the route's device) and, with `BPF_FIB_LOOKUP_SRC` (Linux
//!   6.8), `ipv4_src` with `fib_result_prefsrc`: the route's `src`, else
//!   `inet_select_addr` on the route's device toward its gateway;
//! - it returns `BPF_FIB_LKUP_RET_NOT_FWDED` for every other route type (local,
//!   broadcast, multicast) and also when no route matches at all (`-ENETUNREACH` is
//!   mapped to it); blackhole, unreachable and prohibit routes have codes of their own;
//! - before any lookup it checks that forwarding is on for `params->ifindex`
//!   (`BPF_FIB_LKUP_RET_FWD_DISABLED`), and an ifindex of no device gives `-ENODEV`.

use core::mem::size_of;

use aya_ebpf::bindings::{
    BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS,
    BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC, bpf_fib_lookup as FibParams,
};

use netfast_common::CtTuple;

use crate::parse::Packet;

const AF_INET: u8 = 2;

/// The routing questions a program can ask on its context.
pub trait Routes {
    /// `bpf_fib_lookup` on this program's context: the helper's return value.
    fn fib_lookup(&self, params: &mut FibParams, flags: u32) -> i64;
    /// (the interface the packet arrived on, the interface this program runs on).
    /// On uplink ingress both are the uplink; on egress the first is where a
    /// forwarded packet came in (the bridge or a container's veth), 0 for a packet
    /// the host sent itself.
    fn ifindexes(&self) -> (u32, u32);
    /// Whether the frame went to an Ethernet group address (broadcast, multicast).
    fn to_group_mac(&self) -> bool;
}

/// A lookup of the tuple `key` as it arrived on `ifindex`, in the ingress perspective
/// (the kernel's input route: `iif`, source, destination, protocol and ports, as
/// `ip rule` may select on them). The TOS is left 0.
#[inline(always)]
fn params(key: &CtTuple, ifindex: u32) -> FibParams {
    // SAFETY: a plain C struct of integers and unions of integers; all zeros is valid
    // and is what the helper expects of the fields not set here.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = key.proto;
    params.sport = key.src_port;
    params.dport = key.dst_port;
    params.ifindex = ifindex;
    params.__bindgen_anon_3.ipv4_src = key.src_addr;
    params.__bindgen_anon_4.ipv4_dst = key.dst_addr;
    params
}

/// Whether a packet with the tuple `key` (ports 0 when it has none), arriving on the
/// uplink, is addressed to this host: what Docker's
/// `-m addrtype --dst-type LOCAL` matches before a publish without a host address
/// DNATs (an `RTN_LOCAL` route of the host namespace, any interface's address).
///
/// `NOT_FWDED` also stands for broadcast and multicast routes and for no route at
/// all, so these are told apart first: a destination in 0/8, 127/8 (the kernel
/// drops a loopback destination from the wire as a martian), or 224/4 and above
/// (multicast, reserved, 255.255.255.255) is never local here, nor is a frame sent
/// to an Ethernet group address (a subnet broadcast such as 10.0.1.255 travels to
/// ff:ff:ff:ff:ff:ff). What is left and still ambiguous is a unicast destination
/// the host has no route for at all; on a host with a default route there is none.
/// When forwarding is off on the uplink the answer is no: a DNAT-ed packet could not
/// be forwarded to the backend then either.
#[inline(always)]
pub fn is_local<R: Routes>(r: &R, key: &CtTuple) -> bool {
    let first_octet = u32::from_be(key.dst_addr) >> 24;
    if first_octet == 0 || is_loopback(key.dst_addr) || first_octet >= 224 || r.to_group_mac() {
        return false;
    }
    let mut params = params(key, r.ifindexes().1);
    r.fib_lookup(&mut params, 0) == i64::from(BPF_FIB_LKUP_RET_NOT_FWDED)
}

/// The lookup of the host's forwarding decision for `key` (a packet as a container
/// sent it) arriving on `ifindex` (its host-side veth), for [`next_hop`].
#[inline(always)]
pub fn forward_params(key: &CtTuple, ifindex: u32) -> FibParams {
    params(key, ifindex)
}

/// The forwarding decision with its next hop (`bpf_fib_lookup` without flags): on
/// `BPF_FIB_LKUP_RET_SUCCESS`, `params` holds the interface out (`ifindex`) and the
/// frame's MACs (`smac`, that interface's; `dmac`, the next hop's from the neighbour
/// table); on `BPF_FIB_LKUP_RET_NO_NEIGH` the interface but no MACs (the neighbour
/// entry is missing or not valid); on `BPF_FIB_LKUP_RET_FRAG_NEEDED` the interface,
/// when `params.tot_len` (host order, set by the caller) exceeds the route's MTU or,
/// in tc with `tot_len` 0, a packet that is not GSO exceeds the device's
/// (`bpf_skb_fib_lookup`). Returns the helper's return value.
#[inline(always)]
pub fn next_hop<R: Routes>(r: &R, params: &mut FibParams) -> i64 {
    r.fib_lookup(params, 0)
}

/// The address a new masqueraded flow takes: the source the kernel picks now for the
/// route `pkt` took out of the uplink (`fib_result_prefsrc`). MASQUERADE takes
/// `inet_select_addr` on the out device toward the next hop
/// (`nf_nat_masquerade_ipv4`): the same address, unless a route names a `src` of its
/// own, which the host's own connections then use too. The lookup is the forwarding
/// decision's own (from the interface the packet came in on); None, and the caller
/// keeps the address of `up`, when it fails, when its route leads out of another
/// interface than the uplink, or on a kernel before 6.8 (which refuses the flag).
#[inline(always)]
pub fn masquerade_source<R: Routes>(r: &R, pkt: &Packet) -> Option<u32> {
    let (arrived, uplink) = r.ifindexes();
    let mut params = params(&pkt.key, arrived);
    let ret = r.fib_lookup(&mut params, BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH);
    // FRAG_NEEDED comes after a successful lookup, with the result filled in: tc
    // checks the packet against the route device's MTU last.
    if ret != i64::from(BPF_FIB_LKUP_RET_SUCCESS) && ret != i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED)
    {
        return None;
    }
    // SAFETY: the helper wrote the IPv4 member of the union.
    let src = unsafe { params.__bindgen_anon_3.ipv4_src };
    (params.ifindex == uplink && src != 0).then_some(src)
}

/// Whether `addr` (network byte order) is in 127.0.0.0/8: an address of `lo`, which
/// the kernel drops as a martian when it arrives from the wire (unless the interface
/// has `route_localnet`).
#[inline(always)]
pub fn is_loopback(addr: u32) -> bool {
    u32::from_be(addr) >> 24 == 127
}

/// The size the helper is told; a const so the verifier sees a known scalar.
pub const FIB_PARAMS_LEN: i32 = size_of::<FibParams>() as i32;
