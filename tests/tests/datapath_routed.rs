//! Routed flows and the host's own addresses in the masquerade subnet, on crafted
//! packets through BPF_PROG_TEST_RUN: exact bytes in and out, exactly the counters
//! that move, and the conntrack entries. Ingress cases run on the tc and the XDP
//! program alike.
//! - With `allow_direct_routing`, a peer that routes 172.16.0.0/24 via the host opens
//!   TCP, UDP and ICMP echo to a container: ingress records a routed flow (a conntrack
//!   pair that translates nothing), and the container's answers leave untouched, from
//!   its own address. Before routed flows, egress took them for new masqueraded flows
//!   (a SYN-ACK or a datagram from 10.0.1.48) or dropped them as private sources (an
//!   echo reply, an ICMP error, later fragments).
//! - What the host itself sends from its own addresses in the subnet (the bridge's
//!   172.16.0.100, a point-to-point host address) leaves untouched, counted
//!   `pass_from_host`; before, it was masqueraded or dropped the same way. A
//!   container's packet, and a host packet from a subnet address that is not the
//!   host's, are masqueraded as before.
//!
//! The answers that depend on the routing table (which addresses are the host's) are
//! asked in a network namespace of each test's own (`private_netns`). Needs root and a
//! BPF-capable kernel; without them every test fails, saying so.

use std::net::{Ipv4Addr, SocketAddrV4};

use netfast_common::{
    Counter, DatapathConfig,
    ct::{DIR_ORIGINAL, DIR_REPLY, KIND_ROUTED},
    proto,
    tcp::TcpState,
};
use netfast_tests::{
    cases::{DROP, PASS, assert_flow, each_ingress, flow_state, ip_len, sock},
    harness::{
        BACKEND, Datapath, Ifindexes, LAN_PEER, Prog, Run, TCP_PUBLISHED, UPLINK_ADDR, flow_key,
        seed_config,
    },
    packet::{
        ICMP_DEST_UNREACHABLE, ICMP_PORT_UNREACHABLE, PROTO_GRE, Packet,
        tcp_flags::{ACK, FIN, PSH, SYN},
    },
    private_netns::{BRIDGE, UPLINK, ifindex, ip, private_netns},
    tcp::{Table, TcpFlow, segment},
};

/// A container of the subnet with no published port (netns3 in the lab).
const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 103);
/// The bridge's address in `private_netns`: the host's own, inside the subnet.
const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 100);
/// A point-to-point host address inside the subnet (netns1's gateway in the lab).
const P2P_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

/// Initial sequence numbers of the peer and the container, and their raw windows.
const C: u32 = 0x1000_0000;
const S: u32 = 0x7000_0000;
const CW: u16 = 64_240;
const SW: u16 = 65_160;

fn routing_allowed() -> DatapathConfig {
    DatapathConfig {
        allow_direct_routing: 1,
        ..seed_config()
    }
}

/// Runs `case` on both ingress programs, each in a network namespace of its own
/// (`private_netns`, plus `more`), with the seed's datapath and `config`.
fn in_private_netns(
    config: DatapathConfig,
    more: &[&[&str]],
    case: impl Fn(Prog, &mut Datapath) + Sync,
) {
    each_ingress(|prog| {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                private_netns("10.0.1.48/24", more);
                let mut datapath = Datapath::configured();
                datapath.write_config(&config);
                case(prog, &mut datapath);
            });
        });
    });
}

/// Egress of a packet the host forwarded from the bridge: a container's.
fn forwarded(datapath: &mut Datapath, frame: &[u8]) -> Run {
    let on = Ifindexes {
        ifindex: ifindex(UPLINK),
        ingress_ifindex: ifindex(BRIDGE),
        mark: 0,
    };
    datapath.run_on(Prog::EgressTc, frame, Some(on))
}

/// Egress of a packet the host's own stack sent: it came in on no interface.
fn sent_by_host(datapath: &mut Datapath, frame: &[u8]) -> Run {
    let on = Ifindexes {
        ifindex: ifindex(UPLINK),
        ingress_ifindex: 0,
        mark: 0,
    };
    datapath.run_on(Prog::EgressTc, frame, Some(on))
}

/// Every conntrack entry is a routed one: nothing was masqueraded or published.
#[track_caller]
fn only_routed_entries(datapath: &Datapath, expected: usize) {
    let entries = datapath.conntrack();
    assert_eq!(entries.len(), expected, "{entries:?}");
    assert!(
        entries.iter().all(|(_, entry)| entry.kind == KIND_ROUTED),
        "only routed flows may be made: {entries:?}"
    );
}

// --- routed flows -------------------------------------------------------------------

/// A TCP connection from a peer that routes the subnet via the host to a container's
/// port 22: every segment both ways passes byte for byte, the SYN makes a routed pair
/// (both halves naming the container's own address and port), the handshake assures
/// it, and no masqueraded flow is ever made.
#[test]
fn a_routed_tcp_connection_passes_untranslated_both_ways() {
    in_private_netns(routing_allowed(), &[], |prog, datapath| {
        let peer = sock(LAN_PEER, 41_002);
        let container = sock(CONTAINER, 22);
        let flow = TcpFlow::routed(prog, peer, container);

        let syn = segment(peer, container, SYN, C, 0, CW).bytes();
        datapath
            .run(prog, &syn)
            .assert(PASS, Counter::RoutedNew, &syn);
        assert_flow(
            datapath,
            &flow_key(proto::TCP, peer, container),
            flow_state(container, KIND_ROUTED, DIR_ORIGINAL, SYN, 1, ip_len(&syn)),
        );
        assert_flow(
            datapath,
            &flow_key(proto::TCP, container, peer),
            flow_state(container, KIND_ROUTED, DIR_REPLY, 0, 0, 0),
        );

        // Before routed flows: snat_new, from 10.0.1.48 and a port of the SNAT range.
        let syn_ack = segment(container, peer, SYN | ACK, S, C + 1, SW).bytes();
        forwarded(datapath, &syn_ack).assert(PASS, Counter::RoutedReply, &syn_ack);

        let ack = segment(peer, container, ACK, C + 1, S + 1, CW).bytes();
        datapath.run(prog, &ack).assert_counts(
            PASS,
            &[
                (Counter::RoutedEstablished, 1),
                (Counter::ConntrackAssured, 1),
            ],
            &ack,
        );
        let halves = flow.halves(datapath);
        assert_eq!(
            (halves.table, halves.state),
            (Table::Assured, TcpState::Established),
            "{prog:?}"
        );

        let banner = segment(container, peer, PSH | ACK, S + 1, C + 1, SW)
            .payload(b"SSH-2.0-netfast\r\n")
            .bytes();
        forwarded(datapath, &banner).assert(PASS, Counter::RoutedReply, &banner);
        let fin = segment(peer, container, FIN | ACK, C + 1, S + 18, CW).bytes();
        datapath
            .run(prog, &fin)
            .assert(PASS, Counter::RoutedEstablished, &fin);
        let fin_ack = segment(container, peer, FIN | ACK, S + 18, C + 2, SW).bytes();
        forwarded(datapath, &fin_ack).assert(PASS, Counter::RoutedReply, &fin_ack);
        let last = segment(peer, container, ACK, C + 2, S + 19, CW).bytes();
        datapath
            .run(prog, &last)
            .assert(PASS, Counter::RoutedEstablished, &last);
        assert_eq!(flow.halves(datapath).state, TcpState::TimeWait, "{prog:?}");
        only_routed_entries(datapath, 2);
    });
}

/// UDP and ICMP echo from the peer to the container, and what the container sends
/// back on those flows: its answer (before: masqueraded from 10.0.1.48), its echo
/// reply, an ICMP error and a fragmented answer (before: dropped as private sources),
/// all byte for byte; an ICMP error from outside about the flow passes too.
#[test]
fn routed_udp_and_icmp_echo_answers_leave_as_the_container_sent_them() {
    in_private_netns(routing_allowed(), &[], |prog, datapath| {
        let peer = sock(LAN_PEER, 41_000);
        let container = sock(CONTAINER, 7000);

        let datagram = Packet::udp(peer, container).payload(b"hello").bytes();
        datapath
            .run(prog, &datagram)
            .assert(PASS, Counter::RoutedNew, &datagram);
        let answer = Packet::udp(container, peer).payload(b"echo:hello").bytes();
        forwarded(datapath, &answer).assert_counts(
            PASS,
            &[(Counter::RoutedReply, 1), (Counter::ConntrackAssured, 1)],
            &answer,
        );

        let request = Packet::icmp_echo_request(LAN_PEER, CONTAINER, 0x77, 1).bytes();
        datapath
            .run(prog, &request)
            .assert(PASS, Counter::RoutedNew, &request);
        let reply = Packet::icmp_echo_reply(CONTAINER, LAN_PEER, 0x77, 1).bytes();
        forwarded(datapath, &reply).assert_counts(
            PASS,
            &[(Counter::RoutedReply, 1), (Counter::ConntrackAssured, 1)],
            &reply,
        );

        // A second datagram to a closed port: the container's port unreachable.
        let closed = Packet::udp(sock(LAN_PEER, 41_001), sock(CONTAINER, 7001)).payload(b"x");
        let closed_bytes = closed.bytes();
        datapath
            .run(prog, &closed_bytes)
            .assert(PASS, Counter::RoutedNew, &closed_bytes);
        let unreachable = Packet::icmp_error(
            CONTAINER,
            LAN_PEER,
            (ICMP_DEST_UNREACHABLE, ICMP_PORT_UNREACHABLE, [0; 4]),
            &closed,
            None,
        )
        .bytes();
        forwarded(datapath, &unreachable).assert(PASS, Counter::IcmpErrorOut, &unreachable);

        // A router on the way back says the container's answer took too long.
        let expired = Packet::icmp_error(
            Ipv4Addr::new(10, 0, 1, 1),
            CONTAINER,
            (11, 0, [0; 4]),
            &Packet::udp(container, peer).payload(b"echo:hello"),
            None,
        )
        .bytes();
        datapath
            .run(prog, &expired)
            .assert(PASS, Counter::IcmpErrorIn, &expired);

        // A fragmented answer: the first fragment finds the flow, the later ones
        // follow it (before: drop_fragment_from_subnet).
        let big = Packet::udp(container, peer)
            .payload(&[0x5a; 64])
            .with_ip_id(0x4243)
            .fragments(32);
        forwarded(datapath, &big[0]).assert(PASS, Counter::RoutedReply, &big[0]);
        for later in &big[1..] {
            forwarded(datapath, later).assert(PASS, Counter::FragmentTranslated, later);
        }
        only_routed_entries(datapath, 6);
    });
}

/// Only a container's own address gets a routed flow: traffic to the host's bridge
/// address passes as before (the host firewall's business), a published port is
/// still translated, an echo reply opens nothing, and the containers' own flows are
/// still masqueraded.
#[test]
fn routed_flows_are_made_for_containers_only() {
    in_private_netns(routing_allowed(), &[], |prog, datapath| {
        let to_host = Packet::udp(sock(LAN_PEER, 41_000), sock(BRIDGE_ADDR, 7000)).bytes();
        datapath
            .run(prog, &to_host)
            .assert(PASS, Counter::PassNoMatch, &to_host);
        let stray_reply = Packet::icmp_echo_reply(LAN_PEER, CONTAINER, 0x99, 1).bytes();
        datapath
            .run(prog, &stray_reply)
            .assert(PASS, Counter::PassNoMatch, &stray_reply);
        assert!(datapath.conntrack().is_empty(), "{prog:?}: no flow");

        let published = Packet::tcp(
            sock(LAN_PEER, 41_001),
            sock(UPLINK_ADDR, TCP_PUBLISHED),
            SYN,
        );
        datapath.run(prog, &published.bytes()).assert(
            PASS,
            Counter::DnatNew,
            &published.with_dst(sock(BACKEND, 80)).bytes(),
        );

        // Port 5000 is outside the host's ephemeral ports: the masquerade keeps it.
        let out = Packet::tcp(sock(BACKEND, 5000), sock(LAN_PEER, 9000), SYN);
        forwarded(datapath, &out.bytes()).assert(
            PASS,
            Counter::SnatNew,
            &out.with_src(sock(UPLINK_ADDR, 5000)).bytes(),
        );
    });
}

/// A re-`up` with `allow_direct_routing = false` closes routed access again, routed
/// flows included: the next datagram of a flow made while it was on is dropped, like
/// any routed packet, and left untouched.
#[test]
fn routed_flows_close_when_direct_routing_is_switched_off() {
    in_private_netns(routing_allowed(), &[], |prog, datapath| {
        let peer = sock(LAN_PEER, 41_000);
        let first = Packet::udp(peer, sock(CONTAINER, 7000))
            .payload(b"one")
            .bytes();
        datapath
            .run(prog, &first)
            .assert(PASS, Counter::RoutedNew, &first);

        datapath.write_config(&seed_config());
        let second = Packet::udp(peer, sock(CONTAINER, 7000))
            .payload(b"two")
            .bytes();
        datapath
            .run(prog, &second)
            .assert(DROP, Counter::DropRoutedToContainer, &second);

        datapath.write_config(&routing_allowed());
        let third = Packet::udp(peer, sock(CONTAINER, 7000))
            .payload(b"three")
            .bytes();
        datapath
            .run(prog, &third)
            .assert(PASS, Counter::RoutedEstablished, &third);
    });
}

// --- the host's own addresses in the subnet -------------------------------------------

/// What the host sends from an address of its own in the subnet, of no flow, leaves
/// untouched and makes no flow: a service's SYN-ACK, UDP answer, echo reply and port
/// unreachable, a connection of its own, GRE and a later fragment. Before, the TCP
/// and UDP ones were masqueraded as new flows (from 10.0.1.48) and the others dropped
/// as private sources. `allow_direct_routing` plays no part: it is off here.
#[test]
fn the_hosts_own_subnet_addresses_leave_untranslated() {
    let p2p = P2P_ADDR.to_string();
    let more: [&[&str]; 1] = [&["addr", "add", &p2p, "peer", "172.16.0.2", "dev", BRIDGE]];
    std::thread::scope(|scope| {
        scope.spawn(|| {
            private_netns("10.0.1.48/24", &more);
            let mut datapath = Datapath::configured();
            for host in [BRIDGE_ADDR, P2P_ADDR] {
                let peer = LAN_PEER;
                let mut frames = vec![
                    (
                        "syn-ack",
                        segment(sock(host, 22), sock(peer, 41_000), SYN | ACK, S, C + 1, SW)
                            .bytes(),
                    ),
                    (
                        "udp answer",
                        Packet::udp(sock(host, 53), sock(peer, 41_001))
                            .payload(b"answer")
                            .bytes(),
                    ),
                    (
                        "echo reply",
                        Packet::icmp_echo_reply(host, peer, 0x77, 1).bytes(),
                    ),
                    (
                        "port unreachable",
                        Packet::icmp_error(
                            host,
                            peer,
                            (ICMP_DEST_UNREACHABLE, ICMP_PORT_UNREACHABLE, [0; 4]),
                            &Packet::udp(sock(peer, 41_002), sock(host, 7001)),
                            None,
                        )
                        .bytes(),
                    ),
                    (
                        "a connection of its own",
                        Packet::tcp(sock(host, 5000), sock(peer, 9000), SYN).bytes(),
                    ),
                    (
                        "gre",
                        Packet::other(host, peer, PROTO_GRE)
                            .payload(&[0; 8])
                            .bytes(),
                    ),
                ];
                let fragments = Packet::udp(sock(host, 53), sock(peer, 41_003))
                    .payload(&[0x5a; 64])
                    .with_ip_id(0x4244)
                    .fragments(32);
                frames.extend(fragments.into_iter().map(|f| ("fragment", f)));
                for (what, frame) in frames {
                    let run = sent_by_host(&mut datapath, &frame);
                    assert_eq!(
                        (run.verdict, &run.counted),
                        (PASS, &vec![(Counter::PassFromHost, 1)]),
                        "{host}: {what}"
                    );
                    run.assert(PASS, Counter::PassFromHost, &frame);
                }
            }
            assert!(datapath.conntrack().is_empty(), "no flow may be made");
        });
    });
}

/// Only the host's own addresses, as the kernel knows them now: a container's packet
/// forwarded from the bridge is masqueraded, and so is a packet the host sends from a
/// subnet address that is not its own (a raw socket or IP_TRANSPARENT sender);
/// an address added to the host later leaves untouched at once, and once it is
/// removed it is masqueraded again.
#[test]
fn only_addresses_of_the_host_leave_untranslated() {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            private_netns("10.0.1.48/24", &[]);
            let mut datapath = Datapath::configured();
            let server = sock(LAN_PEER, 9000);
            let masqueraded = |src: SocketAddrV4| sock(UPLINK_ADDR, src.port());

            let container = Packet::tcp(sock(BACKEND, 5000), server, SYN);
            forwarded(&mut datapath, &container.bytes()).assert(
                PASS,
                Counter::SnatNew,
                &container.with_src(masqueraded(sock(BACKEND, 5000))).bytes(),
            );
            let not_ours = Packet::tcp(sock(CONTAINER, 5001), server, SYN);
            sent_by_host(&mut datapath, &not_ours.bytes()).assert(
                PASS,
                Counter::SnatNew,
                &not_ours
                    .with_src(masqueraded(sock(CONTAINER, 5001)))
                    .bytes(),
            );
            let not_ours_echo = Packet::icmp_echo_reply(CONTAINER, LAN_PEER, 0x66, 1).bytes();
            sent_by_host(&mut datapath, &not_ours_echo).assert(
                DROP,
                Counter::DropUntranslatableFromSubnet,
                &not_ours_echo,
            );

            let later = Ipv4Addr::new(172, 16, 0, 5);
            ip(&["addr", "add", "172.16.0.5/32", "dev", BRIDGE]);
            let now_ours = Packet::tcp(sock(later, 5002), server, SYN).bytes();
            sent_by_host(&mut datapath, &now_ours).assert(PASS, Counter::PassFromHost, &now_ours);
            ip(&["addr", "del", "172.16.0.5/32", "dev", BRIDGE]);
            let gone = Packet::tcp(sock(later, 5003), server, SYN);
            sent_by_host(&mut datapath, &gone.bytes()).assert(
                PASS,
                Counter::SnatNew,
                &gone.with_src(masqueraded(sock(later, 5003))).bytes(),
            );
        });
    });
}
