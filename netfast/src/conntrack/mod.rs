//! Conntrack as operators and the GC see it: pairs of `CONNTRACK` (and
//! `CONNTRACK_UNASSURED`) entries joined into flows, and the TCP state derived from
//! what both halves recorded (`netfast_common::tcp::tcp_state`).
//!
//! Everything here is pure: it works on entries already read from the map, so it is
//! unit-tested without BPF.

pub mod gc;
mod timeouts;

pub use timeouts::{Timeouts, expired};

use std::{collections::HashMap, net::Ipv4Addr};

use netfast_common::{
    Backend, CtEntry, CtTuple, PublishKey,
    ct::{DIR_ORIGINAL, DIR_REPLY, KIND_DNAT, KIND_ROUTED, KIND_SNAT},
    proto,
};

pub use netfast_common::tcp::{TcpState, flags as tcp_flags};

/// One conntrack entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Half {
    pub key: CtTuple,
    pub state: CtEntry,
}

/// Which conntrack map a flow's entries live in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Table {
    /// `CONNTRACK`: assured flows (TCP handshake done, or a UDP or ICMP reply seen).
    #[default]
    Assured,
    /// `CONNTRACK_UNASSURED`: new flows until then.
    Unassured,
}

impl Table {
    /// Both tables, in the order GC and `ct list` go through them.
    pub const ALL: [Table; 2] = [Table::Assured, Table::Unassured];

    /// The pinned map that holds this table's ct entries.
    pub const fn map_name(self) -> &'static str {
        match self {
            Table::Assured => netfast_common::names::MAP_CONNTRACK,
            Table::Unassured => netfast_common::names::MAP_CONNTRACK_UNASSURED,
        }
    }
}

/// A flow: its original and reply entries. Either may be missing, since the LRU map
/// can evict one half alone; the other half's `reverse_tuple` still names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub original: Option<Half>,
    pub reply: Option<Half>,
    /// The map both halves are in.
    pub table: Table,
}

/// A 5-tuple in host terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
}

impl From<&CtTuple> for Tuple {
    fn from(k: &CtTuple) -> Self {
        Tuple {
            src: addr(k.src_addr),
            src_port: u16::from_be(k.src_port),
            dst: addr(k.dst_addr),
            dst_port: u16::from_be(k.dst_port),
        }
    }
}

/// A network-byte-order address as the maps hold it.
pub fn addr(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

/// The network-byte-order `u32` the maps hold for `a`.
pub fn raw_addr(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

impl Flow {
    /// The half that is present (the original one when both are). `pair_flows`
    /// never builds a flow without either.
    fn any(&self) -> Half {
        self.original.or(self.reply).unwrap_or_default()
    }

    /// The key of the original direction, as the first packet carried it.
    pub fn original_key(&self) -> CtTuple {
        match (&self.original, &self.reply) {
            (Some(o), _) => o.key,
            (None, Some(r)) => r.state.reverse_tuple(&r.key),
            (None, None) => CtTuple::default(),
        }
    }

    /// The key of the reply direction.
    pub fn reply_key(&self) -> CtTuple {
        match (&self.reply, &self.original) {
            (Some(r), _) => r.key,
            (None, Some(o)) => o.state.reverse_tuple(&o.key),
            (None, None) => CtTuple::default(),
        }
    }

    /// The original packet after translation: the reply key reversed.
    pub fn translated_key(&self) -> CtTuple {
        self.reply_key().reversed()
    }

    pub fn proto(&self) -> u8 {
        self.any().key.proto
    }

    /// `KIND_DNAT`, `KIND_SNAT` or `KIND_ROUTED`.
    pub fn kind(&self) -> u8 {
        self.any().state.kind
    }

    pub fn is_complete(&self) -> bool {
        self.original.is_some() && self.reply.is_some()
    }

    /// The TCP state, for TCP flows only. A missing half counts as one that recorded
    /// nothing.
    pub fn tcp_state(&self) -> Option<TcpState> {
        let o = self.original.map(|h| h.state).unwrap_or_default();
        let r = self.reply.map(|h| h.state).unwrap_or_default();
        (self.proto() == proto::TCP).then(|| netfast_common::tcp::tcp_state(&o, &r))
    }

    pub fn created_ns(&self) -> u64 {
        self.halves().map(|h| h.state.created_ns).min().unwrap_or(0)
    }

    pub fn last_seen_ns(&self) -> u64 {
        self.halves()
            .map(|h| h.state.last_seen_ns)
            .max()
            .unwrap_or(0)
    }

    /// Packets (original, reply).
    pub fn packets(&self) -> (u64, u64) {
        (
            self.original.map_or(0, |h| h.state.packets),
            self.reply.map_or(0, |h| h.state.packets),
        )
    }

    /// Bytes (original, reply).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.original.map_or(0, |h| h.state.bytes),
            self.reply.map_or(0, |h| h.state.bytes),
        )
    }

    fn halves(&self) -> impl Iterator<Item = &Half> {
        self.original.iter().chain(self.reply.iter())
    }

    /// Both keys, to delete the pair; a missing half's key is included too, since a
    /// racing datapath may have written it again.
    pub fn keys(&self) -> [CtTuple; 2] {
        [self.original_key(), self.reply_key()]
    }

    /// True for a DNAT flow that came in through the published port `key`: its first
    /// packet went to that (host address, host port, protocol); a publish on every
    /// address (`host_addr` 0) takes any destination address.
    pub fn through_publish(&self, key: &PublishKey) -> bool {
        let o = self.original_key();
        self.kind() == KIND_DNAT
            && o.proto == key.proto
            && o.dst_port == key.host_port
            && (key.host_addr == 0 || key.host_addr == o.dst_addr)
    }

    /// True when the flow's translated destination is `backend`: for a DNAT flow,
    /// the container its packets go to.
    pub fn goes_to(&self, backend: &Backend) -> bool {
        let t = self.translated_key();
        t.dst_addr == backend.addr && t.dst_port == backend.port
    }

    /// A UDP flow that a publish change leaves pinned to `old`: it came in through
    /// `key` and still goes to `old`, the backend `key` no longer leads to. UDP has no
    /// end, so a sender with a fixed source port would stay on `old` for as long as it
    /// sends; these flows are removed, as Docker clears conntrack on publish changes.
    /// TCP flows are kept until they close.
    pub fn pinned_udp(&self, key: &PublishKey, old: &Backend) -> bool {
        self.proto() == proto::UDP && self.through_publish(key) && self.goes_to(old)
    }

    /// True when this is the SNAT flow of a hairpin connection whose DNAT flow is
    /// `dnat`. A hairpin connection is two chained flows (`netfast-ebpf`'s
    /// `container.rs`): the DNAT flow `client -> host:published` becomes `client ->
    /// backend`, and a SNAT flow keyed by that translated packet makes it `gateway:port
    /// -> backend`. Without its DNAT flow the SNAT flow translates nothing (the
    /// backend's replies need both), yet it holds its SNAT port until it times out; so
    /// whatever deletes the DNAT flow deletes this one too.
    ///
    /// No other flow can match: a SNAT flow's original source is a container, and the
    /// only DNAT flows from a container to a backend are hairpin ones (traffic
    /// between containers is never translated).
    pub fn chained_to(&self, dnat: &Flow) -> bool {
        self.kind() == KIND_SNAT
            && dnat.kind() == KIND_DNAT
            && self.original_key() == dnat.translated_key()
    }

    pub fn matches(&self, f: &FlowFilter) -> bool {
        let (o, t) = (self.original_key(), self.translated_key());
        let addrs = [o.src_addr, o.dst_addr, t.src_addr, t.dst_addr];
        let ports = [o.src_port, o.dst_port, t.src_port, t.dst_port];
        f.proto.is_none_or(|p| p == self.proto())
            && f.kind.is_none_or(|k| k == self.kind())
            && f.addr.is_none_or(|a| addrs.contains(&raw_addr(a)))
            && f.port.is_none_or(|p| ports.contains(&p.to_be()))
    }
}

/// The flows of `flows` [chained](Flow::chained_to) to a DNAT flow of `dnat`: the
/// hairpin SNAT flows that deleting `dnat` would leave behind.
pub fn hairpin_partners<'a>(dnat: &'a [Flow], flows: &'a [Flow]) -> Vec<&'a Flow> {
    flows
        .iter()
        .filter(|f| dnat.iter().any(|d| f.chained_to(d)))
        .collect()
}

/// Which flows `ct list` and `ct flush` act on; `None` matches everything.
/// An address or port matches when any side of the original or translated tuple has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub proto: Option<u8>,
    pub addr: Option<Ipv4Addr>,
    pub port: Option<u16>,
    /// `KIND_DNAT`, `KIND_SNAT` or `KIND_ROUTED`.
    pub kind: Option<u8>,
}

/// Joins entries of `CONNTRACK` into flows through `reverse_tuple`. Entries whose
/// reverse half is missing become half flows. The order follows the input's original
/// entries.
pub fn pair_flows(entries: impl IntoIterator<Item = (CtTuple, CtEntry)>) -> Vec<Flow> {
    pair_flows_in(Table::Assured, entries)
}

/// [`pair_flows`] for the entries of one `table`.
pub fn pair_flows_in(
    table: Table,
    entries: impl IntoIterator<Item = (CtTuple, CtEntry)>,
) -> Vec<Flow> {
    let entries: Vec<Half> = entries
        .into_iter()
        .map(|(key, state)| Half { key, state })
        .collect();
    let by_key: HashMap<CtTuple, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, h)| (h.key, i))
        .collect();
    let mut used = vec![false; entries.len()];
    let mut flows = Vec::new();
    for (i, h) in entries.iter().enumerate() {
        if h.state.direction != DIR_ORIGINAL {
            continue;
        }
        used[i] = true;
        let reply = by_key
            .get(&h.state.reverse_tuple(&h.key))
            .copied()
            .filter(|&j| {
                entries[j].state.direction == DIR_REPLY && entries[j].state.kind == h.state.kind
            });
        if let Some(j) = reply {
            used[j] = true;
        }
        flows.push(Flow {
            original: Some(*h),
            reply: reply.map(|j| entries[j]),
            table,
        });
    }
    for (i, h) in entries.iter().enumerate() {
        if !used[i] {
            flows.push(Flow {
                original: None,
                reply: Some(*h),
                table,
            });
        }
    }
    flows
}

/// `KIND_DNAT`/`KIND_SNAT`/`KIND_ROUTED` as operators write it. A routed flow's
/// TRANSLATED tuple is its ORIGINAL one: nothing is translated.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_DNAT => "DNAT",
        KIND_SNAT => "SNAT",
        KIND_ROUTED => "ROUTED",
        _ => "?",
    }
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        _ => "?",
    }
}

/// `CLOCK_MONOTONIC` in ns: the base of the datapath's stamps
/// (`bpf_ktime_get_coarse_ns` reads its coarse variant, at most one tick behind).
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC exists on every Linux; an error cannot happen, and 0 (boot)
    // would only make flows look idle longer.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_flags::{ACK, SYN};

    fn key(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, p: u8) -> CtTuple {
        CtTuple {
            src_addr: u32::from_ne_bytes(src),
            dst_addr: u32::from_ne_bytes(dst),
            src_port: sp.to_be(),
            dst_port: dp.to_be(),
            proto: p,
            _pad: [0; 3],
        }
    }

    fn st(nat: [u8; 4], port: u16, kind: u8, dir: u8, flags: u8) -> CtEntry {
        CtEntry {
            nat_addr: u32::from_ne_bytes(nat),
            nat_port: port.to_be(),
            kind,
            direction: dir,
            tcp_flags: flags,
            created_ns: 100,
            last_seen_ns: 200,
            packets: 3,
            bytes: 180,
            ..CtEntry::default()
        }
    }

    /// A DNAT pair: 10.0.1.26:40000 -> 10.0.1.48:8088 becomes -> 172.16.0.102:80.
    fn dnat_pair() -> [(CtTuple, CtEntry); 2] {
        let client = [10, 0, 1, 26];
        let host = [10, 0, 1, 48];
        let backend = [172, 16, 0, 102];
        [
            (
                key(client, 40000, host, 8088, proto::TCP),
                st(backend, 80, KIND_DNAT, DIR_ORIGINAL, SYN | ACK),
            ),
            (
                key(backend, 80, client, 40000, proto::TCP),
                st(host, 8088, KIND_DNAT, DIR_REPLY, SYN | ACK),
            ),
        ]
    }

    #[test]
    fn pairs_join_and_translate() {
        let [o, r] = dnat_pair();
        // Reply first: pairing must not depend on iteration order.
        let flows = pair_flows([r, o]);
        assert_eq!(flows.len(), 1);
        let f = flows[0];
        assert!(f.is_complete());
        assert_eq!(f.kind(), KIND_DNAT);
        assert_eq!(f.tcp_state(), Some(TcpState::Established));
        let orig = Tuple::from(&f.original_key());
        let tr = Tuple::from(&f.translated_key());
        assert_eq!(
            (orig.src, orig.src_port, orig.dst, orig.dst_port),
            (
                Ipv4Addr::new(10, 0, 1, 26),
                40000,
                Ipv4Addr::new(10, 0, 1, 48),
                8088
            )
        );
        assert_eq!(
            (tr.src, tr.src_port, tr.dst, tr.dst_port),
            (
                Ipv4Addr::new(10, 0, 1, 26),
                40000,
                Ipv4Addr::new(172, 16, 0, 102),
                80
            )
        );
        assert_eq!(f.packets(), (3, 3));
        assert_eq!(f.keys(), [o.0, r.0]);
    }

    /// A routed flow (`allow_direct_routing`): 10.0.1.26:40000 -> 172.16.0.103:22,
    /// tracked, not translated.
    #[test]
    fn routed_pairs_join_and_translate_nothing() {
        let peer = [10, 0, 1, 26];
        let container = [172, 16, 0, 103];
        let o = (
            key(peer, 40000, container, 22, proto::TCP),
            st(container, 22, KIND_ROUTED, DIR_ORIGINAL, SYN | ACK),
        );
        let r = (
            key(container, 22, peer, 40000, proto::TCP),
            st(container, 22, KIND_ROUTED, DIR_REPLY, SYN | ACK),
        );
        let flows = pair_flows([r, o]);
        assert_eq!(flows.len(), 1);
        let f = flows[0];
        assert!(f.is_complete());
        assert_eq!(kind_name(f.kind()), "ROUTED");
        assert_eq!(f.tcp_state(), Some(TcpState::Established));
        assert_eq!(f.translated_key(), f.original_key());
        assert_eq!(f.keys(), [o.0, r.0]);
        // Either half names the other, as for translated flows.
        assert_eq!(pair_flows([r])[0].original_key(), o.0);
        assert_eq!(pair_flows([o])[0].reply_key(), r.0);
        // `--kind routed` finds it, the others do not; no publish is its.
        assert!(f.matches(&FlowFilter {
            kind: Some(KIND_ROUTED),
            ..Default::default()
        }));
        for kind in [KIND_DNAT, KIND_SNAT] {
            assert!(!f.matches(&FlowFilter {
                kind: Some(kind),
                ..Default::default()
            }));
        }
        let publish = PublishKey {
            host_addr: 0,
            host_port: 22u16.to_be(),
            proto: proto::TCP,
            _pad: 0,
        };
        assert!(!f.through_publish(&publish));
    }

    #[test]
    fn half_flows_still_name_both_keys() {
        let [o, r] = dnat_pair();
        let only_reply = pair_flows([r]);
        assert_eq!(only_reply.len(), 1);
        assert!(!only_reply[0].is_complete());
        assert_eq!(only_reply[0].original_key(), o.0);
        let only_original = pair_flows([o]);
        assert_eq!(only_original[0].reply_key(), r.0);
    }

    #[test]
    fn pinned_udp_flows_match_publish_and_old_backend() {
        let client = [10, 0, 1, 26];
        let host = [10, 0, 1, 48];
        let (b2, b3) = ([172, 16, 0, 102], [172, 16, 0, 103]);
        let udp_to = |backend: [u8; 4], p: u8| {
            pair_flows([
                (
                    key(client, 40001, host, 5353, p),
                    st(backend, 53, KIND_DNAT, DIR_ORIGINAL, 0),
                ),
                (
                    key(backend, 53, client, 40001, p),
                    st(host, 5353, KIND_DNAT, DIR_REPLY, 0),
                ),
            ])[0]
        };
        let publish = |host_addr: [u8; 4], port: u16| PublishKey {
            host_addr: u32::from_ne_bytes(host_addr),
            host_port: port.to_be(),
            proto: proto::UDP,
            _pad: 0,
        };
        let backend = |a: [u8; 4], port: u16| Backend {
            addr: u32::from_ne_bytes(a),
            port: port.to_be(),
            _pad: [0; 2],
        };
        let f = udp_to(b2, proto::UDP);
        assert!(f.pinned_udp(&publish([0; 4], 5353), &backend(b2, 53)));
        assert!(f.pinned_udp(&publish(host, 5353), &backend(b2, 53)));
        // Another host address, host port, backend or backend port: not this publish.
        assert!(!f.pinned_udp(&publish([10, 0, 1, 49], 5353), &backend(b2, 53)));
        assert!(!f.pinned_udp(&publish([0; 4], 5354), &backend(b2, 53)));
        assert!(!f.pinned_udp(&publish([0; 4], 5353), &backend(b3, 53)));
        assert!(!f.pinned_udp(&publish([0; 4], 5353), &backend(b2, 54)));
        // A flow to the new backend stays.
        assert!(!udp_to(b3, proto::UDP).pinned_udp(&publish([0; 4], 5353), &backend(b2, 53)));
        // A half flow still names its backend.
        let half = pair_flows([(
            key(b2, 53, client, 40001, proto::UDP),
            st(host, 5353, KIND_DNAT, DIR_REPLY, 0),
        )])[0];
        assert!(half.pinned_udp(&publish([0; 4], 5353), &backend(b2, 53)));
        // TCP is kept until it closes.
        let mut tcp_key = publish([0; 4], 5353);
        tcp_key.proto = proto::TCP;
        let tcp = udp_to(b2, proto::TCP);
        assert!(tcp.through_publish(&tcp_key));
        assert!(!tcp.pinned_udp(&tcp_key, &backend(b2, 53)));
        // Masqueraded flows never match a publish.
        let snat = pair_flows([(
            key(b2, 40001, client, 5353, proto::UDP),
            st(host, 5353, KIND_SNAT, DIR_ORIGINAL, 0),
        )])[0];
        assert!(!snat.through_publish(&publish([0; 4], 5353)));
    }

    /// A hairpin connection's two flows: netns3:40001 -> 10.0.1.48:5353 becomes ->
    /// netns2:53 (DNAT), and netns3:40001 -> netns2:53 becomes 172.16.0.100:61000 ->
    /// netns2:53 (SNAT).
    fn hairpin_pair(client_port: u16, backend: [u8; 4]) -> [Flow; 2] {
        let client = [172, 16, 0, 103];
        let host = [10, 0, 1, 48];
        let gateway = [172, 16, 0, 100];
        let dnat = pair_flows([
            (
                key(client, client_port, host, 5353, proto::UDP),
                st(backend, 53, KIND_DNAT, DIR_ORIGINAL, 0),
            ),
            (
                key(backend, 53, client, client_port, proto::UDP),
                st(host, 5353, KIND_DNAT, DIR_REPLY, 0),
            ),
        ])[0];
        let snat = pair_flows([
            (
                key(client, client_port, backend, 53, proto::UDP),
                st(gateway, 61000, KIND_SNAT, DIR_ORIGINAL, 0),
            ),
            (
                key(backend, 53, gateway, 61000, proto::UDP),
                st(client, client_port, KIND_SNAT, DIR_REPLY, 0),
            ),
        ])[0];
        [dnat, snat]
    }

    #[test]
    fn hairpin_snat_flows_are_chained_to_their_dnat_flow() {
        let b2 = [172, 16, 0, 102];
        let [dnat, snat] = hairpin_pair(40001, b2);
        let [other_dnat, other_snat] = hairpin_pair(40002, b2);
        assert!(snat.chained_to(&dnat));
        assert!(!snat.chained_to(&other_dnat), "another client port");
        assert!(
            !dnat.chained_to(&snat),
            "only a SNAT flow is chained to a DNAT flow"
        );
        assert!(!other_snat.chained_to(&dnat));
        // A half of the DNAT flow still names the translated tuple.
        let half = Flow {
            original: None,
            ..dnat
        };
        assert!(snat.chained_to(&half));
        // An ordinary masqueraded flow of the client is never chained.
        let masq = pair_flows([(
            key([172, 16, 0, 103], 40001, [10, 0, 1, 26], 53, proto::UDP),
            st([10, 0, 1, 48], 61001, KIND_SNAT, DIR_ORIGINAL, 0),
        )])[0];
        let all = [dnat, snat, other_dnat, other_snat, masq];
        assert_eq!(hairpin_partners(&[dnat], &all), vec![&snat]);
        assert_eq!(
            hairpin_partners(&[dnat, other_dnat], &all),
            vec![&snat, &other_snat]
        );
        assert!(hairpin_partners(&[masq], &all).is_empty());
    }

    #[test]
    fn filters() {
        let flows = pair_flows(dnat_pair());
        let f = flows[0];
        let yes = |filter: FlowFilter| assert!(f.matches(&filter), "{filter:?}");
        let no = |filter: FlowFilter| assert!(!f.matches(&filter), "{filter:?}");
        yes(FlowFilter::default());
        yes(FlowFilter {
            proto: Some(proto::TCP),
            kind: Some(KIND_DNAT),
            ..Default::default()
        });
        no(FlowFilter {
            proto: Some(proto::UDP),
            ..Default::default()
        });
        no(FlowFilter {
            kind: Some(KIND_SNAT),
            ..Default::default()
        });
        // The backend only appears in the translated tuple.
        yes(FlowFilter {
            addr: Some(Ipv4Addr::new(172, 16, 0, 102)),
            port: Some(80),
            ..Default::default()
        });
        yes(FlowFilter {
            port: Some(40000),
            ..Default::default()
        });
        no(FlowFilter {
            port: Some(8089),
            ..Default::default()
        });
        no(FlowFilter {
            addr: Some(Ipv4Addr::new(1, 2, 3, 4)),
            ..Default::default()
        });
    }
}
