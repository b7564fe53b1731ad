//! Issue 8, sections 1 and 2, through BPF_PROG_TEST_RUN: the TCP state each flow
//! records, RST validation, tuple reuse and the assured/unassured split, with exact
//! output bytes (checksums computed from scratch) and exactly the counters that move.
//!
//! Every DNAT case runs its client's packets through both ingress programs, every
//! SNAT case its server's. Needs root and a BPF-capable kernel; without them every
//! test fails, saying so.

use std::net::{Ipv4Addr, SocketAddrV4};

use netfast_common::{
    Counter, CtEntry, CtTuple,
    names::{MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED},
    proto,
    tcp::TcpState,
};
use netfast_tests::{
    cases::{DROP, PASS, backend_tcp, client, each_ingress, lan_server, published_tcp, sock},
    harness::{
        BACKEND, Datapath, LAN_PEER, Prog, TCP_PUBLISHED, UDP_BACKEND_PORT, UDP_PUBLISHED,
        UPLINK_ADDR, flow_key,
    },
    packet::{
        Packet,
        tcp_flags::{ACK, FIN, PSH, RST, SYN},
    },
    tcp::{Dir, Table, TcpFlow, Tracked, find, table_sizes},
};

/// The client's initial sequence number: its numbers wrap past 2^32 on the way.
const C: u32 = 0xffff_fffe;
/// The server's initial sequence number.
const S: u32 = 0x0001_0000;
/// The raw windows each side advertises.
const CW: u16 = 64_240;
const SW: u16 = 65_160;

/// Another backend, for a publish that moved.
fn new_backend() -> SocketAddrV4 {
    sock(Ipv4Addr::new(172, 16, 0, 103), 8080)
}

/// A container port inside the SNAT range and outside the host's ephemeral ports:
/// the masquerade keeps it.
fn container() -> SocketAddrV4 {
    sock(BACKEND, 61_234)
}

fn masqueraded() -> SocketAddrV4 {
    sock(UPLINK_ADDR, 61_234)
}

fn dnat(prog: Prog) -> TcpFlow {
    TcpFlow::dnat(prog, client(), published_tcp(), backend_tcp())
}

fn snat(prog: Prog) -> TcpFlow {
    TcpFlow::snat(prog, container(), lan_server(), masqueraded())
}

/// Client and server sequence numbers `n` after the initial ones.
fn c(n: u32) -> u32 {
    C.wrapping_add(n)
}

fn s(n: u32) -> u32 {
    S.wrapping_add(n)
}

fn tracked(flags: u8, seq_end: u32, ack: u32, window: u16) -> Tracked {
    Tracked {
        flags,
        seq_end,
        ack,
        window,
    }
}

/// Asserts where the flow lives, its state and what each half recorded.
#[track_caller]
fn expect(
    datapath: &Datapath,
    flow: &TcpFlow,
    step: &str,
    (table, state): (Table, TcpState),
    original: Tracked,
    reply: Tracked,
) {
    let halves = flow.halves(datapath);
    assert_eq!(
        (
            halves.table,
            halves.state,
            Tracked::of(&halves.original),
            Tracked::of(&halves.reply)
        ),
        (table, state, original, reply),
        "after {step}: (map, state, original half, reply half)"
    );
}

/// The handshake: SYN, SYN-ACK, ACK. The flow is unassured until the original side
/// acknowledges the SYN-ACK, then both halves move to `CONNTRACK`.
fn handshake(datapath: &mut Datapath, flow: &TcpFlow) {
    let syn = flow.segment(Dir::Original, SYN, c(0), 0, CW);
    flow.pass(datapath, Dir::Original, &syn, &[(flow.new, 1)]);
    expect(
        datapath,
        flow,
        "SYN",
        (Table::Unassured, TcpState::SynSent),
        tracked(SYN, c(1), 0, CW),
        Tracked::NOTHING,
    );
    assert_eq!(table_sizes(datapath), (0, 2), "a new flow is unassured");

    let syn_ack = flow.segment(Dir::Reply, SYN | ACK, s(0), c(1), SW);
    flow.pass(datapath, Dir::Reply, &syn_ack, &[(flow.reply.hit, 1)]);
    expect(
        datapath,
        flow,
        "SYN-ACK",
        (Table::Unassured, TcpState::SynRecv),
        tracked(SYN, c(1), 0, CW),
        tracked(SYN | ACK, s(1), c(1), SW),
    );

    let ack = flow.segment(Dir::Original, ACK, c(1), s(1), CW);
    flow.pass(
        datapath,
        Dir::Original,
        &ack,
        &[(flow.original.hit, 1), (Counter::ConntrackAssured, 1)],
    );
    expect(
        datapath,
        flow,
        "the handshake's ACK",
        (Table::Assured, TcpState::Established),
        tracked(SYN | ACK, c(1), s(1), CW),
        tracked(SYN | ACK, s(1), c(1), SW),
    );
    assert_eq!(
        table_sizes(datapath),
        (2, 0),
        "an assured flow is in CONNTRACK only"
    );
}

/// The client sends "hi\n" after the handshake.
fn client_sends_hi(datapath: &mut Datapath, flow: &TcpFlow) {
    let hi = flow
        .segment(Dir::Original, PSH | ACK, c(1), s(1), CW)
        .payload(b"hi\n");
    flow.pass(datapath, Dir::Original, &hi, &[(flow.original.hit, 1)]);
    expect(
        datapath,
        flow,
        "the client's data",
        (Table::Assured, TcpState::Established),
        tracked(SYN | ACK | PSH, c(4), s(1), CW),
        tracked(SYN | ACK, s(1), c(1), SW),
    );
}

/// A handshake, data, the client's half-close, the server's late answer, the server's
/// FIN and the last ACK, asserting the map, the state and both halves' tracking after
/// every segment. Then `before_reuse` runs, and a new SYN on the TIME_WAIT tuple starts
/// `reopened`, a fresh flow.
fn lifecycle(
    datapath: &mut Datapath,
    flow: &TcpFlow,
    before_reuse: impl FnOnce(&mut Datapath),
    reopened: &TcpFlow,
) {
    handshake(datapath, flow);
    client_sends_hi(datapath, flow);
    let (o, r) = (Dir::Original, Dir::Reply);
    let (ohit, rhit) = ([(flow.original.hit, 1)], [(flow.reply.hit, 1)]);

    let fin = flow.segment(o, FIN | ACK, c(4), s(1), CW);
    flow.pass(datapath, o, &fin, &ohit);
    expect(
        datapath,
        flow,
        "the client's FIN",
        (Table::Assured, TcpState::FinWait),
        tracked(SYN | ACK | PSH | FIN, c(5), s(1), CW),
        tracked(SYN | ACK, s(1), c(1), SW),
    );

    let ack = flow.segment(r, ACK, s(1), c(5), SW);
    flow.pass(datapath, r, &ack, &rhit);
    expect(
        datapath,
        flow,
        "the server's ACK of the FIN",
        (Table::Assured, TcpState::CloseWait),
        tracked(SYN | ACK | PSH | FIN, c(5), s(1), CW),
        tracked(SYN | ACK, s(1), c(5), SW),
    );

    // Half-closed: the server still answers, and the client acknowledges.
    let answer = flow
        .segment(r, PSH | ACK, s(1), c(5), SW)
        .payload(b"answer\n");
    flow.pass(datapath, r, &answer, &rhit);
    let ack = flow.segment(o, ACK, c(5), s(8), CW);
    flow.pass(datapath, o, &ack, &ohit);
    expect(
        datapath,
        flow,
        "the server's answer after the half-close",
        (Table::Assured, TcpState::CloseWait),
        tracked(SYN | ACK | PSH | FIN, c(5), s(8), CW),
        tracked(SYN | ACK | PSH, s(8), c(5), SW),
    );

    let fin = flow.segment(r, FIN | ACK, s(8), c(5), SW);
    flow.pass(datapath, r, &fin, &rhit);
    expect(
        datapath,
        flow,
        "the server's FIN",
        (Table::Assured, TcpState::LastAck),
        tracked(SYN | ACK | PSH | FIN, c(5), s(8), CW),
        tracked(SYN | ACK | PSH | FIN, s(9), c(5), SW),
    );

    let last = flow.segment(o, ACK, c(5), s(9), CW);
    flow.pass(datapath, o, &last, &ohit);
    expect(
        datapath,
        flow,
        "the last ACK",
        (Table::Assured, TcpState::TimeWait),
        tracked(SYN | ACK | PSH | FIN, c(5), s(9), CW),
        tracked(SYN | ACK | PSH | FIN, s(9), c(5), SW),
    );

    before_reuse(datapath);
    reuse(datapath, flow, reopened, "TIME_WAIT");
}

/// A new SYN from the original side on a closed flow's tuple: the old entries go, and
/// `reopened` starts fresh from this SYN (a new publish lookup or port choice).
fn reuse(datapath: &mut Datapath, old: &TcpFlow, reopened: &TcpFlow, closed: &str) {
    let isn = 0x7000_0000;
    let syn = reopened.segment(Dir::Original, SYN, isn, 0, CW);
    reopened.pass(
        datapath,
        Dir::Original,
        &syn,
        &[(reopened.new, 1), (Counter::ConntrackReopened, 1)],
    );
    expect(
        datapath,
        reopened,
        &format!("a new SYN on the {closed} tuple"),
        (Table::Unassured, TcpState::SynSent),
        tracked(SYN, isn + 1, 0, CW),
        Tracked::NOTHING,
    );
    assert_eq!(
        table_sizes(datapath),
        (0, 2),
        "the closed flow's entries are gone, the new flow's two are unassured"
    );
    if old.reply_key() != reopened.reply_key() {
        assert!(
            find(datapath, &old.reply_key()).is_none(),
            "the old flow's reply half is gone"
        );
    }
}

/// Points the published TCP port at [`new_backend`], as `forward del` + `forward add`.
fn move_publish(datapath: &mut Datapath) {
    datapath.publish(
        proto::TCP,
        Ipv4Addr::UNSPECIFIED,
        TCP_PUBLISHED,
        new_backend(),
    );
}

// --- state transitions ------------------------------------------------------------

#[test]
fn dnat_flow_through_handshake_half_close_close_and_reuse() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        // The publish moves while the flow is in TIME_WAIT: the reused tuple gets the
        // new backend.
        let reopened = TcpFlow::dnat(prog, client(), published_tcp(), new_backend());
        lifecycle(&mut datapath, &dnat(prog), move_publish, &reopened);
    });
}

#[test]
fn snat_flow_through_handshake_half_close_close_and_reuse() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        // The container's port is free again once the old flow is gone: kept.
        lifecycle(&mut datapath, &snat(prog), |_| {}, &snat(prog));
    });
}

/// Retransmitted SYNs on a flow that is not closed (SYN_SENT, ESTABLISHED, FIN_WAIT)
/// belong to it: they keep the old backend even after the publish moved.
#[test]
fn a_syn_on_an_open_flow_keeps_its_backend() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let flow = dnat(prog);
        let syn = flow.segment(Dir::Original, SYN, c(0), 0, CW);
        flow.pass(&mut datapath, Dir::Original, &syn, &[(flow.new, 1)]);
        move_publish(&mut datapath);
        flow.pass(
            &mut datapath,
            Dir::Original,
            &syn,
            &[(flow.original.hit, 1)],
        );
        assert_eq!(flow.halves(&datapath).state, TcpState::SynSent);

        let syn_ack = flow.segment(Dir::Reply, SYN | ACK, s(0), c(1), SW);
        flow.pass(&mut datapath, Dir::Reply, &syn_ack, &[(flow.reply.hit, 1)]);
        let ack = flow.segment(Dir::Original, ACK, c(1), s(1), CW);
        flow.pass(
            &mut datapath,
            Dir::Original,
            &ack,
            &[(flow.original.hit, 1), (Counter::ConntrackAssured, 1)],
        );
        flow.pass(
            &mut datapath,
            Dir::Original,
            &syn,
            &[(flow.original.hit, 1)],
        );
        assert_eq!(flow.halves(&datapath).state, TcpState::Established);

        let fin = flow.segment(Dir::Original, FIN | ACK, c(1), s(1), CW);
        flow.pass(
            &mut datapath,
            Dir::Original,
            &fin,
            &[(flow.original.hit, 1)],
        );
        flow.pass(
            &mut datapath,
            Dir::Original,
            &syn,
            &[(flow.original.hit, 1)],
        );
        let halves = flow.halves(&datapath);
        assert_eq!(
            (halves.table, halves.state),
            (Table::Assured, TcpState::FinWait)
        );
    });
}

// --- RST validation ---------------------------------------------------------------

/// Both conntrack maps, sorted, for comparing before and after.
fn snapshot(datapath: &Datapath) -> Vec<(&'static str, CtTuple, CtEntry)> {
    let mut all: Vec<_> = [MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED]
        .into_iter()
        .flat_map(|name| {
            datapath
                .flow_entries(name)
                .into_iter()
                .map(move |(key, state)| (name, key, state))
        })
        .collect();
    all.sort_by_key(|(name, key, _)| (*name, key.src_addr, key.src_port, key.dst_port));
    all
}

/// Sends `rst` going `dir` and asserts it is dropped as it came, counted, and that
/// neither conntrack map changed in any byte (timestamps and statistics included).
#[track_caller]
fn assert_rst_dropped(datapath: &mut Datapath, flow: &TcpFlow, dir: Dir, rst: &Packet) {
    let before = snapshot(datapath);
    let bytes = rst.bytes();
    let run = datapath.run(flow.way(dir).prog, &bytes);
    run.assert_counts(DROP, &[(Counter::DropTcpRstOutOfWindow, 1)], &bytes);
    assert!(
        snapshot(datapath) == before,
        "an out-of-window RST must leave the flow untouched"
    );
}

/// After the handshake and "hi\n": blind RSTs either way, with sequence numbers far
/// from the window and just past its edges, are dropped and change nothing; the flow
/// goes on. Then an RST just inside the edge passes, translated, and closes the flow.
fn rst_window(datapath: &mut Datapath, flow: &TcpFlow) {
    handshake(datapath, flow);
    client_sends_hi(datapath, flow);
    let (o, r) = (Dir::Original, Dir::Reply);

    // The client's RST is checked against what the server acknowledged (c(1)) and the
    // server's window, up to what the client sent (c(4)): [c(1) - SW, c(4) + SW].
    for seq in [
        c(4) ^ 0x8000_0000,
        c(1).wrapping_sub(u32::from(SW) + 1),
        c(4).wrapping_add(u32::from(SW) + 1),
    ] {
        assert_rst_dropped(datapath, flow, o, &flow.segment(o, RST, seq, 0, CW));
    }
    // The server's RST against what the client acknowledged (s(1)) and the client's
    // window: [s(1) - CW, s(1) + CW].
    for seq in [
        s(1).wrapping_add(0x4000_0000),
        s(1).wrapping_sub(u32::from(CW) + 1),
        s(1).wrapping_add(u32::from(CW) + 1),
    ] {
        assert_rst_dropped(
            datapath,
            flow,
            r,
            &flow.segment(r, RST | ACK, seq, c(4), SW),
        );
    }
    let more = flow
        .segment(o, PSH | ACK, c(4), s(1), CW)
        .payload(b"still here");
    flow.pass(datapath, o, &more, &[(flow.original.hit, 1)]);
    let halves = flow.halves(datapath);
    assert_eq!(
        (halves.table, halves.state),
        (Table::Assured, TcpState::Established),
        "the blind RSTs changed nothing"
    );

    let rst = flow.segment(r, RST | ACK, s(1).wrapping_add(u32::from(CW)), c(14), SW);
    flow.pass(datapath, r, &rst, &[(flow.reply.hit, 1)]);
    let halves = flow.halves(datapath);
    assert_eq!(
        (halves.table, halves.state, halves.reply.tcp_flags & RST),
        (Table::Assured, TcpState::Close, RST),
        "an in-window RST closes the flow"
    );
}

#[test]
fn dnat_rsts_outside_the_window_are_dropped_inside_it_close() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let flow = dnat(prog);
        rst_window(&mut datapath, &flow);
        // A SYN on the CLOSE tuple reopens it, after a publish move to the new backend.
        move_publish(&mut datapath);
        let reopened = TcpFlow::dnat(prog, client(), published_tcp(), new_backend());
        reuse(&mut datapath, &flow, &reopened, "CLOSE");
    });
}

#[test]
fn snat_rsts_outside_the_window_are_dropped_inside_it_close() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let flow = snat(prog);
        rst_window(&mut datapath, &flow);
        reuse(&mut datapath, &flow, &flow, "CLOSE");
    });
}

/// An RST answering a bare SYN must acknowledge it (RFC 9293 3.10.7.3); one that does
/// not is dropped, and the flow waits for its SYN-ACK.
#[test]
fn an_rst_to_a_syn_must_acknowledge_it() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let flow = dnat(prog);
        let syn = flow.segment(Dir::Original, SYN, c(0), 0, CW);
        flow.pass(&mut datapath, Dir::Original, &syn, &[(flow.new, 1)]);
        for (flags, ack) in [(RST | ACK, c(2)), (RST | ACK, c(0)), (RST, c(1))] {
            let rst = flow.segment(Dir::Reply, flags, 0, ack, 0);
            assert_rst_dropped(&mut datapath, &flow, Dir::Reply, &rst);
        }
        assert_eq!(flow.halves(&datapath).state, TcpState::SynSent);
        let rst = flow.segment(Dir::Reply, RST | ACK, 0, c(1), 0);
        flow.pass(&mut datapath, Dir::Reply, &rst, &[(flow.reply.hit, 1)]);
        let halves = flow.halves(&datapath);
        assert_eq!(
            (halves.table, halves.state),
            (Table::Unassured, TcpState::Close),
            "a refused connection closes, and was never assured"
        );
    });
}

// --- assured and unassured flows (section 2) -------------------------------------

#[test]
fn udp_is_assured_by_its_first_reply() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let client = sock(LAN_PEER, 33_333);
        let published = sock(UPLINK_ADDR, UDP_PUBLISHED);
        let backend = sock(BACKEND, UDP_BACKEND_PORT);
        for _ in 0..2 {
            let query = Packet::udp(client, published).payload(b"query");
            let run = datapath.run(prog, &query.bytes());
            assert_eq!(run.verdict, PASS);
            assert_eq!(table_sizes(&datapath), (0, 2), "{prog:?}: unassured");
        }
        let answer = Packet::udp(backend, client).payload(b"answer");
        let run = datapath.run(Prog::EgressTc, &answer.bytes());
        run.assert_counts(
            PASS,
            &[(Counter::DnatReply, 1), (Counter::ConntrackAssured, 1)],
            &answer.clone().with_src(published).bytes(),
        );
        assert_eq!(table_sizes(&datapath), (2, 0), "{prog:?}: assured");
        let run = datapath.run(Prog::EgressTc, &answer.bytes());
        run.assert_counts(
            PASS,
            &[(Counter::DnatReply, 1)],
            &answer.with_src(published).bytes(),
        );
        assert!(find(&datapath, &flow_key(proto::UDP, client, published)).is_some());
    });
}

#[test]
fn icmp_echo_is_assured_by_its_first_reply() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        // An identifier inside the SNAT range is kept.
        let id = 62_000;
        let request = Packet::icmp_echo_request(BACKEND, LAN_PEER, id, 1).payload(b"ping");
        let run = datapath.run(Prog::EgressTc, &request.bytes());
        run.assert_counts(
            PASS,
            &[(Counter::SnatNew, 1)],
            &request.with_src_ip(UPLINK_ADDR).bytes(),
        );
        assert_eq!(table_sizes(&datapath), (0, 2), "{prog:?}: unassured");
        let reply = Packet::icmp_echo_reply(LAN_PEER, UPLINK_ADDR, id, 1).payload(b"ping");
        let run = datapath.run(prog, &reply.bytes());
        run.assert_counts(
            PASS,
            &[(Counter::SnatReply, 1), (Counter::ConntrackAssured, 1)],
            &reply.with_dst_ip(BACKEND).bytes(),
        );
        assert_eq!(table_sizes(&datapath), (2, 0), "{prog:?}: assured");
    });
}

/// Issue 8, section 2, in miniature: capacity 1024 (so 512 unassured entries), one
/// assured DNAT flow and one assured SNAT flow, then 10 x 1024 SYNs from as many
/// sources to the published port. Every SYN opens a flow, none of them can push an
/// assured one out: both flows keep their entries and translate their next packets.
#[test]
fn a_syn_flood_evicts_only_unassured_flows() {
    const CAPACITY: u32 = 1024;
    const SYNS: u32 = 10 * CAPACITY;
    each_ingress(|prog| {
        let mut datapath = Datapath::load_with_conntrack_capacity(CAPACITY);
        datapath.configure_seed();
        let flows = [dnat(prog), snat(prog)];
        for flow in &flows {
            handshake_then_hi(&mut datapath, flow);
        }
        let assured: Vec<CtTuple> = sorted_keys(&datapath, MAP_CONNTRACK);
        assert_eq!(assured.len(), 4);

        let before = datapath.counters();
        let mut rng: u32 = 0x2545_f491;
        for i in 0..SYNS {
            // xorshift32: a source port from 1024-65535 for each spoofed source.
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let port = 1024 + (rng % (65_536 - 1024)) as u16;
            let src = sock(Ipv4Addr::from(0xc612_0000 + i), port); // 198.18.0.0/15
            let syn = Packet::tcp(src, published_tcp(), SYN).bytes();
            let out = datapath
                .test_run(prog, &syn)
                .unwrap_or_else(|err| panic!("{prog:?}: SYN {i}: {err:?}"));
            assert_eq!(
                prog.decode(out.return_value),
                Some(PASS),
                "{prog:?}: SYN {i} of the flood"
            );
        }
        let after = datapath.counters();
        let moved: Vec<_> = Counter::ALL
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| b != a)
            .map(|(&counter, (b, a))| (counter, a - b))
            .collect();
        assert_eq!(
            moved,
            [(Counter::DnatNew, u64::from(SYNS))],
            "{prog:?}: every SYN opened a flow, and nothing else happened"
        );

        assert_eq!(
            sorted_keys(&datapath, MAP_CONNTRACK),
            assured,
            "{prog:?}: CONNTRACK holds exactly the two assured flows"
        );
        let unassured = datapath.flow_entries(MAP_CONNTRACK_UNASSURED).len();
        assert!(
            unassured > 0 && unassured <= (CAPACITY / 2) as usize,
            "{prog:?}: the flood lives in CONNTRACK_UNASSURED, bounded: {unassured}"
        );
        for flow in &flows {
            let data = flow
                .segment(Dir::Original, PSH | ACK, c(4), s(1), CW)
                .payload(b"after the flood");
            flow.pass(
                &mut datapath,
                Dir::Original,
                &data,
                &[(flow.original.hit, 1)],
            );
            let data = flow
                .segment(Dir::Reply, PSH | ACK, s(1), c(19), SW)
                .payload(b"still translated");
            flow.pass(&mut datapath, Dir::Reply, &data, &[(flow.reply.hit, 1)]);
            let halves = flow.halves(&datapath);
            assert_eq!(
                (halves.table, halves.state),
                (Table::Assured, TcpState::Established),
                "{prog:?}"
            );
        }
    });
}

/// The handshake and "hi\n", on a datapath that may hold other flows.
fn handshake_then_hi(datapath: &mut Datapath, flow: &TcpFlow) {
    let before = table_sizes(datapath);
    let syn = flow.segment(Dir::Original, SYN, c(0), 0, CW);
    flow.pass(datapath, Dir::Original, &syn, &[(flow.new, 1)]);
    let syn_ack = flow.segment(Dir::Reply, SYN | ACK, s(0), c(1), SW);
    flow.pass(datapath, Dir::Reply, &syn_ack, &[(flow.reply.hit, 1)]);
    let ack = flow.segment(Dir::Original, ACK, c(1), s(1), CW);
    flow.pass(
        datapath,
        Dir::Original,
        &ack,
        &[(flow.original.hit, 1), (Counter::ConntrackAssured, 1)],
    );
    client_sends_hi(datapath, flow);
    assert_eq!(table_sizes(datapath), (before.0 + 2, before.1));
}

fn sorted_keys(datapath: &Datapath, map: &str) -> Vec<CtTuple> {
    let mut keys: Vec<CtTuple> = datapath
        .flow_entries(map)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    keys.sort_by_key(|k| (k.src_addr, k.dst_addr, k.src_port, k.dst_port));
    keys
}
