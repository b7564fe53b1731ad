//! `container_ingress_tc` on crafted packets, through BPF_PROG_TEST_RUN: the verdict
//! (a hairpin frame is redirected: TC_ACT_REDIRECT), the exact output bytes (every
//! checksum of the expected frame computed from scratch, the MACs from the ENDPOINTS
//! entry of the container the frame goes to), the one decision counter that moved,
//! and the conntrack entries a hairpin connection leaves: two flows.
//!
//! A test run does not send a redirected frame anywhere, nor say which interface the
//! program chose; the MACs come from the same ENDPOINTS entry as that ifindex.
//! Needs root and a BPF-capable kernel; without them every test fails, saying so.

use std::net::{Ipv4Addr, SocketAddrV4};

use netfast_common::{
    Counter, Endpoint,
    ct::{DIR_ORIGINAL, DIR_REPLY, KIND_DNAT, KIND_SNAT},
    proto,
};
use netfast_tests::{
    harness::{
        BACKEND, Datapath, LAN_PEER, Prog, TCP_BACKEND_PORT, TCP_PUBLISHED, UDP_BACKEND_PORT,
        UDP_PUBLISHED, UPLINK_ADDR, Verdict, addr_be, flow_key, port_be,
    },
    packet::{
        Packet, arp_request,
        tcp_flags::{ACK, SYN},
    },
};

/// netns3, the hairpin client of most tests.
const CLIENT: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 103);
/// The bridge's address: both containers' gateway.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 100);
/// A source port outside the host's ephemeral ports (32768-60999 in `seed_config`),
/// which the SNAT keeps, so the expected frames are known exactly.
const CLIENT_PORT: u16 = 5000;

const BACKEND_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x03];
const BRIDGE_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0x64];

fn endpoint(ifindex: u32, mac: [u8; 6]) -> Endpoint {
    Endpoint {
        ifindex,
        gateway: addr_be(GATEWAY),
        mac,
        host_mac: BRIDGE_MAC,
    }
}

/// The seed's CONFIG and publishes, with netns2 (the backend) and netns3 as endpoints.
fn datapath() -> Datapath {
    let mut dp = Datapath::configured();
    dp.add_endpoint(BACKEND, endpoint(12, BACKEND_MAC));
    dp.add_endpoint(CLIENT, endpoint(13, CLIENT_MAC));
    dp
}

fn sock(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

/// A frame as a container sends it toward its gateway.
fn from_container(mut pkt: Packet, mac: [u8; 6]) -> Packet {
    pkt.eth_src = mac;
    pkt.eth_dst = BRIDGE_MAC;
    pkt
}

/// The frame netfast hands to the container with `mac`.
fn to_container(mut pkt: Packet, mac: [u8; 6]) -> Packet {
    pkt.eth_src = BRIDGE_MAC;
    pkt.eth_dst = mac;
    pkt
}

#[test]
fn a_tcp_hairpin_connection_is_two_flows_and_goes_both_ways() {
    let mut dp = datapath();
    let client = sock(CLIENT, CLIENT_PORT);
    let published = sock(UPLINK_ADDR, TCP_PUBLISHED);
    let backend = sock(BACKEND, TCP_BACKEND_PORT);
    let masked = sock(GATEWAY, CLIENT_PORT);

    // The SYN: DNAT to the backend, SNAT to the gateway, to the backend's veth.
    let syn = from_container(Packet::tcp(client, published, SYN), CLIENT_MAC);
    let run = dp.run(Prog::ContainerTc, &syn.bytes());
    let expected = to_container(Packet::tcp(masked, backend, SYN), BACKEND_MAC);
    run.assert(Verdict::Redirect, Counter::HairpinNew, &expected.bytes());

    // Two flows, both unassured yet: the DNAT flow as the uplink would make it for
    // this client, and the SNAT flow of the translated packet.
    let dnat = dp
        .flow(&flow_key(proto::TCP, client, published))
        .expect("the DNAT flow's original half");
    assert_eq!(
        (dnat.kind, dnat.direction, dnat.nat_addr, dnat.nat_port),
        (
            KIND_DNAT,
            DIR_ORIGINAL,
            addr_be(BACKEND),
            port_be(TCP_BACKEND_PORT)
        )
    );
    let dnat_reply = dp
        .flow(&flow_key(proto::TCP, backend, client))
        .expect("the DNAT flow's reply half");
    assert_eq!(
        (dnat_reply.kind, dnat_reply.direction, dnat_reply.nat_addr),
        (KIND_DNAT, DIR_REPLY, addr_be(UPLINK_ADDR))
    );
    let snat = dp
        .flow(&flow_key(proto::TCP, client, backend))
        .expect("the SNAT flow's original half");
    assert_eq!(
        (snat.kind, snat.direction, snat.nat_addr, snat.nat_port),
        (
            KIND_SNAT,
            DIR_ORIGINAL,
            addr_be(GATEWAY),
            port_be(CLIENT_PORT)
        )
    );
    let snat_reply = dp
        .flow(&flow_key(proto::TCP, backend, masked))
        .expect("the SNAT flow's reply half");
    assert_eq!(
        (snat_reply.kind, snat_reply.direction, snat_reply.nat_addr),
        (KIND_SNAT, DIR_REPLY, addr_be(CLIENT))
    );
    assert_eq!(dp.conntrack().len(), 4, "two flows, two halves each");

    // The backend's SYN-ACK, on the backend's veth: both flows undone, to the client.
    let syn_ack = from_container(Packet::tcp(backend, masked, SYN | ACK), BACKEND_MAC);
    let run = dp.run(Prog::ContainerTc, &syn_ack.bytes());
    let expected = to_container(Packet::tcp(published, client, SYN | ACK), CLIENT_MAC);
    run.assert(Verdict::Redirect, Counter::HairpinReply, &expected.bytes());

    // The client's ACK completes the handshake in both flows: both become assured.
    let ack = from_container(Packet::tcp(client, published, ACK), CLIENT_MAC);
    let run = dp.run(Prog::ContainerTc, &ack.bytes());
    let expected = to_container(Packet::tcp(masked, backend, ACK), BACKEND_MAC);
    run.assert_counts(
        Verdict::Redirect,
        &[
            (Counter::HairpinEstablished, 1),
            (Counter::ConntrackAssured, 2),
        ],
        &expected.bytes(),
    );
    assert_eq!(dp.flow_entries("CONNTRACK").len(), 4, "both flows assured");
}

#[test]
fn a_container_reaches_its_own_published_port() {
    let mut dp = datapath();
    let client = sock(BACKEND, CLIENT_PORT + 1);
    let published = sock(UPLINK_ADDR, TCP_PUBLISHED);
    let backend = sock(BACKEND, TCP_BACKEND_PORT);
    let masked = sock(GATEWAY, CLIENT_PORT + 1);

    let syn = from_container(Packet::tcp(client, published, SYN), BACKEND_MAC);
    let run = dp.run(Prog::ContainerTc, &syn.bytes());
    let expected = to_container(Packet::tcp(masked, backend, SYN), BACKEND_MAC);
    run.assert(Verdict::Redirect, Counter::HairpinNew, &expected.bytes());

    let syn_ack = from_container(Packet::tcp(backend, masked, SYN | ACK), BACKEND_MAC);
    let run = dp.run(Prog::ContainerTc, &syn_ack.bytes());
    let expected = to_container(Packet::tcp(published, client, SYN | ACK), BACKEND_MAC);
    run.assert(Verdict::Redirect, Counter::HairpinReply, &expected.bytes());
}

#[test]
fn a_udp_hairpin_datagram_and_its_answer() {
    let mut dp = datapath();
    let client = sock(CLIENT, CLIENT_PORT + 2);
    let published = sock(UPLINK_ADDR, UDP_PUBLISHED);
    let backend = sock(BACKEND, UDP_BACKEND_PORT);
    let masked = sock(GATEWAY, CLIENT_PORT + 2);

    let query = from_container(Packet::udp(client, published).payload(b"q"), CLIENT_MAC);
    let run = dp.run(Prog::ContainerTc, &query.bytes());
    let expected = to_container(Packet::udp(masked, backend).payload(b"q"), BACKEND_MAC);
    run.assert(Verdict::Redirect, Counter::HairpinNew, &expected.bytes());

    let answer = from_container(Packet::udp(backend, masked).payload(b"a"), BACKEND_MAC);
    let run = dp.run(Prog::ContainerTc, &answer.bytes());
    let expected = to_container(Packet::udp(published, client).payload(b"a"), CLIENT_MAC);
    run.assert_counts(
        Verdict::Redirect,
        &[(Counter::HairpinReply, 1), (Counter::ConntrackAssured, 2)],
        &expected.bytes(),
    );
}

/// Everything that is not a hairpin passes byte for byte, counted by reason.
#[test]
fn what_is_not_hairpin_passes_untouched() {
    let mut dp = datapath();
    let client = sock(CLIENT, 40_000);
    let cases: Vec<(&str, Vec<u8>, Counter)> = vec![
        (
            "to the outside",
            Packet::tcp(client, sock(LAN_PEER, 9000), SYN).bytes(),
            Counter::PassContainerNotPublished,
        ),
        (
            "to another container directly",
            Packet::tcp(client, sock(BACKEND, 80), SYN).bytes(),
            Counter::PassContainerNotPublished,
        ),
        (
            "to a port of the host that is not published",
            Packet::tcp(client, sock(UPLINK_ADDR, 8089), SYN).bytes(),
            Counter::PassContainerNotPublished,
        ),
        (
            "ARP",
            arp_request(CLIENT, GATEWAY),
            Counter::PassContainerNotIpv4,
        ),
        (
            "ICMP echo",
            Packet::icmp_echo_request(CLIENT, UPLINK_ADDR, 7, 1).bytes(),
            Counter::PassContainerOther,
        ),
    ];
    for (what, frame, counter) in cases {
        let run = dp.run(Prog::ContainerTc, &frame);
        assert_eq!(run.verdict, Verdict::Pass, "{what}");
        assert_eq!(run.out, frame, "{what}: bytes changed");
        assert_eq!(run.counted, [(counter, 1)], "{what}");
    }
    assert!(dp.conntrack().is_empty(), "no flow was created");
}

/// A backend with no ENDPOINTS entry (in the masquerade subnet, not a container of
/// the config): the frame cannot be delivered, so no flow starts and it passes.
#[test]
fn a_backend_without_an_endpoint_falls_back() {
    let mut dp = datapath();
    let elsewhere = Ipv4Addr::new(172, 16, 0, 104);
    dp.publish(proto::TCP, Ipv4Addr::UNSPECIFIED, 8090, sock(elsewhere, 80));
    let frame = Packet::tcp(sock(CLIENT, 5003), sock(UPLINK_ADDR, 8090), SYN).bytes();
    let run = dp.run(Prog::ContainerTc, &frame);
    run.assert(Verdict::Pass, Counter::PassHairpinNoEndpoint, &frame);
    assert!(dp.conntrack().is_empty(), "no flow was created");
}

/// A backend's reply whose SNAT flow is there but whose DNAT flow is gone passes
/// untouched, counted; it is never sent half translated.
#[test]
fn a_reply_without_its_dnat_flow_falls_back() {
    let mut dp = datapath();
    let client = sock(CLIENT, 5004);
    let published = sock(UPLINK_ADDR, TCP_PUBLISHED);
    let backend = sock(BACKEND, TCP_BACKEND_PORT);
    let masked = sock(GATEWAY, 5004);
    let syn = from_container(Packet::tcp(client, published, SYN), CLIENT_MAC);
    dp.run(Prog::ContainerTc, &syn.bytes())
        .assert_counted(Counter::HairpinNew);
    dp.evict(&flow_key(proto::TCP, client, published));
    dp.evict(&flow_key(proto::TCP, backend, client));

    let syn_ack = from_container(Packet::tcp(backend, masked, SYN | ACK), BACKEND_MAC).bytes();
    let run = dp.run(Prog::ContainerTc, &syn_ack);
    run.assert(Verdict::Pass, Counter::PassHairpinNoDnatFlow, &syn_ack);
}
