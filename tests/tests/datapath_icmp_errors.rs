//! ICMP errors about translated flows through BPF_PROG_TEST_RUN (RFC 5508 section 4,
//! what nf_nat does for RELATED packets). Each case sets up a real flow, runs an
//! error that quotes one of its packets, and compares the whole output frame with
//! the error built from scratch around the translated quote: the outer header, the
//! quoted IPv4 header and its checksum, the quoted L4 checksum, and the ICMP checksum.
//!
//! Needs root and a BPF-capable kernel; without them every test fails, saying so.

use std::net::{Ipv4Addr, SocketAddrV4};

use netfast_common::{Counter, ct::KIND_SNAT};
use netfast_tests::{
    cases::{DROP, PASS, backend_tcp, client, each_ingress, lan_server, published_tcp, sock},
    harness::{
        BACKEND, Datapath, LAN_PEER, Prog, SNAT_PORT_MAX, SNAT_PORT_MIN, UDP_BACKEND_PORT,
        UDP_PUBLISHED, UPLINK_ADDR, flow_key,
    },
    packet::{
        ICMP_DEST_UNREACHABLE, ICMP_FRAG_NEEDED, ICMP_PARAMETER_PROBLEM, ICMP_PORT_UNREACHABLE,
        ICMP_REDIRECT, ICMP_SOURCE_QUENCH, ICMP_TIME_EXCEEDED, IPV4_LEN, PROTO_UDP, Packet,
        tcp_flags::{ACK, SYN},
    },
};

/// A router between the uplink and the far side, which sends the errors.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
/// Fragmentation needed, next-hop MTU 1400 (RFC 1191).
const FRAG_NEEDED_1400: (u8, u8, [u8; 4]) =
    (ICMP_DEST_UNREACHABLE, ICMP_FRAG_NEEDED, [0, 0, 0x05, 0x78]);
const PORT_UNREACHABLE: (u8, u8, [u8; 4]) = (ICMP_DEST_UNREACHABLE, ICMP_PORT_UNREACHABLE, [0; 4]);
const TTL_EXCEEDED: (u8, u8, [u8; 4]) = (ICMP_TIME_EXCEEDED, 0, [0; 4]);

/// A masqueraded UDP flow from a container port outside the SNAT range, so the port
/// changes: returns the container's and the masqueraded endpoint.
fn masqueraded_udp(datapath: &mut Datapath, far: SocketAddrV4) -> (SocketAddrV4, SocketAddrV4) {
    // Inside the host's ephemeral ports (32768-60999), so the port is not kept.
    let container = sock(BACKEND, 40_555);
    datapath
        .run(
            Prog::EgressTc,
            &Packet::udp(container, far).payload(b"probe").bytes(),
        )
        .assert_counted(Counter::SnatNew);
    let state = datapath
        .flow(&flow_key(PROTO_UDP, container, far))
        .expect("the SNAT entry exists");
    assert_eq!(state.kind, KIND_SNAT);
    let port = u16::from_be(state.nat_port);
    assert!((SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&port));
    (container, sock(UPLINK_ADDR, port))
}

/// From outside, an error about a masqueraded datagram: the far side's port is
/// closed. It must reach the container quoting the container's own address and port.
#[test]
fn port_unreachable_about_a_masqueraded_datagram() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let far = sock(LAN_PEER, 9999);
        let (container, masqueraded) = masqueraded_udp(&mut datapath, far);
        let sent = Packet::udp(masqueraded, far).payload(b"probe");
        let error = Packet::icmp_error(LAN_PEER, UPLINK_ADDR, PORT_UNREACHABLE, &sent, None);
        let expected = Packet::icmp_error(
            LAN_PEER,
            *container.ip(),
            PORT_UNREACHABLE,
            &sent.clone().with_src(container),
            None,
        );
        datapath
            .run(prog, &error.bytes())
            .assert(PASS, Counter::IcmpErrorIn, &expected.bytes());
    });
}

/// Path MTU discovery through the masquerade: a router's fragmentation-needed about a
/// TCP segment, quoting the whole TCP header (so its checksum is updated), only the 8
/// bytes RFC 792 promises (so there is no checksum to update), or 19 bytes: the
/// checksum is there but the header is not whole, and nf_nat (`tcp_manip_pkt`) then
/// leaves it as it was. So does netfast.
#[test]
fn frag_needed_about_a_masqueraded_tcp_flow() {
    for quote_len in [None, Some(8), Some(20), Some(19)] {
        each_ingress(|prog| {
            let mut datapath = Datapath::configured();
            let container = sock(BACKEND, 40_000);
            let syn = Packet::tcp(container, lan_server(), SYN);
            let run = datapath.run(Prog::EgressTc, &syn.bytes());
            run.assert_counted(Counter::SnatNew);
            let port = u16::from_be_bytes([run.out[34], run.out[35]]);
            let masqueraded = sock(UPLINK_ADDR, port);
            let segment = Packet::tcp(masqueraded, lan_server(), ACK).payload(&[0x42; 1400]);
            let error =
                Packet::icmp_error(ROUTER, UPLINK_ADDR, FRAG_NEEDED_1400, &segment, quote_len);
            let mut quote = segment.clone().with_src(container).quote(quote_len);
            if quote_len == Some(19) {
                let check = IPV4_LEN + 16..IPV4_LEN + 18;
                quote[check.clone()].copy_from_slice(&segment.quote(quote_len)[check]);
            }
            let (ty, code, rest) = FRAG_NEEDED_1400;
            let expected = Packet::icmp(ROUTER, *container.ip(), ty, code, rest).payload(&quote);
            let run = datapath.run(prog, &error.bytes());
            run.assert(PASS, Counter::IcmpErrorIn, &expected.bytes());
        });
    }
}

/// `ping -t 2` through the masquerade: time exceeded quoting the echo request, whose
/// identifier the masquerade changed; the quoted ICMP checksum follows it.
#[test]
fn time_exceeded_about_a_masqueraded_ping() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let id = 0x1234;
        let request = Packet::icmp_echo_request(BACKEND, LAN_PEER, id, 1).payload(b"0123456789");
        let run = datapath.run(Prog::EgressTc, &request.bytes());
        run.assert_counted(Counter::SnatNew);
        let nat_id = u16::from_be_bytes([run.out[38], run.out[39]]);
        let sent = request
            .clone()
            .with_src_ip(UPLINK_ADDR)
            .with_icmp_id(nat_id);
        let error = Packet::icmp_error(ROUTER, UPLINK_ADDR, TTL_EXCEEDED, &sent, None);
        let expected = Packet::icmp_error(ROUTER, BACKEND, TTL_EXCEEDED, &request, None);
        datapath
            .run(prog, &error.bytes())
            .assert(PASS, Counter::IcmpErrorIn, &expected.bytes());
    });
}

/// From outside, an error about a published-port flow: the backend's SYN-ACK, sent
/// out as the published address, did not reach the client. It must reach the backend
/// quoting the backend's own address and port.
#[test]
fn errors_of_every_kind_about_a_published_port_flow() {
    let kinds: Vec<(u8, u8, [u8; 4])> = (0..=15)
        .map(|code| (ICMP_DEST_UNREACHABLE, code, [0; 4]))
        .chain([
            (ICMP_SOURCE_QUENCH, 0, [0; 4]),
            (ICMP_REDIRECT, 1, [10, 0, 1, 1]),
            (ICMP_TIME_EXCEEDED, 0, [0; 4]),
            (ICMP_TIME_EXCEEDED, 1, [0; 4]),
            (ICMP_PARAMETER_PROBLEM, 0, [20, 0, 0, 0]),
        ])
        .collect();
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        datapath
            .run(prog, &Packet::tcp(client(), published_tcp(), SYN).bytes())
            .assert_counted(Counter::DnatNew);
        let syn_ack = Packet::tcp(published_tcp(), client(), SYN | ACK);
        for &kind in &kinds {
            let error = Packet::icmp_error(ROUTER, UPLINK_ADDR, kind, &syn_ack, Some(28));
            let expected = Packet::icmp_error(
                ROUTER,
                BACKEND,
                kind,
                &syn_ack.clone().with_src(backend_tcp()),
                Some(28),
            );
            datapath.run(prog, &error.bytes()).assert(
                PASS,
                Counter::IcmpErrorIn,
                &expected.bytes(),
            );
        }
    });
}

/// Outbound: a backend with no listener on a published UDP port answers port
/// unreachable. It leaves from the published address, quoting the published address
/// and port, never the backend's (and it is not dropped as a leak from the subnet).
#[test]
fn port_unreachable_from_a_backend_leaves_as_the_published_port() {
    let mut datapath = Datapath::configured();
    let client = sock(LAN_PEER, 33_333);
    let published = sock(UPLINK_ADDR, UDP_PUBLISHED);
    let backend = sock(BACKEND, UDP_BACKEND_PORT);
    let query = Packet::udp(client, published).payload(b"anyone?");
    datapath
        .run(Prog::IngressTc, &query.bytes())
        .assert_counted(Counter::DnatNew);
    let delivered = query.clone().with_dst(backend);
    let error = Packet::icmp_error(BACKEND, LAN_PEER, PORT_UNREACHABLE, &delivered, None);
    let expected = Packet::icmp_error(UPLINK_ADDR, LAN_PEER, PORT_UNREACHABLE, &query, None);
    datapath.run(Prog::EgressTc, &error.bytes()).assert(
        PASS,
        Counter::IcmpErrorOut,
        &expected.bytes(),
    );
}

/// Outbound: the host itself, routing a TTL-1 datagram to a published port, answers
/// time exceeded from the uplink address. The quote must show the published address
/// and port, not the backend's.
#[test]
fn time_exceeded_from_the_host_quotes_the_published_port() {
    let mut datapath = Datapath::configured();
    let client = sock(LAN_PEER, 33_333);
    let published = sock(UPLINK_ADDR, UDP_PUBLISHED);
    let backend = sock(BACKEND, UDP_BACKEND_PORT);
    let query = Packet::udp(client, published).payload(b"ttl 1").with_ttl(1);
    datapath
        .run(Prog::IngressTc, &query.bytes())
        .assert_counted(Counter::DnatNew);
    let delivered = query.clone().with_dst(backend);
    let error = Packet::icmp_error(UPLINK_ADDR, LAN_PEER, TTL_EXCEEDED, &delivered, None);
    let expected = Packet::icmp_error(UPLINK_ADDR, LAN_PEER, TTL_EXCEEDED, &query, None);
    datapath.run(Prog::EgressTc, &error.bytes()).assert(
        PASS,
        Counter::IcmpErrorOut,
        &expected.bytes(),
    );
}

/// Outbound: a container whose masqueraded flow's reply finds its socket closed
/// answers port unreachable; it leaves from the uplink, quoting the masqueraded port.
#[test]
fn port_unreachable_from_a_container_leaves_masqueraded() {
    let mut datapath = Datapath::configured();
    let far = sock(LAN_PEER, 9000);
    let (container, masqueraded) = masqueraded_udp(&mut datapath, far);
    let reply = Packet::udp(far, masqueraded).payload(b"late answer");
    let run = datapath.run(Prog::IngressTc, &reply.bytes());
    assert_eq!(
        run.counted,
        [(Counter::SnatReply, 1), (Counter::ConntrackAssured, 1)],
        "the first reply makes the flow assured"
    );
    let delivered = reply.clone().with_dst(container);
    let error = Packet::icmp_error(
        *container.ip(),
        LAN_PEER,
        PORT_UNREACHABLE,
        &delivered,
        None,
    );
    let expected = Packet::icmp_error(UPLINK_ADDR, LAN_PEER, PORT_UNREACHABLE, &reply, None);
    datapath.run(Prog::EgressTc, &error.bytes()).assert(
        PASS,
        Counter::IcmpErrorOut,
        &expected.bytes(),
    );
}

/// A quoted UDP checksum of 0 means "none" and stays 0; IP options on the outer and
/// on the quoted header shift every offset.
#[test]
fn quoted_udp_checksum_zero_and_ip_options() {
    let options = [0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]; // router alert, NOPs, EOL
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let far = sock(LAN_PEER, 9999);
        let (container, masqueraded) = masqueraded_udp(&mut datapath, far);
        let sent = Packet::udp(masqueraded, far)
            .payload(b"probe")
            .zero_udp_checksum()
            .options(&options);
        let error = Packet::icmp_error(LAN_PEER, UPLINK_ADDR, PORT_UNREACHABLE, &sent, None)
            .options(&options[..4]);
        let expected = Packet::icmp_error(
            LAN_PEER,
            *container.ip(),
            PORT_UNREACHABLE,
            &sent.clone().with_src(container),
            None,
        )
        .options(&options[..4]);
        let run = datapath.run(prog, &error.bytes());
        run.assert(PASS, Counter::IcmpErrorIn, &expected.bytes());
    });
}

/// Errors netfast must not translate: about no flow, about a flow of the other side,
/// with a quote too short for 8 L4 bytes, quoting a later fragment, quoting another
/// error. Passed untouched, or dropped when they come from the subnet.
#[test]
fn errors_about_no_flow_are_counted_and_left_alone() {
    let stranger = Packet::udp(sock(UPLINK_ADDR, 40_001), sock(LAN_PEER, 53)).payload(b"q");
    let quoted_error = Packet::icmp_error(LAN_PEER, UPLINK_ADDR, TTL_EXCEEDED, &stranger, None);
    let cases = [
        Packet::icmp_error(ROUTER, UPLINK_ADDR, PORT_UNREACHABLE, &stranger, None),
        Packet::icmp_error(ROUTER, UPLINK_ADDR, PORT_UNREACHABLE, &stranger, Some(7)),
        Packet::icmp_error(
            ROUTER,
            UPLINK_ADDR,
            PORT_UNREACHABLE,
            &stranger.clone().fragment(false, 185),
            None,
        ),
        Packet::icmp_error(ROUTER, UPLINK_ADDR, PORT_UNREACHABLE, &quoted_error, None),
    ];
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        for error in &cases {
            let bytes = error.bytes();
            datapath
                .run(prog, &bytes)
                .assert(PASS, Counter::PassIcmpErrorUntracked, &bytes);
        }
        // A published-port flow's entry for the ingress side, quoted as if it had
        // left: the quote's reverse is an egress-side entry, so not ours to translate.
        datapath
            .run(prog, &Packet::tcp(client(), published_tcp(), SYN).bytes())
            .assert_counted(Counter::DnatNew);
        let wrong_side = Packet::icmp_error(
            ROUTER,
            UPLINK_ADDR,
            PORT_UNREACHABLE,
            &Packet::tcp(backend_tcp(), client(), SYN | ACK),
            None,
        )
        .bytes();
        datapath
            .run(prog, &wrong_side)
            .assert(PASS, Counter::PassIcmpErrorUntracked, &wrong_side);
    });
    // Found in review: an error about a real flow, but addressed to someone other than
    // the quoted packet's sender, is forged or misrouted (nf_conntrack refuses it too).
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let far = sock(LAN_PEER, 7777);
        let (_, masqueraded) = masqueraded_udp(&mut datapath, far);
        let sent = Packet::udp(masqueraded, far).payload(b"probe");
        let misaddressed = Packet::icmp_error(
            LAN_PEER,
            Ipv4Addr::new(10, 0, 1, 99),
            PORT_UNREACHABLE,
            &sent,
            None,
        )
        .bytes();
        datapath.run(prog, &misaddressed).assert(
            PASS,
            Counter::PassIcmpErrorUntracked,
            &misaddressed,
        );
    });
    let mut datapath = Datapath::configured();
    let from_host = Packet::icmp_error(UPLINK_ADDR, LAN_PEER, PORT_UNREACHABLE, &stranger, None);
    let bytes = from_host.bytes();
    datapath
        .run(Prog::EgressTc, &bytes)
        .assert(PASS, Counter::PassIcmpErrorUntracked, &bytes);
    let from_subnet = from_host.with_src_ip(BACKEND).bytes();
    datapath.run(Prog::EgressTc, &from_subnet).assert(
        DROP,
        Counter::DropUntranslatableFromSubnet,
        &from_subnet,
    );
}
