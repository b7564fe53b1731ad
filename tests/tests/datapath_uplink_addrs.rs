//! Issue 8, section 6, on crafted packets: the datapath asks the kernel's routing
//! table (`bpf_fib_lookup`) which addresses are the host's and which source the
//! uplink's route takes now. BPF_PROG_TEST_RUN looks routes up in the calling
//! thread's network namespace, so each test first moves its thread into a namespace
//! of its own (unnamed: it goes when the thread ends), with veths that stand in for
//! the uplink and the bridge. The machine's own interfaces and routes are never read
//! or touched.
//!
//! Needs root and a BPF-capable kernel (6.8 or later for the masquerade source);
//! without them every test fails, saying so.

use std::net::Ipv4Addr;

use netfast_common::{
    Counter,
    ct::{DIR_ORIGINAL, DIR_REPLY, KIND_SNAT},
    proto,
};
use netfast_tests::{
    cases::{DROP, PASS, assert_flow, backend_tcp, client, each_ingress, flow_state, ip_len, sock},
    harness::{
        BACKEND, Datapath, Ifindexes, LAN_PEER, Prog, TCP_PUBLISHED, UDP_PUBLISHED, UPLINK_ADDR,
        flow_key,
    },
    packet::{
        Packet,
        tcp_flags::{ACK, SYN},
    },
    private_netns::{BRIDGE, UPLINK, ifindex, ip, private_netns, sysctl},
};

/// Ingress runs on the namespace's loopback (BPF_PROG_TEST_RUN's default device):
/// XDP's test run takes no veth without an XDP program of its own, and the routing
/// answer does not depend on the interface here.
fn run_ingress(datapath: &mut Datapath, prog: Prog, frame: &[u8]) -> netfast_tests::harness::Run {
    datapath.run(prog, frame)
}

/// Egress: a packet forwarded from the bridge out of the uplink.
fn run_egress(datapath: &mut Datapath, frame: &[u8]) -> netfast_tests::harness::Run {
    let on = Ifindexes {
        ifindex: ifindex(UPLINK),
        ingress_ifindex: ifindex(BRIDGE),
        mark: 0,
    };
    datapath.run_on(Prog::EgressTc, frame, Some(on))
}

// --- "any" publishes: every local address ----------------------------------------

/// 8088/tcp is published on "any". An address added to the host after `up` (here on
/// the bridge stand-in, an interface other than the uplink, as Docker's `--dst-type
/// LOCAL` also takes) answers at once, and stops answering once removed.
#[test]
fn an_address_added_after_up_answers_any_publishes() {
    let later = Ipv4Addr::new(10, 0, 1, 77);
    let published = sock(later, TCP_PUBLISHED);
    each_ingress(|prog| {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                private_netns("10.0.1.48/24", &[]);
                let mut datapath = Datapath::configured();
                // Routed on (the default route): not this host's.
                let before = Packet::tcp(client(), published, SYN).bytes();
                run_ingress(&mut datapath, prog, &before).assert(
                    PASS,
                    Counter::PassNoMatch,
                    &before,
                );

                ip(&["addr", "add", "10.0.1.77/32", "dev", BRIDGE]);
                let syn = Packet::tcp(sock(LAN_PEER, 40_001), published, SYN);
                let run = run_ingress(&mut datapath, prog, &syn.bytes());
                run.assert(PASS, Counter::DnatNew, &syn.with_dst(backend_tcp()).bytes());

                ip(&["addr", "del", "10.0.1.77/32", "dev", BRIDGE]);
                let after = Packet::tcp(sock(LAN_PEER, 40_002), published, SYN).bytes();
                run_ingress(&mut datapath, prog, &after).assert(PASS, Counter::PassNoMatch, &after);
            });
        });
    });
}

/// The address of `up` (CONFIG's) answers without asking the kernel; the uplink's
/// second address does once the kernel calls it local.
#[test]
fn every_address_of_the_uplink_answers_any_publishes() {
    each_ingress(|prog| {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                private_netns(
                    "10.0.1.48/24",
                    &[&["addr", "add", "10.0.1.49/24", "dev", UPLINK]],
                );
                let mut datapath = Datapath::configured();
                for (n, host) in [UPLINK_ADDR, Ipv4Addr::new(10, 0, 1, 49)]
                    .into_iter()
                    .enumerate()
                {
                    let syn = Packet::tcp(
                        sock(LAN_PEER, 40_000 + n as u16),
                        sock(host, TCP_PUBLISHED),
                        SYN,
                    );
                    let run = run_ingress(&mut datapath, prog, &syn.bytes());
                    run.assert(PASS, Counter::DnatNew, &syn.with_dst(backend_tcp()).bytes());
                }
            });
        });
    });
}

/// What the kernel's lookup also answers NOT_FWDED for, and Docker's `--dst-type
/// LOCAL` does not match: the uplink subnet's broadcast (sent to the Ethernet
/// broadcast address), the limited broadcast and multicast pass untouched; a
/// loopback address (the host's own, on lo, but a martian from the wire) is dropped
/// as a loopback publish (`datapath_exposure.rs` has the rest of that rule).
#[test]
fn broadcast_multicast_and_loopback_do_not_answer_any_publishes() {
    each_ingress(|prog| {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                private_netns("10.0.1.48/24", &[]);
                let mut datapath = Datapath::configured();
                for (n, dst) in [
                    Ipv4Addr::new(10, 0, 1, 255),
                    Ipv4Addr::BROADCAST,
                    Ipv4Addr::new(224, 0, 0, 251),
                    Ipv4Addr::LOCALHOST,
                ]
                .into_iter()
                .enumerate()
                {
                    let mut datagram =
                        Packet::udp(sock(LAN_PEER, 41_000 + n as u16), sock(dst, UDP_PUBLISHED))
                            .payload(b"who");
                    if !dst.is_loopback() {
                        datagram.eth_dst = if dst.is_multicast() {
                            [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]
                        } else {
                            [0xff; 6]
                        };
                    }
                    let bytes = datagram.bytes();
                    let run = run_ingress(&mut datapath, prog, &bytes);
                    if dst.is_loopback() {
                        run.assert(DROP, Counter::DropLoopbackPublish, &bytes);
                    } else {
                        run.assert(PASS, Counter::PassNoMatch, &bytes);
                    }
                }
                assert!(datapath.conntrack().is_empty());
            });
        });
    });
}

/// Formerly in datapath_packets.rs: an address that is not the host's is a miss for
/// an "any" publish. Here the kernel's answer is a route, in a namespace of the
/// test's own, not the machine's routing table.
#[test]
fn published_port_on_another_address_is_a_miss() {
    each_ingress(|prog| {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                private_netns("10.0.1.48/24", &[]);
                let mut datapath = Datapath::configured();
                let syn = Packet::tcp(
                    client(),
                    sock(Ipv4Addr::new(10, 0, 1, 99), TCP_PUBLISHED),
                    SYN,
                );
                let bytes = syn.bytes();
                run_ingress(&mut datapath, prog, &bytes).assert(PASS, Counter::PassNoMatch, &bytes);
                assert!(datapath.conntrack().is_empty());
            });
        });
    });
}

// --- masquerade: the uplink's address in force --------------------------------------

/// CONFIG holds the address of `up` (10.0.1.48), but the uplink now has 10.0.1.50:
/// a new flow leaves from 10.0.1.50, and its reply comes back through it. Then the
/// primary address changes again (10.0.1.51 added, 10.0.1.50 deleted, the secondary
/// promoted): the next new flow takes 10.0.1.51, while the flow already going keeps
/// the address it started with, as nf_nat keeps a flow's tuple.
#[test]
fn new_masqueraded_flows_take_the_uplinks_address_in_force() {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            private_netns("10.0.1.50/24", &[]);
            let mut datapath = Datapath::configured();
            let lan = sock(LAN_PEER, 9000);
            // Port 5000 is outside the ephemeral range and is kept.
            let container = sock(BACKEND, 5000);
            let now = Ipv4Addr::new(10, 0, 1, 50);

            let syn = Packet::tcp(container, lan, SYN);
            let run = run_egress(&mut datapath, &syn.bytes());
            let expected = syn.clone().with_src(sock(now, 5000)).bytes();
            run.assert(PASS, Counter::SnatNew, &expected);
            assert_flow(
                &datapath,
                &flow_key(proto::TCP, container, lan),
                flow_state(
                    sock(now, 5000),
                    KIND_SNAT,
                    DIR_ORIGINAL,
                    SYN,
                    1,
                    ip_len(&expected),
                ),
            );
            assert_flow(
                &datapath,
                &flow_key(proto::TCP, lan, sock(now, 5000)),
                flow_state(container, KIND_SNAT, DIR_REPLY, 0, 0, 0),
            );
            let reply = Packet::tcp(lan, sock(now, 5000), SYN | ACK);
            let run = run_ingress(&mut datapath, Prog::IngressTc, &reply.bytes());
            run.assert(PASS, Counter::SnatReply, &reply.with_dst(container).bytes());

            sysctl(&format!("net.ipv4.conf.{UPLINK}.promote_secondaries=1"));
            ip(&["addr", "add", "10.0.1.51/24", "dev", UPLINK]);
            ip(&["addr", "del", "10.0.1.50/24", "dev", UPLINK]);
            let next = Ipv4Addr::new(10, 0, 1, 51);
            let other = sock(BACKEND, 5001);
            let syn = Packet::tcp(other, lan, SYN);
            let run = run_egress(&mut datapath, &syn.bytes());
            run.assert(
                PASS,
                Counter::SnatNew,
                &syn.with_src(sock(next, 5001)).bytes(),
            );

            // Only the decision is asserted: a conntrack that tracks TCP states may also
            // count this ACK as the one that confirms the flow.
            let going = Packet::tcp(container, lan, ACK);
            let run = run_egress(&mut datapath, &going.bytes());
            assert_eq!(run.verdict, PASS);
            assert_eq!(run.out, going.with_src(sock(now, 5000)).bytes());
            assert!(
                run.counted.contains(&(Counter::SnatEstablished, 1)),
                "{:?}",
                run.counted
            );
        });
    });
}

/// The host-socket check asks about the address the flow takes: a host listener on
/// 10.0.1.50:5000 keeps its port, though CONFIG still says 10.0.1.48 (where no
/// socket holds 5000, so a check there would hand the port to the container).
#[test]
fn the_host_socket_check_uses_the_address_in_force() {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            private_netns("10.0.1.50/24", &[]);
            // A listener on the uplink's address now, port 5000: replies from the far
            // side to 10.0.1.50:5000 belong to it.
            let listener = std::net::TcpListener::bind("10.0.1.50:5000").expect("listen on 5000");
            let mut datapath = Datapath::configured();
            let syn = Packet::tcp(sock(BACKEND, 5000), sock(LAN_PEER, 9000), SYN);
            let run = run_egress(&mut datapath, &syn.bytes());
            assert!(
                run.counted.contains(&(Counter::SnatPortHostSocket, 1))
                    && run.counted.contains(&(Counter::SnatNew, 1)),
                "{:?}",
                run.counted
            );
            assert_eq!(&run.out[26..30], &[10, 0, 1, 50], "source address");
            let port = u16::from_be_bytes([run.out[34], run.out[35]]);
            assert_ne!(port, 5000, "the host's bound port must not be claimed");
            drop(listener);
        });
    });
}

/// When the route to the far side leads out of another interface than the one the
/// program runs on, or the packet came from no interface, the address of `up` is
/// taken.
#[test]
fn without_a_route_out_of_the_uplink_the_address_of_up_is_kept() {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            private_netns("10.0.1.50/24", &[]);
            let mut datapath = Datapath::configured();
            let elsewhere = sock(Ipv4Addr::new(198, 51, 100, 7), 9000);
            let syn = Packet::tcp(sock(BACKEND, 5000), elsewhere, SYN);
            let run = run_egress(&mut datapath, &syn.bytes());
            run.assert(
                PASS,
                Counter::SnatNew,
                &syn.with_src(sock(UPLINK_ADDR, 5000)).bytes(),
            );

            let syn = Packet::tcp(sock(BACKEND, 5001), sock(LAN_PEER, 9000), SYN);
            let run = datapath.run(Prog::EgressTc, &syn.bytes());
            run.assert(
                PASS,
                Counter::SnatNew,
                &syn.with_src(sock(UPLINK_ADDR, 5001)).bytes(),
            );
        });
    });
}
