//! The cases the datapath packet tests share: the seed's endpoints, running a case on
//! every program, and conntrack entries as a test expects them.

use std::net::{Ipv4Addr, SocketAddrV4};

use netfast_common::{CtEntry, CtTuple};

use crate::{
    harness::{
        BACKEND, Datapath, LAN_PEER, Prog, TCP_BACKEND_PORT, TCP_PUBLISHED, UPLINK_ADDR, Verdict,
        addr_be, port_be,
    },
    packet::ETH_LEN,
};

pub const PASS: Verdict = Verdict::Pass;
pub const DROP: Verdict = Verdict::Drop;

pub fn sock(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// The LAN client of the published-port cases.
pub fn client() -> SocketAddrV4 {
    sock(LAN_PEER, 40_000)
}

pub fn published_tcp() -> SocketAddrV4 {
    sock(UPLINK_ADDR, TCP_PUBLISHED)
}

pub fn backend_tcp() -> SocketAddrV4 {
    sock(BACKEND, TCP_BACKEND_PORT)
}

/// The far end of the masquerade cases.
pub fn lan_server() -> SocketAddrV4 {
    sock(LAN_PEER, 9000)
}

/// Runs `case` once per ingress program, each time on a freshly loaded datapath.
pub fn each_ingress(case: impl Fn(Prog)) {
    for prog in Prog::INGRESS {
        case(prog);
    }
}

/// Runs `case` on every program, ingress and egress.
pub fn each_program(case: impl Fn(Prog)) {
    for prog in [Prog::IngressTc, Prog::IngressXdp, Prog::EgressTc] {
        case(prog);
    }
}

/// A conntrack entry as the test expects it; timestamps are checked apart.
pub fn flow_state(
    nat: SocketAddrV4,
    kind: u8,
    direction: u8,
    tcp_flags: u8,
    packets: u64,
    bytes: u64,
) -> CtEntry {
    CtEntry {
        nat_addr: addr_be(*nat.ip()),
        nat_port: port_be(nat.port()),
        kind,
        direction,
        tcp_flags,
        packets,
        bytes,
        ..CtEntry::default()
    }
}

/// Asserts the entry at `key`, ignoring the timestamps but requiring that they are set.
/// An `expected` with no TCP sequence tracking (window, seq_end and ack all 0) leaves
/// those fields unchecked: `tcp_packets.rs` asserts them.
#[track_caller]
pub fn assert_flow(datapath: &Datapath, key: &CtTuple, expected: CtEntry) {
    let state = datapath.flow(key).unwrap_or_else(|| {
        panic!(
            "no CONNTRACK entry for {key:?}; have {:?}",
            datapath.conntrack()
        )
    });
    assert!(state.created_ns != 0, "created_ns unset in {state:?}");
    assert!(
        state.last_seen_ns >= state.created_ns,
        "last_seen_ns before created_ns in {state:?}"
    );
    let mut untimed = CtEntry {
        created_ns: 0,
        last_seen_ns: 0,
        ..state
    };
    if (expected.tcp_window, expected.tcp_seq_end, expected.tcp_ack) == (0, 0, 0) {
        (untimed.tcp_window, untimed.tcp_seq_end, untimed.tcp_ack) = (0, 0, 0);
    }
    assert_eq!(untimed, expected, "conntrack entry for {key:?}");
}

pub fn ip_len(frame: &[u8]) -> u64 {
    (frame.len() - ETH_LEN) as u64
}
