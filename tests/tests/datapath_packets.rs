//! The datapath on crafted packets, through BPF_PROG_TEST_RUN: exact output bytes
//! (every checksum of the expected packet computed from scratch), the verdict, the one
//! decision counter that moved, and the conntrack entries a flow leaves behind.
//!
//! Needs root and a BPF-capable kernel; without them every test fails, saying so.
//! Every ingress case runs on both `uplink_ingress_tc` and `uplink_ingress_xdp`.

use std::net::{Ipv4Addr, SocketAddrV4};

use netfast_common::{
    Counter, CtTuple, DatapathConfig,
    ct::{DIR_ORIGINAL, DIR_REPLY, KIND_DNAT, KIND_SNAT},
    proto,
};
use netfast_tests::{
    cases::{
        DROP, PASS, assert_flow, backend_tcp, client, each_ingress, each_program, flow_state,
        ip_len, lan_server, published_tcp, sock,
    },
    harness::{
        BACKEND, Datapath, LAN_PEER, Prog, SNAT_PORT_MAX, SNAT_PORT_MIN, UDP_BACKEND_PORT,
        UDP_PUBLISHED, UPLINK_ADDR, addr_be, flow_key, port_be, seed_config,
    },
    packet::{
        ETH_LEN, ICMP_TIMESTAMP, IPV4_LEN, PROTO_GRE, Packet, arp_request, ipv6_udp,
        tcp_flags::{ACK, PSH, SYN},
    },
};

// --- loading ---------------------------------------------------------------------

#[test]
fn all_three_programs_load() {
    let datapath = Datapath::load();
    assert!(datapath.conntrack().is_empty());
    assert!(datapath.counters().iter().all(|&n| n == 0));
}

// --- DNAT: published ports -------------------------------------------------------

#[test]
fn dnat_tcp_syn_to_published_port() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let syn = Packet::tcp(client(), published_tcp(), SYN);
        let run = datapath.run(prog, &syn.bytes());
        let expected = syn.clone().with_dst(backend_tcp()).bytes();
        run.assert(PASS, Counter::DnatNew, &expected);

        assert_eq!(
            datapath.conntrack().len(),
            2,
            "{prog:?}: one flow is two entries"
        );
        assert_flow(
            &datapath,
            &flow_key(proto::TCP, client(), published_tcp()),
            flow_state(
                backend_tcp(),
                KIND_DNAT,
                DIR_ORIGINAL,
                SYN,
                1,
                ip_len(&expected),
            ),
        );
        assert_flow(
            &datapath,
            &flow_key(proto::TCP, backend_tcp(), client()),
            flow_state(published_tcp(), KIND_DNAT, DIR_REPLY, 0, 0, 0),
        );
    });
}

#[test]
fn reverse_dnat_of_the_backends_syn_ack() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let syn = Packet::tcp(client(), published_tcp(), SYN);
        datapath
            .run(prog, &syn.bytes())
            .assert_counted(Counter::DnatNew);

        let syn_ack = Packet::tcp(backend_tcp(), client(), SYN | ACK);
        let run = datapath.run(Prog::EgressTc, &syn_ack.bytes());
        let expected = syn_ack.with_src(published_tcp()).bytes();
        run.assert(PASS, Counter::DnatReply, &expected);
        assert_flow(
            &datapath,
            &flow_key(proto::TCP, backend_tcp(), client()),
            flow_state(
                published_tcp(),
                KIND_DNAT,
                DIR_REPLY,
                SYN | ACK,
                1,
                ip_len(&expected),
            ),
        );
    });
}

#[test]
fn established_dnat_hits_conntrack() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let syn = Packet::tcp(client(), published_tcp(), SYN);
        let first = datapath.run(prog, &syn.bytes());
        first.assert_counted(Counter::DnatNew);

        let data =
            Packet::tcp(client(), published_tcp(), ACK | PSH).payload(b"GET / HTTP/1.0\r\n\r\n");
        let run = datapath.run(prog, &data.bytes());
        let expected = data.with_dst(backend_tcp()).bytes();
        run.assert(PASS, Counter::DnatEstablished, &expected);
        assert_eq!(datapath.conntrack().len(), 2, "{prog:?}: no new entries");
        assert_flow(
            &datapath,
            &flow_key(proto::TCP, client(), published_tcp()),
            flow_state(
                backend_tcp(),
                KIND_DNAT,
                DIR_ORIGINAL,
                SYN | ACK | PSH,
                2,
                ip_len(&first.out) + ip_len(&expected),
            ),
        );
    });
}

/// The LRU evicts single entries: with the reply half gone, the client's next packet
/// rebuilds it, so the backend's answer is still translated back (not masqueraded).
#[test]
fn an_evicted_reply_half_is_rebuilt_from_the_original() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let syn = Packet::tcp(client(), published_tcp(), SYN);
        datapath
            .run(prog, &syn.bytes())
            .assert_counted(Counter::DnatNew);
        let reply_key = flow_key(proto::TCP, backend_tcp(), client());
        let before = datapath.flow(&reply_key).expect("the reply half exists");
        datapath.evict(&reply_key);

        let ack = Packet::tcp(client(), published_tcp(), ACK);
        let run = datapath.run(prog, &ack.bytes());
        assert_eq!(
            run.counted,
            [
                (Counter::DnatEstablished, 1),
                (Counter::ConntrackHalfRestored, 1)
            ],
            "{prog:?}"
        );
        assert_eq!(run.out, ack.with_dst(backend_tcp()).bytes(), "{prog:?}");
        let restored = datapath.flow(&reply_key).expect("the reply half is back");
        assert_eq!(
            (
                restored.nat_addr,
                restored.nat_port,
                restored.kind,
                restored.direction
            ),
            (
                before.nat_addr,
                before.nat_port,
                before.kind,
                before.direction
            ),
            "{prog:?}"
        );

        let syn_ack = Packet::tcp(backend_tcp(), client(), SYN | ACK);
        datapath.run(Prog::EgressTc, &syn_ack.bytes()).assert(
            PASS,
            Counter::DnatReply,
            &syn_ack.with_src(published_tcp()).bytes(),
        );
    });
}

/// And the other way: a masqueraded flow whose original half went keeps its port.
#[test]
fn an_evicted_original_half_is_rebuilt_from_the_reply() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let container = sock(BACKEND, 61_234);
        let masqueraded = sock(UPLINK_ADDR, 61_234);
        let syn = Packet::tcp(container, lan_server(), SYN);
        datapath
            .run(Prog::EgressTc, &syn.bytes())
            .assert_counted(Counter::SnatNew);
        datapath.evict(&flow_key(proto::TCP, container, lan_server()));

        let syn_ack = Packet::tcp(lan_server(), masqueraded, SYN | ACK);
        let run = datapath.run(prog, &syn_ack.bytes());
        assert_eq!(
            run.counted,
            [(Counter::SnatReply, 1), (Counter::ConntrackHalfRestored, 1)],
            "{prog:?}"
        );
        assert_eq!(run.out, syn_ack.with_dst(container).bytes(), "{prog:?}");

        // The handshake completes: the flow moves to CONNTRACK.
        let ack = Packet::tcp(container, lan_server(), ACK);
        datapath.run(Prog::EgressTc, &ack.bytes()).assert_counts(
            PASS,
            &[
                (Counter::SnatEstablished, 1),
                (Counter::ConntrackAssured, 1),
            ],
            &ack.with_src(masqueraded).bytes(),
        );
    });
}

#[test]
fn dnat_udp_and_its_reply() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let client = sock(LAN_PEER, 33_333);
        let published = sock(UPLINK_ADDR, UDP_PUBLISHED);
        let backend = sock(BACKEND, UDP_BACKEND_PORT);

        let query = Packet::udp(client, published).payload(b"a dns query, odd length");
        let run = datapath.run(prog, &query.bytes());
        run.assert(PASS, Counter::DnatNew, &query.with_dst(backend).bytes());
        assert_flow(
            &datapath,
            &flow_key(proto::UDP, backend, client),
            flow_state(published, KIND_DNAT, DIR_REPLY, 0, 0, 0),
        );

        // The first reply makes the flow assured.
        let answer = Packet::udp(backend, client).payload(b"the answer");
        let run = datapath.run(Prog::EgressTc, &answer.bytes());
        run.assert_counts(
            PASS,
            &[(Counter::DnatReply, 1), (Counter::ConntrackAssured, 1)],
            &answer.with_src(published).bytes(),
        );
    });
}

#[test]
fn dnat_udp_with_checksum_zero_keeps_it_zero() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let client = sock(LAN_PEER, 33_333);
        let published = sock(UPLINK_ADDR, UDP_PUBLISHED);
        let backend = sock(BACKEND, UDP_BACKEND_PORT);

        let query = Packet::udp(client, published)
            .zero_udp_checksum()
            .payload(b"no checksum");
        let run = datapath.run(prog, &query.bytes());
        let expected = query.with_dst(backend).bytes();
        run.assert(PASS, Counter::DnatNew, &expected);
        let udp_check = ETH_LEN + IPV4_LEN + 6;
        assert_eq!(
            &run.out[udp_check..udp_check + 2],
            &[0, 0],
            "{prog:?}: UDP checksum stays 0"
        );

        let answer = Packet::udp(backend, client)
            .zero_udp_checksum()
            .payload(b"none here either");
        let run = datapath.run(Prog::EgressTc, &answer.bytes());
        run.assert_counts(
            PASS,
            &[(Counter::DnatReply, 1), (Counter::ConntrackAssured, 1)],
            &answer.with_src(published).bytes(),
        );
    });
}

// DNAT to an exact host address moved to datapath_exposure.rs: an exact publish
// answers only while its address is the host's, which the kernel's routing table of a
// namespace of the test's own says there.

#[test]
fn dnat_with_ip_options() {
    // NOP, Router Alert (4 bytes), End of Options, padding: IHL 7.
    let options = [0x01, 0x94, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00];
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let data = Packet::tcp(client(), published_tcp(), SYN)
            .options(&options)
            .payload(b"options shift L4 by 8");
        let bytes = data.bytes();
        assert_eq!(bytes[ETH_LEN], 0x47, "the packet carries options");
        let run = datapath.run(prog, &bytes);
        let expected = data.with_dst(backend_tcp()).bytes();
        run.assert(PASS, Counter::DnatNew, &expected);
        assert_eq!(
            &run.out[ETH_LEN + IPV4_LEN..ETH_LEN + IPV4_LEN + 8],
            &options,
            "options kept"
        );
        assert_flow(
            &datapath,
            &flow_key(proto::TCP, client(), published_tcp()),
            flow_state(
                backend_tcp(),
                KIND_DNAT,
                DIR_ORIGINAL,
                SYN,
                1,
                ip_len(&expected),
            ),
        );
    });
}

// --- SNAT: masquerade ------------------------------------------------------------

#[test]
fn snat_tcp_keeps_a_source_port_inside_the_range() {
    let mut datapath = Datapath::configured();
    let container = sock(BACKEND, 61_234);
    let masqueraded = sock(UPLINK_ADDR, 61_234);
    let syn = Packet::tcp(container, lan_server(), SYN);
    let run = datapath.run(Prog::EgressTc, &syn.bytes());
    let expected = syn.with_src(masqueraded).bytes();
    run.assert(PASS, Counter::SnatNew, &expected);

    assert_eq!(datapath.conntrack().len(), 2);
    assert_flow(
        &datapath,
        &flow_key(proto::TCP, container, lan_server()),
        flow_state(
            masqueraded,
            KIND_SNAT,
            DIR_ORIGINAL,
            SYN,
            1,
            ip_len(&expected),
        ),
    );
    assert_flow(
        &datapath,
        &flow_key(proto::TCP, lan_server(), masqueraded),
        flow_state(container, KIND_SNAT, DIR_REPLY, 0, 0, 0),
    );
}

#[test]
fn without_masquerade_the_subnet_leaves_untranslated() {
    let mut datapath = Datapath::configured();
    datapath.write_config(&DatapathConfig {
        masquerade: 0,
        ..seed_config()
    });
    let syn = Packet::tcp(sock(BACKEND, 61_234), lan_server(), SYN).bytes();
    datapath
        .run(Prog::EgressTc, &syn)
        .assert(PASS, Counter::PassNoMatch, &syn);
    assert!(datapath.conntrack().is_empty());
}

/// SNAT of a container port outside [61000, 65535]; returns the datapath, the
/// container's address and the chosen masquerade address.
fn snat_out_of_range_syn() -> (Datapath, SocketAddrV4, SocketAddrV4) {
    let mut datapath = Datapath::configured();
    let container = sock(BACKEND, 40_000);
    let syn = Packet::tcp(container, lan_server(), SYN).payload(b"syn with data");
    let run = datapath.run(Prog::EgressTc, &syn.bytes());

    let original = flow_key(proto::TCP, container, lan_server());
    let state = datapath
        .flow(&original)
        .unwrap_or_else(|| panic!("no SNAT entry for {original:?}: {:?}", datapath.conntrack()));
    let port = u16::from_be(state.nat_port);
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&port),
        "SNAT port {port} outside [{SNAT_PORT_MIN}, {SNAT_PORT_MAX}]"
    );
    let masqueraded = sock(UPLINK_ADDR, port);
    let expected = syn.with_src(masqueraded).bytes();
    run.assert(PASS, Counter::SnatNew, &expected);
    assert_flow(
        &datapath,
        &original,
        flow_state(
            masqueraded,
            KIND_SNAT,
            DIR_ORIGINAL,
            SYN,
            1,
            ip_len(&expected),
        ),
    );
    assert_flow(
        &datapath,
        &flow_key(proto::TCP, lan_server(), masqueraded),
        flow_state(container, KIND_SNAT, DIR_REPLY, 0, 0, 0),
    );
    (datapath, container, masqueraded)
}

#[test]
fn snat_tcp_picks_a_port_from_the_range() {
    snat_out_of_range_syn();
}

#[test]
fn snat_established_keeps_the_chosen_port() {
    let (mut datapath, container, masqueraded) = snat_out_of_range_syn();
    let ack = Packet::tcp(container, lan_server(), ACK).payload(b"more");
    let run = datapath.run(Prog::EgressTc, &ack.bytes());
    run.assert(
        PASS,
        Counter::SnatEstablished,
        &ack.with_src(masqueraded).bytes(),
    );
    assert_eq!(datapath.conntrack().len(), 2);
}

#[test]
fn reverse_snat_of_the_reply() {
    each_ingress(|prog| {
        let (mut datapath, container, masqueraded) = snat_out_of_range_syn();
        let syn_ack = Packet::tcp(lan_server(), masqueraded, SYN | ACK).payload(b"reply");
        let run = datapath.run(prog, &syn_ack.bytes());
        let expected = syn_ack.with_dst(container).bytes();
        run.assert(PASS, Counter::SnatReply, &expected);
        assert_flow(
            &datapath,
            &flow_key(proto::TCP, lan_server(), masqueraded),
            flow_state(
                container,
                KIND_SNAT,
                DIR_REPLY,
                SYN | ACK,
                1,
                ip_len(&expected),
            ),
        );
    });
}

#[test]
fn snat_udp_with_checksum_zero_keeps_it_zero() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let container = sock(BACKEND, 5000);
        let dns = sock(LAN_PEER, 53);
        let query = Packet::udp(container, dns)
            .zero_udp_checksum()
            .payload(b"q");
        let run = datapath.run(Prog::EgressTc, &query.bytes());
        let state = datapath
            .flow(&flow_key(proto::UDP, container, dns))
            .expect("a SNAT entry for the UDP flow");
        let masqueraded = sock(UPLINK_ADDR, u16::from_be(state.nat_port));
        run.assert(PASS, Counter::SnatNew, &query.with_src(masqueraded).bytes());

        let answer = Packet::udp(dns, masqueraded)
            .zero_udp_checksum()
            .payload(b"answer");
        let run = datapath.run(prog, &answer.bytes());
        run.assert_counts(
            PASS,
            &[(Counter::SnatReply, 1), (Counter::ConntrackAssured, 1)],
            &answer.with_dst(container).bytes(),
        );
    });
}

#[test]
fn snat_with_ip_options() {
    let options = [0x94, 0x04, 0x00, 0x00];
    let mut datapath = Datapath::configured();
    let container = sock(BACKEND, 61_500);
    let syn = Packet::udp(container, lan_server())
        .options(&options)
        .payload(b"x");
    let run = datapath.run(Prog::EgressTc, &syn.bytes());
    run.assert(
        PASS,
        Counter::SnatNew,
        &syn.with_src(sock(UPLINK_ADDR, 61_500)).bytes(),
    );
}

// --- ICMP echo -------------------------------------------------------------------

#[test]
fn icmp_echo_request_snat_and_reply() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let id = 0x1234; // outside the range: the datapath picks one
        let request =
            Packet::icmp_echo_request(BACKEND, LAN_PEER, id, 1).payload(b"ping payload 0123");
        let run = datapath.run(Prog::EgressTc, &request.bytes());

        let original = CtTuple {
            src_addr: addr_be(BACKEND),
            dst_addr: addr_be(LAN_PEER),
            src_port: port_be(id),
            dst_port: 0,
            proto: proto::ICMP,
            _pad: [0; 3],
        };
        let state = datapath
            .flow(&original)
            .unwrap_or_else(|| panic!("no SNAT entry for the echo: {:?}", datapath.conntrack()));
        let nat_id = u16::from_be(state.nat_port);
        assert!(
            (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&nat_id),
            "ICMP id {nat_id} out of range"
        );
        let expected = request
            .clone()
            .with_src_ip(UPLINK_ADDR)
            .with_icmp_id(nat_id)
            .bytes();
        run.assert(PASS, Counter::SnatNew, &expected);
        assert_flow(
            &datapath,
            &original,
            flow_state(
                sock(UPLINK_ADDR, nat_id),
                KIND_SNAT,
                DIR_ORIGINAL,
                0,
                1,
                ip_len(&expected),
            ),
        );
        // The reply's key: the id as destination port, source port 0.
        let reply = CtTuple {
            src_addr: addr_be(LAN_PEER),
            dst_addr: addr_be(UPLINK_ADDR),
            src_port: 0,
            dst_port: port_be(nat_id),
            proto: proto::ICMP,
            _pad: [0; 3],
        };
        assert_flow(
            &datapath,
            &reply,
            flow_state(sock(BACKEND, id), KIND_SNAT, DIR_REPLY, 0, 0, 0),
        );

        let echo_reply =
            Packet::icmp_echo_reply(LAN_PEER, UPLINK_ADDR, nat_id, 1).payload(b"ping payload 0123");
        let run = datapath.run(prog, &echo_reply.bytes());
        let expected = echo_reply.with_dst_ip(BACKEND).with_icmp_id(id).bytes();
        run.assert_counts(
            PASS,
            &[(Counter::SnatReply, 1), (Counter::ConntrackAssured, 1)],
            &expected,
        );
    });
}

#[test]
fn icmp_echo_id_inside_the_range_is_kept() {
    let mut datapath = Datapath::configured();
    let request = Packet::icmp_echo_request(BACKEND, LAN_PEER, 62_000, 7);
    let run = datapath.run(Prog::EgressTc, &request.bytes());
    run.assert(
        PASS,
        Counter::SnatNew,
        &request.with_src_ip(UPLINK_ADDR).bytes(),
    );
}

#[test]
fn icmp_echo_to_the_uplink_is_a_miss() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let bytes = Packet::icmp_echo_request(LAN_PEER, UPLINK_ADDR, 99, 1).bytes();
        datapath
            .run(prog, &bytes)
            .assert(PASS, Counter::PassNoMatch, &bytes);
        assert!(datapath.conntrack().is_empty());
    });
}

/// ICMP that is neither echo nor an error (here a timestamp request) has no flow.
#[test]
fn icmp_other_than_echo_and_errors() {
    let timestamp =
        |src| Packet::icmp(src, LAN_PEER, ICMP_TIMESTAMP, 0, [0, 7, 0, 1]).payload(&[0; 12]);
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let bytes = timestamp(LAN_PEER).with_dst_ip(UPLINK_ADDR).bytes();
        datapath
            .run(prog, &bytes)
            .assert(PASS, Counter::PassIcmpOther, &bytes);
    });
    let mut datapath = Datapath::configured();
    let bytes = timestamp(UPLINK_ADDR).bytes();
    datapath
        .run(Prog::EgressTc, &bytes)
        .assert(PASS, Counter::PassIcmpOther, &bytes);
    let bytes = timestamp(BACKEND).bytes();
    datapath.run(Prog::EgressTc, &bytes).assert(
        DROP,
        Counter::DropUntranslatableFromSubnet,
        &bytes,
    );
}

// --- misses and refusals ---------------------------------------------------------

#[test]
fn a_miss_passes_byte_identical() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let bytes = Packet::tcp(client(), sock(UPLINK_ADDR, 22), SYN).bytes();
        datapath
            .run(prog, &bytes)
            .assert(PASS, Counter::PassNoMatch, &bytes);
        assert!(datapath.conntrack().is_empty());
    });
    // The host's own traffic out of the uplink.
    let mut datapath = Datapath::configured();
    let bytes = Packet::tcp(sock(UPLINK_ADDR, 50_000), lan_server(), SYN).bytes();
    datapath
        .run(Prog::EgressTc, &bytes)
        .assert(PASS, Counter::PassNoMatch, &bytes);
    assert!(datapath.conntrack().is_empty());
}

#[test]
fn truncated_tcp_header_is_dropped() {
    each_program(|prog| {
        let mut datapath = Datapath::configured();
        let (src, dst) = match prog {
            Prog::EgressTc => (sock(BACKEND, 61_234), lan_server()),
            _ => (client(), published_tcp()),
        };
        let mut bytes = Packet::tcp(src, dst, SYN).bytes();
        bytes.truncate(ETH_LEN + IPV4_LEN + 10);
        datapath
            .run(prog, &bytes)
            .assert(DROP, Counter::DropTruncated, &bytes);
        assert!(datapath.conntrack().is_empty());
    });
}

/// XDP only: the kernel will not build an skb for BPF_PROG_TEST_RUN from an IPv4
/// frame shorter than an IPv4 header (EINVAL), so the tc programs cannot be fed one.
#[test]
fn truncated_ipv4_header_is_dropped() {
    let mut datapath = Datapath::configured();
    let mut bytes = Packet::udp(client(), sock(UPLINK_ADDR, UDP_PUBLISHED)).bytes();
    bytes.truncate(ETH_LEN + 12);
    datapath
        .run(Prog::IngressXdp, &bytes)
        .assert(DROP, Counter::DropTruncated, &bytes);
}

#[test]
fn ihl_beyond_the_packet_is_dropped() {
    each_program(|prog| {
        let mut datapath = Datapath::configured();
        // IHL 15 claims 40 bytes of options; the frame ends 20 bytes after the header.
        let mut bytes = Packet::udp(client(), sock(UPLINK_ADDR, UDP_PUBLISHED))
            .payload(&[0; 12])
            .bytes();
        bytes[ETH_LEN] = 0x4f;
        datapath
            .run(prog, &bytes)
            .assert(DROP, Counter::DropTruncated, &bytes);
        assert!(datapath.conntrack().is_empty());
    });
}

#[test]
fn ihl_below_five_is_dropped() {
    each_program(|prog| {
        let mut datapath = Datapath::configured();
        let mut bytes = Packet::udp(client(), sock(UPLINK_ADDR, UDP_PUBLISHED))
            .payload(&[0; 12])
            .bytes();
        bytes[ETH_LEN] = 0x44;
        datapath
            .run(prog, &bytes)
            .assert(DROP, Counter::DropTruncated, &bytes);
    });
}

#[test]
fn arp_passes_untouched() {
    each_program(|prog| {
        let mut datapath = Datapath::configured();
        let bytes = arp_request(LAN_PEER, UPLINK_ADDR);
        datapath
            .run(prog, &bytes)
            .assert(PASS, Counter::PassNotIpv4, &bytes);
    });
}

#[test]
fn ipv6_passes_untouched() {
    let a = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1a];
    let b = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x30];
    each_program(|prog| {
        let mut datapath = Datapath::configured();
        let bytes = ipv6_udp(a, b, 40_000, UDP_PUBLISHED, b"v6");
        datapath
            .run(prog, &bytes)
            .assert(PASS, Counter::PassNotIpv4, &bytes);
    });
}

#[test]
fn other_protocols() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let bytes = Packet::other(LAN_PEER, UPLINK_ADDR, PROTO_GRE)
            .payload(&[0, 0, 0x08, 0x00])
            .bytes();
        datapath
            .run(prog, &bytes)
            .assert(PASS, Counter::PassOtherProtocol, &bytes);
    });
    let mut datapath = Datapath::configured();
    let from_host = Packet::other(UPLINK_ADDR, LAN_PEER, PROTO_GRE)
        .payload(&[0, 0, 0x08, 0x00])
        .bytes();
    datapath
        .run(Prog::EgressTc, &from_host)
        .assert(PASS, Counter::PassOtherProtocol, &from_host);
    let from_subnet = Packet::other(BACKEND, LAN_PEER, PROTO_GRE)
        .payload(&[0, 0, 0x08, 0x00])
        .bytes();
    datapath.run(Prog::EgressTc, &from_subnet).assert(
        DROP,
        Counter::DropUntranslatableFromSubnet,
        &from_subnet,
    );
}

#[test]
fn without_config_everything_passes() {
    each_program(|prog| {
        let mut datapath = Datapath::load();
        let (src, dst) = match prog {
            Prog::EgressTc => (sock(BACKEND, 40_000), lan_server()),
            _ => (client(), published_tcp()),
        };
        let bytes = Packet::tcp(src, dst, SYN).bytes();
        datapath
            .run(prog, &bytes)
            .assert(PASS, Counter::PassNotConfigured, &bytes);
        // Even what would be dropped once configured.
        let mut truncated = bytes.clone();
        truncated.truncate(ETH_LEN + IPV4_LEN + 4);
        datapath
            .run(prog, &truncated)
            .assert(PASS, Counter::PassNotConfigured, &truncated);
        assert!(datapath.conntrack().is_empty());
    });
}

#[test]
fn config_with_enabled_zero_passes() {
    each_program(|prog| {
        let mut datapath = Datapath::configured();
        datapath.write_config(&DatapathConfig {
            enabled: 0,
            ..seed_config()
        });
        let bytes = Packet::tcp(client(), published_tcp(), SYN).bytes();
        datapath
            .run(prog, &bytes)
            .assert(PASS, Counter::PassNotConfigured, &bytes);
        assert!(datapath.conntrack().is_empty());
    });
}

// --- checksum edge cases ---------------------------------------------------------

/// Picks the first two payload bytes so that the checksum of `translated`, computed
/// from scratch, comes out 0 (sent as 0xffff for UDP). Returns (before, after).
fn payload_for_zero_checksum(
    before: Packet,
    translated: Packet,
    check_at: usize,
) -> (Packet, Packet) {
    let probe = translated.clone().payload(&[0, 0, 0x5a]).bytes();
    let check = [probe[check_at], probe[check_at + 1]];
    let payload = [check[0], check[1], 0x5a];
    (before.payload(&payload), translated.payload(&payload))
}

#[test]
fn tcp_checksum_that_becomes_zero() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let syn = Packet::tcp(client(), published_tcp(), SYN);
        let check_at = ETH_LEN + IPV4_LEN + 16;
        let (before, after) =
            payload_for_zero_checksum(syn.clone(), syn.with_dst(backend_tcp()), check_at);
        let expected = after.bytes();
        assert_eq!(
            &expected[check_at..check_at + 2],
            &[0, 0],
            "the case is set up right"
        );
        datapath
            .run(prog, &before.bytes())
            .assert(PASS, Counter::DnatNew, &expected);
    });
}

#[test]
fn udp_checksum_that_becomes_zero_is_sent_as_ffff() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let query = Packet::udp(client(), sock(UPLINK_ADDR, UDP_PUBLISHED));
        let check_at = ETH_LEN + IPV4_LEN + 6;
        let translated = query.clone().with_dst(sock(BACKEND, UDP_BACKEND_PORT));
        let (before, after) = payload_for_zero_checksum(query, translated, check_at);
        let expected = after.bytes();
        assert_eq!(
            &expected[check_at..check_at + 2],
            &[0xff, 0xff],
            "the case is set up right"
        );
        datapath
            .run(prog, &before.bytes())
            .assert(PASS, Counter::DnatNew, &expected);
    });
}

#[test]
fn udp_checksum_ffff_before_translation() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let query = Packet::udp(client(), sock(UPLINK_ADDR, UDP_PUBLISHED));
        let check_at = ETH_LEN + IPV4_LEN + 6;
        // Here the untranslated packet is the one whose computed checksum is 0.
        let (before, _) = payload_for_zero_checksum(query.clone(), query, check_at);
        let bytes = before.bytes();
        assert_eq!(
            &bytes[check_at..check_at + 2],
            &[0xff, 0xff],
            "the case is set up right"
        );
        let expected = before.with_dst(sock(BACKEND, UDP_BACKEND_PORT)).bytes();
        datapath
            .run(prog, &bytes)
            .assert(PASS, Counter::DnatNew, &expected);
    });
}

// --- SNAT port allocation --------------------------------------------------------

#[test]
fn snat_port_collision_is_retried() {
    let mut datapath = Datapath::configured();
    let first = sock(BACKEND, 61_234);
    let second = sock(Ipv4Addr::new(172, 16, 0, 103), 61_234);
    let syn = Packet::tcp(first, lan_server(), SYN);
    datapath.run(Prog::EgressTc, &syn.bytes()).assert(
        PASS,
        Counter::SnatNew,
        &syn.with_src(sock(UPLINK_ADDR, 61_234)).bytes(),
    );

    // Same port, same server: the kept port is taken, so another one is drawn.
    let syn = Packet::tcp(second, lan_server(), SYN);
    let run = datapath.run(Prog::EgressTc, &syn.bytes());
    let state = datapath
        .flow(&flow_key(proto::TCP, second, lan_server()))
        .expect("a SNAT entry for the second container");
    let port = u16::from_be(state.nat_port);
    assert_ne!(
        port, 61_234,
        "the second flow must not reuse the first one's port"
    );
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&port),
        "port {port} out of range"
    );
    assert_eq!(run.verdict, PASS);
    let retries = run
        .counted
        .iter()
        .find_map(|&(c, n)| (c == Counter::SnatPortRetries).then_some(n))
        .unwrap_or(0);
    assert!(retries >= 1, "a retry is counted: {:?}", run.counted);
    let decisions: Vec<_> = run
        .counted
        .iter()
        .filter(|(c, _)| *c != Counter::SnatPortRetries)
        .collect();
    assert_eq!(decisions, [&(Counter::SnatNew, 1)]);
    netfast_tests::diff::assert_bytes_eq(
        "second SNAT",
        &syn.with_src(sock(UPLINK_ADDR, port)).bytes(),
        &run.out,
    );
    assert_eq!(datapath.conntrack().len(), 4);
}

#[test]
fn snat_ports_exhausted_drops_the_new_flow() {
    let mut datapath = Datapath::configured();
    datapath.write_config(&DatapathConfig {
        snat_port_min: 61_000,
        snat_port_max: 61_000,
        ..seed_config()
    });
    let syn = Packet::tcp(sock(BACKEND, 61_000), lan_server(), SYN);
    datapath.run(Prog::EgressTc, &syn.bytes()).assert(
        PASS,
        Counter::SnatNew,
        &syn.with_src(sock(UPLINK_ADDR, 61_000)).bytes(),
    );

    let bytes = Packet::tcp(
        sock(Ipv4Addr::new(172, 16, 0, 103), 50_000),
        lan_server(),
        SYN,
    )
    .bytes();
    let run = datapath.run(Prog::EgressTc, &bytes);
    assert_eq!(run.verdict, DROP);
    // A one-port range is tried once: the walk never tries a port twice.
    assert_eq!(run.counted, [(Counter::DropSnatPortsExhausted, 1)]);
    netfast_tests::diff::assert_bytes_eq("dropped SYN", &bytes, &run.out);
    assert_eq!(
        datapath.conntrack().len(),
        2,
        "the refused flow left no entry"
    );
}

// --- direction of conntrack entries ----------------------------------------------
//
// A flow's two entries each belong to one side of the uplink: the DNAT original and
// the SNAT reply are met on ingress, the DNAT reply and the SNAT original on egress.
// A packet that matches an entry on the wrong side is not part of the flow (on
// ingress, a source from the container subnet is spoofed) and must not be
// translated, counted as the flow's, or recorded in the flow's statistics.

#[test]
fn ingress_ignores_an_entry_meant_for_egress() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let syn = Packet::tcp(client(), published_tcp(), SYN);
        datapath
            .run(prog, &syn.bytes())
            .assert_counted(Counter::DnatNew);

        // The DNAT reply's tuple, but arriving from outside.
        let spoofed = Packet::tcp(backend_tcp(), client(), SYN | ACK).bytes();
        datapath
            .run(prog, &spoofed)
            .assert(PASS, Counter::PassNoMatch, &spoofed);
        assert_flow(
            &datapath,
            &flow_key(proto::TCP, backend_tcp(), client()),
            flow_state(published_tcp(), KIND_DNAT, DIR_REPLY, 0, 0, 0),
        );
    });
}

#[test]
fn egress_ignores_an_entry_meant_for_ingress() {
    let (mut datapath, container, masqueraded) = snat_out_of_range_syn();
    // The SNAT reply's tuple, but leaving through the uplink.
    let stray = Packet::tcp(lan_server(), masqueraded, SYN | ACK).bytes();
    datapath
        .run(Prog::EgressTc, &stray)
        .assert(PASS, Counter::PassNoMatch, &stray);
    assert_flow(
        &datapath,
        &flow_key(proto::TCP, lan_server(), masqueraded),
        flow_state(container, KIND_SNAT, DIR_REPLY, 0, 0, 0),
    );
}

// --- XDP and partial checksums -----------------------------------------------------

/// Sets the TCP/UDP checksum of `frame` to its pseudo-header sum alone: what a local
/// sender leaves there under CHECKSUM_PARTIAL (`__tcp_v4_send_check`).
fn with_partial_checksum(mut frame: Vec<u8>, check_at: usize) -> Vec<u8> {
    let ihl = usize::from(frame[ETH_LEN] & 0x0f) * 4;
    let l4_len = (frame.len() - ETH_LEN - ihl) as u16;
    let mut pseudo = frame[ETH_LEN + 12..ETH_LEN + 20].to_vec();
    pseudo.extend_from_slice(&[0, frame[ETH_LEN + 9]]);
    pseudo.extend_from_slice(&l4_len.to_be_bytes());
    let sum = !netfast_tests::packet::internet_checksum(&pseudo);
    frame[check_at..check_at + 2].copy_from_slice(&sum.to_be_bytes());
    frame
}

/// XDP cannot tell a partial checksum from a full one by skb metadata, so a frame
/// whose checksum field is the pseudo-header sum is left untouched for the tc program
/// behind it, which translates it with the kernel's helpers. A frame with a full
/// checksum is translated by XDP as before.
#[test]
fn xdp_leaves_a_partial_checksum_to_tc() {
    let tcp_check = ETH_LEN + IPV4_LEN + 16;
    let udp_check = ETH_LEN + IPV4_LEN + 6;
    let syn = with_partial_checksum(
        Packet::tcp(client(), published_tcp(), SYN).bytes(),
        tcp_check,
    );
    let query = with_partial_checksum(
        Packet::udp(client(), sock(UPLINK_ADDR, UDP_PUBLISHED))
            .payload(b"query")
            .bytes(),
        udp_check,
    );
    for frame in [&syn, &query] {
        let mut datapath = Datapath::configured();
        datapath
            .run(Prog::IngressXdp, frame)
            .assert(PASS, Counter::PassXdpCsumPartial, frame);
        assert!(datapath.conntrack().is_empty(), "XDP created no flow");
        let run = datapath.run(Prog::IngressTc, frame);
        run.assert_counted(Counter::DnatNew);
        assert_eq!(datapath.conntrack().len(), 2, "tc created the flow");
    }
}

/// Found by the fuzz run: an echo reply from the subnet that belongs to no flow (a
/// container answering a ping that reached it unNATed) must not open a flow. It used
/// to be masqueraded with its identifier overwritten and its checksum broken; like
/// nf_conntrack (`icmp_new` takes requests only), netfast does not translate it, and
/// as it would leak a private address, drops it.
#[test]
fn an_echo_reply_from_the_subnet_opens_no_flow() {
    let mut datapath = Datapath::configured();
    let reply = Packet::icmp_echo_reply(BACKEND, LAN_PEER, 0x1234, 1)
        .payload(b"pong")
        .bytes();
    datapath.run(Prog::EgressTc, &reply).assert(
        DROP,
        Counter::DropUntranslatableFromSubnet,
        &reply,
    );
    assert!(datapath.conntrack().is_empty());
}

/// Issue 8, section 4: a new published-port flow never overwrites another flow's
/// entry. Here the backend itself has a masqueraded connection from port 80 to the
/// client's 40000, whose original tuple is exactly the reply tuple the new DNAT flow
/// would insert. The SYN is dropped and counted; the masqueraded flow keeps working.
#[test]
fn a_dnat_flow_never_overwrites_a_masqueraded_one() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let syn_out = Packet::tcp(backend_tcp(), client(), SYN);
        let run = datapath.run(Prog::EgressTc, &syn_out.bytes());
        run.assert_counted(Counter::SnatNew);
        let before = datapath.conntrack();

        let syn_in = Packet::tcp(client(), published_tcp(), SYN).bytes();
        datapath
            .run(prog, &syn_in)
            .assert(DROP, Counter::DropConntrackClash, &syn_in);
        assert_eq!(
            datapath.conntrack().len(),
            before.len(),
            "{prog:?}: no entry added"
        );
        let kept = datapath
            .flow(&flow_key(proto::TCP, backend_tcp(), client()))
            .expect("the masqueraded flow's entry");
        assert_eq!(
            kept.kind, KIND_SNAT,
            "{prog:?}: the SNAT entry is not overwritten"
        );
        let masqueraded = sock(UPLINK_ADDR, u16::from_be(kept.nat_port));
        let ack = Packet::tcp(backend_tcp(), client(), ACK);
        datapath.run(Prog::EgressTc, &ack.bytes()).assert(
            PASS,
            Counter::SnatEstablished,
            &ack.with_src(masqueraded).bytes(),
        );
    });
}

/// Issue 8, section 3: after a random start the SNAT port search walks the range in
/// turn, so with 3 of 4 ports taken the new flow gets the fourth whatever the start,
/// and the walk counts its extra tries.
#[test]
fn snat_port_search_walks_to_the_free_port() {
    let mut datapath = Datapath::configured();
    datapath.write_config(&DatapathConfig {
        snat_port_min: 61_000,
        snat_port_max: 61_003,
        ..seed_config()
    });
    for port in 61_000..61_003 {
        // Inside the range: each keeps its own port and takes it.
        let syn = Packet::tcp(sock(BACKEND, port), lan_server(), SYN);
        datapath
            .run(Prog::EgressTc, &syn.bytes())
            .assert_counted(Counter::SnatNew);
    }
    let other = sock(Ipv4Addr::new(172, 16, 0, 103), 50_000);
    let syn = Packet::tcp(other, lan_server(), SYN);
    let run = datapath.run(Prog::EgressTc, &syn.bytes());
    assert_eq!(run.verdict, PASS);
    assert_eq!(run.counted[0], (Counter::SnatNew, 1), "{:?}", run.counted);
    let retries = run
        .counted
        .iter()
        .find(|(counter, _)| *counter == Counter::SnatPortRetries)
        .map_or(0, |(_, n)| *n);
    assert!(retries <= 3, "at most 3 taken ports passed: {retries}");
    assert_eq!(
        run.out,
        syn.with_src(sock(UPLINK_ADDR, 61_003)).bytes(),
        "the one free port"
    );
}

// --- source ports as MASQUERADE chooses them (issue 8, section 3) -------------------

/// Runs a container's SYN (or datagram) from `own` to the LAN server through egress and
/// returns the source port it left with.
fn masqueraded_port(datapath: &mut Datapath, proto: u8, container: Ipv4Addr, own: u16) -> u16 {
    let frame = match proto {
        proto::TCP => Packet::tcp(sock(container, own), lan_server(), SYN),
        _ => Packet::udp(sock(container, own), lan_server()).payload(b"invite"),
    };
    let run = datapath.run(Prog::EgressTc, &frame.bytes());
    assert_eq!(run.verdict, PASS, "{:?}", run.counted);
    assert_eq!(
        run.counted.first(),
        Some(&(Counter::SnatNew, 1)),
        "{:?}",
        run.counted
    );
    assert_eq!(
        &run.out[26..30],
        &UPLINK_ADDR.octets(),
        "masqueraded source"
    );
    u16::from_be_bytes([run.out[34], run.out[35]])
}

/// An NFS client's privileged TCP port and a SIP UDP port, outside the host's ephemeral
/// ports, are kept as they are: NFS servers refuse unprivileged clients.
#[test]
fn ports_outside_the_ephemeral_range_are_kept() {
    let mut datapath = Datapath::configured();
    assert_eq!(
        masqueraded_port(&mut datapath, proto::TCP, BACKEND, 800),
        800
    );
    assert_eq!(
        masqueraded_port(&mut datapath, proto::UDP, BACKEND, 5060),
        5060
    );
    // Inside the host's ephemeral ports (32768-60999): moved into the SNAT range.
    let moved = masqueraded_port(&mut datapath, proto::TCP, BACKEND, 40_000);
    assert!((SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&moved), "{moved}");
}

/// When another flow holds the privileged port toward the same remote, the new flow
/// gets another privileged port, as nf_nat keeps them: 1-511 below 512, else 600-1023.
#[test]
fn a_taken_privileged_port_stays_privileged() {
    let mut datapath = Datapath::configured();
    let other = Ipv4Addr::new(172, 16, 0, 103);
    assert_eq!(
        masqueraded_port(&mut datapath, proto::TCP, BACKEND, 800),
        800
    );
    let second = masqueraded_port(&mut datapath, proto::TCP, other, 800);
    assert!((600..=1023).contains(&second) && second != 800, "{second}");
    assert_eq!(
        masqueraded_port(&mut datapath, proto::TCP, BACKEND, 100),
        100
    );
    let low = masqueraded_port(&mut datapath, proto::TCP, other, 100);
    assert!((1..=511).contains(&low) && low != 100, "{low}");
}

/// A port a host socket uses is never claimed: replies to it belong to the host. The
/// test runs in a network namespace of its own (test_run looks sockets up in the
/// calling thread's), with a UDP socket bound to 5060 and a TCP listener on 800.
#[test]
fn a_port_a_host_socket_holds_is_not_claimed() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("a network namespace of this test's own (needs root)");
    let udp = std::net::UdpSocket::bind("0.0.0.0:5060").expect("bind udp 5060");
    let tcp = std::net::TcpListener::bind("0.0.0.0:800").expect("listen on tcp 800");
    let mut datapath = Datapath::configured();

    let frame = Packet::udp(sock(BACKEND, 5060), lan_server()).payload(b"invite");
    let run = datapath.run(Prog::EgressTc, &frame.bytes());
    assert!(
        run.counted.contains(&(Counter::SnatPortHostSocket, 1)),
        "{:?}",
        run.counted
    );
    let port = u16::from_be_bytes([run.out[34], run.out[35]]);
    assert!((SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&port), "{port}");

    let moved = masqueraded_port(&mut datapath, proto::TCP, BACKEND, 800);
    assert!((600..=1023).contains(&moved) && moved != 800, "{moved}");
    drop((udp, tcp));
}
