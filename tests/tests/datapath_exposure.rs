//! Issue 10, exposure, on crafted packets through BPF_PROG_TEST_RUN, on the tc and the
//! XDP ingress program alike:
//! - a port published on one host address answers only traffic to that address, where
//!   it lives: a loopback publish never from the uplink (dropped and counted, as
//!   Docker's raw PREROUTING drop does), a publish on one of the uplink's addresses
//!   not on its other address, nor once its address is gone;
//! - a peer routing the masquerade subnet via the host reaches no container, unless a
//!   flow or a publish takes the packet, or `allow_direct_routing` is set (what it
//!   then lets through and how the answers leave: `datapath_routed.rs`).
//!
//! The answers that depend on the routing table are asked in a network namespace of
//! each test's own (`private_netns`); nothing here reads or touches the machine's.
//! Needs root and a BPF-capable kernel; without them every test fails, saying so.

use std::net::Ipv4Addr;

use netfast_common::{Counter, DatapathConfig, proto};
use netfast_tests::{
    cases::{DROP, PASS, backend_tcp, client, each_ingress, sock},
    harness::{
        BACKEND, Datapath, LAN_PEER, Prog, TCP_BACKEND_PORT, TCP_PUBLISHED, UPLINK_ADDR,
        seed_config,
    },
    packet::{
        ICMP_TIMESTAMP, PROTO_GRE, Packet,
        tcp_flags::{ACK, SYN},
    },
    private_netns::{UPLINK, ip, private_netns},
};

/// The port `127.0.0.1:8081:172.16.0.102:80` publishes.
const LOOPBACK_PUBLISHED: u16 = 8081;
/// A container of the subnet with no published port.
const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 103);
/// The bridge's address in `private_netns`: the host's own, inside the subnet.
const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 100);

/// Runs `case` on both ingress programs, each in a network namespace of its own
/// built by `private_netns(uplink_cidr, more)`, with the seed's datapath.
fn in_private_netns(
    uplink_cidr: &str,
    more: &[&[&str]],
    case: impl Fn(Prog, &mut Datapath) + Sync,
) {
    each_ingress(|prog| {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                private_netns(uplink_cidr, more);
                let mut datapath = Datapath::configured();
                case(prog, &mut datapath);
            });
        });
    });
}

// --- a publish answers only where its address lives -----------------------------

/// The crafted SYN of the Docker report: from the LAN, to the host's MAC, addressed
/// to 127.0.0.1:8081, which `127.0.0.1:8081:172.16.0.102:80` publishes. It is
/// dropped, untranslated, with no flow made; so is a datagram to 127.0.0.2 for a port
/// published on every address. A loopback destination of no publish is the kernel's
/// to drop as a martian, and stays a miss.
#[test]
fn a_loopback_publish_is_not_reachable_from_the_uplink() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        datapath.publish(
            proto::TCP,
            Ipv4Addr::LOCALHOST,
            LOOPBACK_PUBLISHED,
            backend_tcp(),
        );
        let syn = Packet::tcp(client(), sock(Ipv4Addr::LOCALHOST, LOOPBACK_PUBLISHED), SYN);
        let bytes = syn.bytes();
        datapath
            .run(prog, &bytes)
            .assert(DROP, Counter::DropLoopbackPublish, &bytes);

        let any = Packet::tcp(
            sock(LAN_PEER, 40_001),
            sock(Ipv4Addr::new(127, 0, 0, 2), TCP_PUBLISHED),
            SYN,
        )
        .bytes();
        datapath
            .run(prog, &any)
            .assert(DROP, Counter::DropLoopbackPublish, &any);

        let unpublished = Packet::tcp(
            sock(LAN_PEER, 40_002),
            sock(Ipv4Addr::LOCALHOST, LOOPBACK_PUBLISHED + 1),
            SYN,
        )
        .bytes();
        datapath
            .run(prog, &unpublished)
            .assert(PASS, Counter::PassNoMatch, &unpublished);
        assert!(
            datapath.conntrack().is_empty(),
            "{prog:?}: no flow may be made"
        );
    });
}

/// The uplink has 10.0.1.48 (the address of `up`) and 10.0.1.49; 8081 is published
/// on 10.0.1.49 only. A SYN to 10.0.1.49:8081 is translated; one to 10.0.1.48:8081
/// is a miss. Once 10.0.1.49 is removed from the host, a new SYN to it is a miss too:
/// the publish answers only where its address lives. (Formerly
/// `dnat_to_an_exact_host_address` in datapath_packets.rs, which asked the machine's
/// own routing table.)
#[test]
fn a_publish_on_one_uplink_address_answers_only_that_address() {
    let second = Ipv4Addr::new(10, 0, 1, 49);
    in_private_netns(
        "10.0.1.48/24",
        &[&["addr", "add", "10.0.1.49/24", "dev", UPLINK]],
        |prog, datapath| {
            datapath.publish(proto::TCP, second, LOOPBACK_PUBLISHED, backend_tcp());
            let syn = Packet::tcp(client(), sock(second, LOOPBACK_PUBLISHED), SYN);
            datapath.run(prog, &syn.bytes()).assert(
                PASS,
                Counter::DnatNew,
                &syn.with_dst(backend_tcp()).bytes(),
            );

            let other = Packet::tcp(
                sock(LAN_PEER, 40_001),
                sock(UPLINK_ADDR, LOOPBACK_PUBLISHED),
                SYN,
            )
            .bytes();
            datapath
                .run(prog, &other)
                .assert(PASS, Counter::PassNoMatch, &other);

            ip(&["addr", "del", "10.0.1.49/24", "dev", UPLINK]);
            let gone = Packet::tcp(
                sock(LAN_PEER, 40_002),
                sock(second, LOOPBACK_PUBLISHED),
                SYN,
            )
            .bytes();
            datapath
                .run(prog, &gone)
                .assert(PASS, Counter::PassNoMatch, &gone);
        },
    );
}

// --- routed access to the subnet --------------------------------------------------

/// What a peer routing 172.16.0.0/24 via the host may send a container, none of it
/// belonging to a flow or a publish: every kind of decision that passes untranslated.
fn routed_to_container() -> Vec<(&'static str, Vec<u8>)> {
    let udp = Packet::udp(sock(LAN_PEER, 41_000), sock(CONTAINER, 7000)).payload(b"hello");
    let fragmented = Packet::udp(sock(LAN_PEER, 41_001), sock(BACKEND, 7000))
        .payload(&[0x5a; 64])
        .with_ip_id(0x4242)
        .fragments(32);
    vec![
        ("udp to an unpublished port", udp.bytes()),
        (
            "tcp SYN to an unpublished port",
            Packet::tcp(sock(LAN_PEER, 41_002), sock(CONTAINER, 22), SYN).bytes(),
        ),
        (
            "tcp to a published backend's own port",
            Packet::tcp(sock(LAN_PEER, 41_003), sock(BACKEND, TCP_BACKEND_PORT), SYN).bytes(),
        ),
        (
            "icmp echo request",
            Packet::icmp_echo_request(LAN_PEER, CONTAINER, 0x77, 1).bytes(),
        ),
        (
            "icmp timestamp",
            Packet::icmp(LAN_PEER, CONTAINER, ICMP_TIMESTAMP, 0, [0; 4]).bytes(),
        ),
        (
            "icmp error about no flow",
            Packet::icmp_error(
                LAN_PEER,
                CONTAINER,
                (3, 3, [0; 4]),
                &Packet::udp(sock(CONTAINER, 7000), sock(LAN_PEER, 41_000)),
                None,
            )
            .bytes(),
        ),
        (
            "gre",
            Packet::other(LAN_PEER, CONTAINER, PROTO_GRE)
                .payload(&[0; 8])
                .bytes(),
        ),
        ("a later fragment", fragmented[1].clone()),
    ]
}

/// Each of those is dropped, untouched, with `drop_routed_to_container` and nothing
/// else counted, and no flow made.
#[test]
fn routed_traffic_to_the_subnet_is_dropped() {
    in_private_netns("10.0.1.48/24", &[], |prog, datapath| {
        for (what, bytes) in routed_to_container() {
            let run = datapath.run(prog, &bytes);
            assert_eq!(run.verdict, DROP, "{prog:?}, {what}");
            run.assert(DROP, Counter::DropRoutedToContainer, &bytes);
        }
        assert!(
            datapath.conntrack().is_empty(),
            "{prog:?}: no flow may be made"
        );
    });
}

/// `allow_direct_routing` (routed setups) lets the same packets through untouched:
/// what opens a flow (UDP, a TCP SYN, an ICMP echo request) as a new routed flow,
/// tracked so the container's answers leave untranslated (`datapath_routed.rs`), an
/// ICMP error about such a flow as one (`icmp_error_in`), the rest with the pass
/// decision it had before the rule existed. A config without
/// masquerade (no subnet) passes all of them with their old pass decisions and makes
/// no flow.
#[test]
fn allow_direct_routing_and_no_masquerade_pass_routed_traffic() {
    in_private_netns("10.0.1.48/24", &[], |prog, _| {
        let opens_flow = [
            "udp to an unpublished port",
            "tcp SYN to an unpublished port",
            "tcp to a published backend's own port",
            "icmp echo request",
        ];
        let configs = [
            DatapathConfig {
                allow_direct_routing: 1,
                ..seed_config()
            },
            DatapathConfig {
                masquerade: 0,
                ..seed_config()
            },
        ];
        for config in configs {
            let mut datapath = Datapath::configured();
            datapath.write_config(&config);
            let routed = config.masquerade != 0;
            for (what, bytes) in routed_to_container() {
                let run = datapath.run(prog, &bytes);
                assert_eq!(run.verdict, PASS, "{prog:?}, {what}, {config:?}");
                assert_eq!(run.out, bytes, "{prog:?}, {what}: passed untouched");
                assert_eq!(run.counted.len(), 1, "{prog:?}, {what}: {:?}", run.counted);
                let (counter, n) = run.counted[0];
                if routed && opens_flow.contains(&what) {
                    assert_eq!((counter, n), (Counter::RoutedNew, 1), "{prog:?}, {what}");
                } else if routed && what == "icmp error about no flow" {
                    // It quotes the answer to the first datagram, whose routed flow
                    // now exists: an error about that flow, left as it is.
                    assert_eq!((counter, n), (Counter::IcmpErrorIn, 1), "{prog:?}, {what}");
                } else {
                    assert!(
                        n == 1 && counter.is_decision() && counter.name().starts_with("pass_"),
                        "{prog:?}, {what}: {:?}",
                        run.counted
                    );
                }
            }
            let flows = if routed { 2 * opens_flow.len() } else { 0 };
            assert_eq!(
                datapath.conntrack().len(),
                flows,
                "{prog:?}, {config:?}: {:?}",
                datapath.conntrack()
            );
        }
    });
}

/// Inside the subnet, what is the host's own is not a container: a datagram to the
/// bridge's address passes (the host firewall's business); a port published on the
/// bridge's address is translated, as any publish on an address of the host; and the
/// translated flow's next packet finds its flow.
#[test]
fn the_hosts_own_addresses_in_the_subnet_are_not_routed_traffic() {
    in_private_netns("10.0.1.48/24", &[], |prog, datapath| {
        let to_host = Packet::udp(sock(LAN_PEER, 41_000), sock(BRIDGE_ADDR, 7000)).bytes();
        datapath
            .run(prog, &to_host)
            .assert(PASS, Counter::PassNoMatch, &to_host);

        datapath.publish(proto::TCP, BRIDGE_ADDR, LOOPBACK_PUBLISHED, backend_tcp());
        let published = sock(BRIDGE_ADDR, LOOPBACK_PUBLISHED);
        let syn = Packet::tcp(client(), published, SYN);
        datapath.run(prog, &syn.bytes()).assert(
            PASS,
            Counter::DnatNew,
            &syn.with_dst(backend_tcp()).bytes(),
        );
        let ack = Packet::tcp(client(), published, ACK);
        let run = datapath.run(prog, &ack.bytes());
        assert_eq!(run.verdict, PASS, "{prog:?}");
        assert_eq!(run.out, ack.with_dst(backend_tcp()).bytes(), "{prog:?}");
        assert!(
            run.counted.contains(&(Counter::DnatEstablished, 1)),
            "{prog:?}: {:?}",
            run.counted
        );
    });
}

/// Why XDP takes the room for its decided mark before it decides: a frame XDP
/// translated to a container's address is, to the tc program behind it, a packet
/// routed straight to that container. With the mark it passes tc at once; here tc
/// gets it without one, as it would if XDP could mark only after translating.
#[test]
fn tc_drops_a_translated_frame_that_carries_no_mark() {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            private_netns("10.0.1.48/24", &[]);
            let mut datapath = Datapath::configured();
            let translated = Packet::tcp(client(), backend_tcp(), SYN).bytes();
            datapath.run(Prog::IngressTc, &translated).assert(
                DROP,
                Counter::DropRoutedToContainer,
                &translated,
            );
        });
    });
}
