//! Conntrack: one flow is two ct entries in the `CONNTRACK` LRU map, one per direction,
//! each keyed by the tuple its direction's packets carry on the uplink. Each entry's
//! [`CtEntry::reverse_tuple`] is the other's key (nf_conntrack's reply tuple).

use bytemuck::{Pod, Zeroable};

/// A packet's 5-tuple as the datapath sees it on the uplink, before translation.
///
/// For ICMP echo the identifier stands in for a port: a request carries it as
/// `src_port` (with `dst_port` 0), a reply as `dst_port` (with `src_port` 0), so the
/// reply's key is the request's key reversed, as for TCP and UDP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct CtTuple {
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

impl CtTuple {
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

/// `CtEntry::kind`: which translation made the flow.
pub const KIND_DNAT: u8 = 1;
pub const KIND_SNAT: u8 = 2;
/// A routed flow: a peer that routes the masqueraded subnet via the host opened it
/// to a container's own address, with `allow_direct_routing`. Tracked, not
/// translated: both entries hold the container's address and port, which the
/// packets already carry, so translation writes nothing. The reply entry is what
/// tells the container's replies from new masqueraded flows on the way out (an
/// nf_conntrack entry without NAT; Cilium skips masquerade for a reply of a
/// connection the outside opened, found in its CT map). Like a DNAT flow, it starts
/// from outside: its original entry applies on ingress, its reply entry on egress.
pub const KIND_ROUTED: u8 = 3;

/// `CtEntry::direction`: the first packet's direction, or the replies'.
pub const DIR_ORIGINAL: u8 = 1;
pub const DIR_REPLY: u8 = 2;

/// What to do with a packet whose tuple matches a `CtTuple`.
///
/// The side that is rewritten follows from `kind` and `direction`: DNAT rewrites the
/// destination of original packets and the source of replies; SNAT the reverse.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtEntry {
    /// The address written into the packet. Network byte order.
    pub nat_addr: u32,
    /// The port (or ICMP identifier) written into the packet. Network byte order.
    pub nat_port: u16,
    pub kind: u8,
    pub direction: u8,
    /// TCP (`crate::tcp`): every flag this direction sent, OR-ed together.
    pub tcp_flags: u8,
    pub _pad: u8,
    /// TCP: the largest raw (unscaled) window this direction advertised. Host order.
    pub tcp_window: u16,
    /// TCP: the sequence number after the furthest segment this direction sent
    /// (nf_conntrack's `td_end`). Host order; valid once `tcp_flags` is not 0.
    pub tcp_seq_end: u32,
    /// TCP: the highest acknowledgement number this direction sent (`td_maxack`).
    /// Host order; valid once `tcp_flags` has ACK.
    pub tcp_ack: u32,
    pub _pad2: [u8; 4],
    /// When the flow was created: `bpf_ktime_get_coarse_ns`, CLOCK_MONOTONIC_COARSE in
    /// ns (one scheduler tick of resolution; see `netfast-ebpf/src/conntrack.rs`).
    pub created_ns: u64,
    /// The same clock at the last packet in this direction.
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// Whether an entry of `kind` for packets going `direction` rewrites their
/// destination (true) or their source (false): which side of the uplink it applies
/// on (destination: ingress). Flows that start from outside (DNAT, routed) rewrite
/// the destination of their original packets; SNAT flows, which start from the
/// subnet, the source. One comparison, as it was with two kinds: the datapath asks
/// this on every conntrack hit.
pub const fn rewrites_destination(kind: u8, direction: u8) -> bool {
    (kind != KIND_SNAT) == (direction == DIR_ORIGINAL)
}

impl CtEntry {
    /// True when the destination is rewritten, false when the source is.
    pub const fn rewrites_destination(&self) -> bool {
        rewrites_destination(self.kind, self.direction)
    }

    /// The reverse entry: the other half's, the same translation undone. Everything it holds
    /// follows from this entry and its key, so an evicted half can be rebuilt.
    pub const fn reverse_entry(&self, key: &CtTuple) -> CtEntry {
        let dst = self.rewrites_destination();
        let nat_addr = pick32(dst, key.dst_addr, key.src_addr);
        let nat_port = pick16(dst, key.dst_port, key.src_port);
        CtEntry {
            nat_addr,
            nat_port,
            kind: self.kind,
            direction: if self.direction == DIR_ORIGINAL {
                DIR_REPLY
            } else {
                DIR_ORIGINAL
            },
            tcp_flags: 0,
            _pad: 0,
            tcp_window: 0,
            tcp_seq_end: 0,
            tcp_ack: 0,
            _pad2: [0; 4],
            created_ns: self.created_ns,
            last_seen_ns: self.last_seen_ns,
            packets: 0,
            bytes: 0,
        }
    }

    /// The reverse tuple: the key of the other half of the flow that `key` (this
    /// entry's key) belongs to, which is the translated packet seen coming back.
    pub const fn reverse_tuple(&self, key: &CtTuple) -> CtTuple {
        let dst = self.rewrites_destination();
        CtTuple {
            src_addr: pick32(dst, self.nat_addr, key.dst_addr),
            dst_addr: pick32(dst, key.src_addr, self.nat_addr),
            src_port: pick16(dst, self.nat_port, key.dst_port),
            dst_port: pick16(dst, key.src_port, self.nat_port),
            proto: key.proto,
            _pad: [0; 3],
        }
    }
}

/// `if cond { a } else { b }` as masks: LLVM turns a branchy choice between two
/// fields of one struct into a choice between their addresses (pointer OR), which the
/// BPF verifier refuses ("bitwise operator |= on pointer prohibited").
#[inline(always)]
const fn pick32(cond: bool, a: u32, b: u32) -> u32 {
    let mask = (cond as u32).wrapping_neg();
    (a & mask) | (b & !mask)
}

#[inline(always)]
const fn pick16(cond: bool, a: u16, b: u16) -> u16 {
    let mask = (cond as u16).wrapping_neg();
    (a & mask) | (b & !mask)
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are `#[repr(C)]`, padded explicitly, and `Pod` by bytemuck's
    // derive, which rejects implicit padding.
    unsafe impl aya::Pod for super::CtTuple {}
    unsafe impl aya::Pod for super::CtEntry {}
}

const _: () = assert!(core::mem::size_of::<CtTuple>() == 16);
const _: () = assert!(core::mem::size_of::<CtEntry>() == 56);

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: (u32, u16), dst: (u32, u16)) -> CtTuple {
        CtTuple {
            src_addr: src.0,
            src_port: src.1,
            dst_addr: dst.0,
            dst_port: dst.1,
            proto: 6,
            _pad: [0; 3],
        }
    }

    fn state(nat: (u32, u16), kind: u8, direction: u8) -> CtEntry {
        CtEntry {
            nat_addr: nat.0,
            nat_port: nat.1,
            kind,
            direction,
            ..CtEntry::default()
        }
    }

    #[test]
    fn reverse_tuples_point_at_each_other() {
        let (client, host, backend) = ((1, 40000), (2, 8088), (3, 80));
        // DNAT: client -> host becomes client -> backend; the reply is backend -> client.
        let original = key(client, host);
        let reply = key(backend, client);
        let dnat_original = state(backend, KIND_DNAT, DIR_ORIGINAL);
        let dnat_reply = state(host, KIND_DNAT, DIR_REPLY);
        assert_eq!(dnat_original.reverse_tuple(&original), reply);
        assert_eq!(dnat_reply.reverse_tuple(&reply), original);

        // SNAT: container -> remote becomes uplink:port -> remote; reply remote -> uplink.
        let (container, remote, masq) = ((4, 5555), (5, 9000), (2, 61000));
        let original = key(container, remote);
        let reply = key(remote, masq);
        let snat_original = state(masq, KIND_SNAT, DIR_ORIGINAL);
        let snat_reply = state(container, KIND_SNAT, DIR_REPLY);
        assert_eq!(snat_original.reverse_tuple(&original), reply);
        assert_eq!(snat_reply.reverse_tuple(&reply), original);
        assert_eq!(snat_original.reverse_entry(&original), snat_reply);
        assert_eq!(snat_reply.reverse_entry(&reply), snat_original);
    }

    #[test]
    fn a_routed_flow_translates_nothing_and_pairs_like_dnat() {
        // Routed: peer -> container stays peer -> container; the reply is the
        // container's own packet back, container -> peer.
        let (peer, container) = ((1, 40000), (3, 22));
        let original = key(peer, container);
        let reply = key(container, peer);
        let routed_original = state(container, KIND_ROUTED, DIR_ORIGINAL);
        let routed_reply = state(container, KIND_ROUTED, DIR_REPLY);
        assert!(routed_original.rewrites_destination());
        assert!(!routed_reply.rewrites_destination());
        assert_eq!(routed_original.reverse_tuple(&original), reply);
        assert_eq!(routed_reply.reverse_tuple(&reply), original);
        assert_eq!(routed_original.reverse_entry(&original), routed_reply);
        assert_eq!(routed_reply.reverse_entry(&reply), routed_original);
        // What each entry writes is what its packets carry already.
        assert_eq!(
            (routed_original.nat_addr, routed_original.nat_port),
            (original.dst_addr, original.dst_port)
        );
        assert_eq!(
            (routed_reply.nat_addr, routed_reply.nat_port),
            (reply.src_addr, reply.src_port)
        );
    }

    #[test]
    fn a_dnat_half_rebuilds_the_other() {
        let (client, host, backend) = ((1, 40000), (2, 8088), (3, 80));
        let original = key(client, host);
        let reply = key(backend, client);
        let dnat_original = state(backend, KIND_DNAT, DIR_ORIGINAL);
        let dnat_reply = state(host, KIND_DNAT, DIR_REPLY);
        assert_eq!(dnat_original.reverse_entry(&original), dnat_reply);
        assert_eq!(dnat_reply.reverse_entry(&reply), dnat_original);
    }
}
