//! The fast path on crafted packets, through BPF_PROG_TEST_RUN: the verdict
//! (TC_ACT_REDIRECT when the frame takes the fast path), the exact output bytes (every
//! checksum of the expected frame computed from scratch: the TTL one lower, the MACs
//! of the container's `ENDPOINTS` entry or of the route's next hop), the counters that
//! moved, and the mark the uplink's egress passes by.
//!
//! Toward the uplink the answer depends on the routing and neighbour tables
//! (`bpf_fib_lookup`), so those tests build a network namespace of their own
//! (`private_netns`). A test run does not send a redirected frame anywhere.
//! Needs root and a BPF-capable kernel; without them every test fails, saying so.

use std::net::{Ipv4Addr, SocketAddrV4};

use netfast_common::{Counter, DatapathConfig, Endpoint, names::FAST_PATH_MARK};
use netfast_tests::{
    harness::{
        BACKEND, Datapath, Ifindexes, LAN_PEER, Prog, TCP_BACKEND_PORT, TCP_PUBLISHED,
        UDP_BACKEND_PORT, UDP_PUBLISHED, UPLINK_ADDR, Verdict, addr_be, seed_config,
    },
    packet::{
        Packet,
        tcp_flags::{ACK, SYN},
    },
    private_netns::{BRIDGE, UPLINK, ifindex, ip, private_netns},
};

const BACKEND_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x02];
const BRIDGE_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0x64];
/// The uplink stand-in's MAC and the LAN peer's, set by `uplink_netns`.
const UPLINK_MAC: [u8; 6] = [0x02, 0x0a, 0, 0, 0, 0x30];
const LAN_PEER_MAC: [u8; 6] = [0x02, 0x0a, 0, 0, 0, 0x1a];
/// A frame from outside as it arrives: to the MAC of the device the test run takes it
/// in on. That is the loopback, whose MAC is all zeros, so `eth_type_trans` makes it
/// PACKET_HOST, as a frame to the uplink's MAC is on the uplink.
const LAN_FRAME_MACS: ([u8; 6], [u8; 6]) = ([0; 6], LAN_PEER_MAC);

const LAN_PORT: u16 = 40_000;
/// The loopback's ifindex: an interface every namespace has, with an MTU (65536) that
/// never sends a test frame back to the normal path.
const LO: u32 = 1;

fn sock(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

fn lan_client() -> SocketAddrV4 {
    sock(LAN_PEER, LAN_PORT)
}

fn backend_tcp() -> SocketAddrV4 {
    sock(BACKEND, TCP_BACKEND_PORT)
}

/// The seed's CONFIG with the fast path on and the uplink at `uplink_ifindex`.
fn fast_config(uplink_ifindex: u32) -> DatapathConfig {
    DatapathConfig {
        fast_path: 1,
        uplink_ifindex,
        ..seed_config()
    }
}

/// The seed's publishes, the fast path on, the backend an endpoint behind `veth`.
fn datapath(uplink_ifindex: u32, veth: u32) -> Datapath {
    let mut dp = Datapath::configured();
    dp.write_config(&fast_config(uplink_ifindex));
    dp.add_endpoint(
        BACKEND,
        Endpoint {
            ifindex: veth,
            gateway: addr_be(Ipv4Addr::new(172, 16, 0, 100)),
            mac: BACKEND_MAC,
            host_mac: BRIDGE_MAC,
        },
    );
    dp
}

fn with_macs(mut pkt: Packet, (dst, src): ([u8; 6], [u8; 6])) -> Packet {
    pkt.eth_dst = dst;
    pkt.eth_src = src;
    pkt
}

/// What the fast path hands the backend: translated, the TTL one lower, from the
/// bridge's MAC to the backend's.
fn into_backend(pkt: Packet) -> Packet {
    let ttl = pkt.ttl - 1;
    with_macs(pkt, (BACKEND_MAC, BRIDGE_MAC)).with_ttl(ttl)
}

// --- toward a container: uplink ingress -------------------------------------------

/// A new published flow and its next packet: DNAT, then straight into the backend.
#[test]
fn a_published_flow_goes_into_its_container_with_the_ttl_one_lower() {
    let mut dp = datapath(0, LO);
    let syn = with_macs(
        Packet::tcp(lan_client(), sock(UPLINK_ADDR, TCP_PUBLISHED), SYN),
        LAN_FRAME_MACS,
    );
    let run = dp.run(Prog::IngressTc, &syn.bytes());
    let expected = into_backend(syn.clone().with_dst(backend_tcp()));
    run.assert_counts(
        Verdict::Redirect,
        &[(Counter::DnatNew, 1), (Counter::FastPathToContainer, 1)],
        &expected.bytes(),
    );

    let ack = with_macs(
        Packet::tcp(lan_client(), sock(UPLINK_ADDR, TCP_PUBLISHED), ACK),
        LAN_FRAME_MACS,
    );
    let run = dp.run(Prog::IngressTc, &ack.bytes());
    run.assert_counts(
        Verdict::Redirect,
        &[
            (Counter::DnatEstablished, 1),
            (Counter::FastPathToContainer, 1),
        ],
        &into_backend(ack.with_dst(backend_tcp())).bytes(),
    );
}

/// XDP translates and marks the frame for the tc program behind it, which sends it
/// into the container: XDP counts the translation, and the mark says "to a container".
#[test]
fn xdp_marks_a_frame_translated_toward_a_container() {
    let mut dp = datapath(0, LO);
    let syn = Packet::udp(lan_client(), sock(UPLINK_ADDR, UDP_PUBLISHED));
    let run = dp.run(Prog::IngressXdp, &syn.bytes());
    run.assert(
        Verdict::Pass,
        Counter::DnatNew,
        &syn.with_dst(sock(BACKEND, UDP_BACKEND_PORT)).bytes(),
    );
    assert_eq!(
        run.xdp_meta,
        netfast_common::names::XDP_DECIDED_TO_CONTAINER_MARK.to_ne_bytes(),
        "the to-container mark"
    );
}

/// A frame whose TTL would expire on the host's hop keeps the normal path (the host
/// answers with time exceeded): translated, TTL and MACs untouched.
#[test]
fn a_ttl_that_would_expire_falls_back_translated() {
    let mut dp = datapath(0, LO);
    let syn = with_macs(
        Packet::tcp(lan_client(), sock(UPLINK_ADDR, TCP_PUBLISHED), SYN),
        LAN_FRAME_MACS,
    )
    .with_ttl(1);
    let run = dp.run(Prog::IngressTc, &syn.bytes());
    run.assert_counts(
        Verdict::Pass,
        &[(Counter::DnatNew, 1), (Counter::FastPathFallbackTtl, 1)],
        &syn.with_dst(backend_tcp()).bytes(),
    );
}

/// A backend netfast has no endpoint for keeps the normal path.
#[test]
fn a_destination_without_an_endpoint_falls_back_translated() {
    let mut dp = Datapath::configured();
    dp.write_config(&fast_config(0));
    let syn = with_macs(
        Packet::tcp(lan_client(), sock(UPLINK_ADDR, TCP_PUBLISHED), SYN),
        LAN_FRAME_MACS,
    );
    let run = dp.run(Prog::IngressTc, &syn.bytes());
    run.assert_counts(
        Verdict::Pass,
        &[
            (Counter::DnatNew, 1),
            (Counter::FastPathFallbackNoEndpoint, 1),
        ],
        &syn.with_dst(backend_tcp()).bytes(),
    );
}

/// A datagram larger than the container link's MTU keeps the normal path, where the
/// host fragments it or answers "fragmentation needed"; one that fits goes in.
#[test]
fn a_frame_over_the_container_links_mtu_falls_back() {
    in_own_netns(|| {
        private_netns("10.0.1.48/24", &[]);
        ip(&[
            "link", "add", "nfct0", "type", "veth", "peer", "name", "nfct1",
        ]);
        ip(&["link", "set", "nfct0", "mtu", "1000"]);
        let mut dp = datapath(0, ifindex("nfct0"));
        let to = sock(UPLINK_ADDR, UDP_PUBLISHED);
        let backend = sock(BACKEND, UDP_BACKEND_PORT);

        let mut big = with_macs(Packet::udp(lan_client(), to), LAN_FRAME_MACS);
        big.payload = vec![0x5a; 1200];
        let run = dp.run(Prog::IngressTc, &big.bytes());
        run.assert_counts(
            Verdict::Pass,
            &[(Counter::DnatNew, 1), (Counter::FastPathFallbackMtu, 1)],
            &big.with_dst(backend).bytes(),
        );

        let mut small = with_macs(Packet::udp(lan_client(), to), LAN_FRAME_MACS);
        small.payload = vec![0x5a; 900];
        let run = dp.run(Prog::IngressTc, &small.bytes());
        run.assert_counts(
            Verdict::Redirect,
            &[
                (Counter::DnatEstablished, 1),
                (Counter::FastPathToContainer, 1),
            ],
            &into_backend(small.with_dst(backend)).bytes(),
        );
    });
}

/// With `fast_path` 0 nothing changes from before the fast path.
#[test]
fn with_the_fast_path_off_a_published_flow_takes_the_normal_path() {
    let mut dp = datapath(0, LO);
    dp.write_config(&DatapathConfig {
        fast_path: 0,
        ..fast_config(0)
    });
    let syn = Packet::tcp(lan_client(), sock(UPLINK_ADDR, TCP_PUBLISHED), SYN);
    let run = dp.run(Prog::IngressTc, &syn.bytes());
    run.assert(
        Verdict::Pass,
        Counter::DnatNew,
        &syn.with_dst(backend_tcp()).bytes(),
    );
}

// --- toward the uplink: the container's veth ---------------------------------------

/// Runs `test` on a thread of its own, which `test` moves into a network namespace
/// of its own (`private_netns` unshares the calling thread): no other test sees its
/// routes and neighbours, and it goes with the thread.
fn in_own_netns(test: impl FnOnce() + Send) {
    std::thread::scope(|scope| {
        scope.spawn(test);
    });
}

/// A namespace with the uplink and bridge stand-ins, known MACs, and the LAN peer's
/// neighbour entry on the uplink. Returns (uplink, bridge) ifindexes.
fn uplink_netns() -> (u32, u32) {
    private_netns("10.0.1.48/24", &[]);
    ip(&["link", "set", UPLINK, "address", "02:0a:00:00:00:30"]);
    ip(&[
        "neigh",
        "replace",
        "10.0.1.26",
        "lladdr",
        "02:0a:00:00:00:1a",
        "dev",
        UPLINK,
        "nud",
        "permanent",
    ]);
    (ifindex(UPLINK), ifindex(BRIDGE))
}

/// On a container's host-side veth (here the bridge stand-in, which has the subnet's
/// route), as tcx ingress runs it.
fn on_veth(bridge: u32) -> Option<Ifindexes> {
    Some(Ifindexes {
        ifindex: bridge,
        ingress_ifindex: bridge,
        mark: 0,
    })
}

/// A SYN from the LAN to the published TCP port: the flow the backend's replies in
/// the container-side tests belong to.
fn open_published_tcp(dp: &mut Datapath) {
    let syn = with_macs(
        Packet::tcp(lan_client(), sock(UPLINK_ADDR, TCP_PUBLISHED), SYN),
        LAN_FRAME_MACS,
    );
    let run = dp.run(Prog::IngressTc, &syn.bytes());
    assert_eq!(
        run.verdict,
        Verdict::Redirect,
        "the SYN into the backend: {run:?}"
    );
}

/// A frame as the backend sends it toward its gateway.
fn from_backend(pkt: Packet) -> Packet {
    with_macs(pkt, (BRIDGE_MAC, BACKEND_MAC))
}

/// A backend's reply: reverse DNAT on the veth, then out of the uplink with the
/// route's MACs, the TTL one lower, marked for the uplink's egress, which passes it.
#[test]
fn a_backends_reply_goes_out_of_the_uplink_translated() {
    in_own_netns(|| {
        let (uplink, bridge) = uplink_netns();
        let mut dp = datapath(uplink, bridge);
        let published = sock(UPLINK_ADDR, TCP_PUBLISHED);
        open_published_tcp(&mut dp);

        let syn_ack = from_backend(Packet::tcp(backend_tcp(), lan_client(), SYN | ACK));
        let run = dp.run_on(Prog::ContainerTc, &syn_ack.bytes(), on_veth(bridge));
        let expected = with_macs(
            syn_ack.with_src(published).with_ttl(63),
            (LAN_PEER_MAC, UPLINK_MAC),
        );
        run.assert_counts(
            Verdict::Redirect,
            &[(Counter::DnatReply, 1), (Counter::FastPathToUplink, 1)],
            &expected.bytes(),
        );
        assert_eq!(run.skb_mark, Some(FAST_PATH_MARK), "the fast path's mark");

        // The uplink's egress passes the marked frame as it is, and clears the mark.
        let on_uplink = Ifindexes {
            ifindex: uplink,
            ingress_ifindex: bridge,
            mark: FAST_PATH_MARK,
        };
        let run = dp.run_on(Prog::EgressTc, &expected.bytes(), Some(on_uplink));
        run.assert(
            Verdict::Pass,
            Counter::PassFastPathTranslated,
            &expected.bytes(),
        );
        assert_eq!(run.skb_mark, Some(0), "the mark is cleared");
    });
}

/// The first packet of a masqueraded flow opens it on the normal path (the uplink's
/// egress creates it); the container's next packets leave on the fast path, SNAT-ed.
#[test]
fn a_masqueraded_flow_opens_on_the_normal_path_then_takes_the_fast_path() {
    in_own_netns(|| {
        let (uplink, bridge) = uplink_netns();
        let mut dp = datapath(uplink, bridge);
        // A port outside the host's ephemeral range: the SNAT keeps it.
        let container = sock(BACKEND, 5000);
        let remote = sock(LAN_PEER, 9000);
        let syn = from_backend(Packet::tcp(container, remote, SYN));
        let run = dp.run_on(Prog::ContainerTc, &syn.bytes(), on_veth(bridge));
        run.assert(Verdict::Pass, Counter::PassContainerToUplink, &syn.bytes());

        let on_uplink = Ifindexes {
            ifindex: uplink,
            ingress_ifindex: bridge,
            mark: 0,
        };
        let masqueraded = sock(UPLINK_ADDR, 5000);
        let run = dp.run_on(Prog::EgressTc, &syn.bytes(), Some(on_uplink));
        run.assert(
            Verdict::Pass,
            Counter::SnatNew,
            &syn.with_src(masqueraded).bytes(),
        );

        let ack = from_backend(Packet::tcp(container, remote, ACK));
        let run = dp.run_on(Prog::ContainerTc, &ack.bytes(), on_veth(bridge));
        run.assert_counts(
            Verdict::Redirect,
            &[
                (Counter::SnatEstablished, 1),
                (Counter::FastPathToUplink, 1),
            ],
            &with_macs(
                ack.with_src(masqueraded).with_ttl(63),
                (LAN_PEER_MAC, UPLINK_MAC),
            )
            .bytes(),
        );
    });
}

/// Without the next hop's MAC, and with a TTL that would expire, a reply keeps the
/// normal path untranslated (the uplink's egress translates it), and its flow is not
/// touched on the veth.
#[test]
fn without_a_neighbour_or_with_ttl_1_a_reply_falls_back_untranslated() {
    in_own_netns(|| {
        let (uplink, bridge) = uplink_netns();
        let mut dp = datapath(uplink, bridge);
        open_published_tcp(&mut dp);
        let reply = from_backend(Packet::tcp(backend_tcp(), lan_client(), SYN | ACK));

        let expiring = reply.clone().with_ttl(1);
        let run = dp.run_on(Prog::ContainerTc, &expiring.bytes(), on_veth(bridge));
        run.assert_counts(
            Verdict::Pass,
            &[
                (Counter::FastPathFallbackTtl, 1),
                (Counter::PassContainerToUplink, 1),
            ],
            &expiring.bytes(),
        );

        ip(&["neigh", "del", "10.0.1.26", "dev", UPLINK]);
        let run = dp.run_on(Prog::ContainerTc, &reply.bytes(), on_veth(bridge));
        run.assert_counts(
            Verdict::Pass,
            &[
                (Counter::FastPathFallbackNoNeigh, 1),
                (Counter::PassContainerToUplink, 1),
            ],
            &reply.bytes(),
        );
        let backend_reply = dp
            .flow(&netfast_tests::harness::flow_key(
                netfast_common::proto::TCP,
                backend_tcp(),
                lan_client(),
            ))
            .expect("the flow's reply half");
        assert_eq!(backend_reply.packets, 0, "the veth left the flow untouched");
    });
}

/// A packet whose route does not lead out of the uplink (to another container, over
/// the bridge) is hairpin's business: the tail call decides on it, as without the
/// fast path.
#[test]
fn a_packet_not_routed_out_of_the_uplink_goes_on_to_hairpin() {
    in_own_netns(|| {
        let (uplink, bridge) = uplink_netns();
        let mut dp = datapath(uplink, bridge);
        let to_neighbour = from_backend(Packet::tcp(
            sock(BACKEND, 5000),
            sock(Ipv4Addr::new(172, 16, 0, 103), 80),
            SYN,
        ));
        let run = dp.run_on(Prog::ContainerTc, &to_neighbour.bytes(), on_veth(bridge));
        run.assert(
            Verdict::Pass,
            Counter::PassContainerNotPublished,
            &to_neighbour.bytes(),
        );
    });
}

/// A first fragment keeps the normal path, translated, as its later fragments do (a
/// host that reassembles must see them all); a broadcast frame too, which the host's
/// forwarding then drops.
#[test]
fn a_fragment_and_a_broadcast_frame_keep_the_normal_path() {
    let mut dp = datapath(0, LO);
    let to = sock(UPLINK_ADDR, UDP_PUBLISHED);
    let backend = sock(BACKEND, UDP_BACKEND_PORT);
    let mut datagram = with_macs(Packet::udp(lan_client(), to), LAN_FRAME_MACS);
    datagram.payload = vec![0x5a; 64];
    let first = datagram.fragments(32).remove(0);
    let run = dp.run(Prog::IngressTc, &first);
    assert_eq!(
        run.verdict,
        Verdict::Pass,
        "a first fragment is passed, not redirected"
    );
    assert_eq!(
        run.counted,
        [(Counter::DnatNew, 1)],
        "translated, no fast-path counter"
    );

    let broadcast = with_macs(
        Packet::udp(sock(LAN_PEER, 40_001), to),
        ([0xff; 6], LAN_PEER_MAC),
    );
    let run = dp.run(Prog::IngressTc, &broadcast.bytes());
    run.assert_counts(
        Verdict::Pass,
        &[(Counter::DnatNew, 1), (Counter::FastPathFallbackNotHost, 1)],
        &broadcast.with_dst(backend).bytes(),
    );
}

/// A packet with a container's source address from another container's veth (a
/// spoofed source) is no fast-path packet: it goes on to hairpin and the host's stack
/// (and its rp_filter), untranslated.
#[test]
fn a_spoofed_source_is_left_to_the_host() {
    in_own_netns(|| {
        let (uplink, bridge) = uplink_netns();
        let mut dp = datapath(uplink, bridge);
        open_published_tcp(&mut dp);
        let spoofed = from_backend(Packet::tcp(backend_tcp(), lan_client(), SYN | ACK));
        let elsewhere = Some(Ifindexes {
            ifindex: uplink,
            ingress_ifindex: uplink,
            mark: 0,
        });
        let run = dp.run_on(Prog::ContainerTc, &spoofed.bytes(), elsewhere);
        run.assert(
            Verdict::Pass,
            Counter::PassContainerNotPublished,
            &spoofed.bytes(),
        );
    });
}

/// A datagram over the MTU of the link out (here the uplink's) keeps the normal path
/// untranslated, where the host's forwarding answers "fragmentation needed".
#[test]
fn a_reply_over_the_routes_mtu_falls_back() {
    in_own_netns(|| {
        let (uplink, bridge) = uplink_netns();
        ip(&["link", "set", UPLINK, "mtu", "1000"]);
        let mut dp = datapath(uplink, bridge);
        let syn = with_macs(
            Packet::udp(lan_client(), sock(UPLINK_ADDR, UDP_PUBLISHED)),
            LAN_FRAME_MACS,
        );
        dp.run(Prog::IngressTc, &syn.bytes());
        let mut reply = from_backend(Packet::udp(sock(BACKEND, UDP_BACKEND_PORT), lan_client()));
        reply.payload = vec![0x5a; 1200];
        let run = dp.run_on(Prog::ContainerTc, &reply.bytes(), on_veth(bridge));
        run.assert_counts(
            Verdict::Pass,
            &[
                (Counter::FastPathFallbackMtu, 1),
                (Counter::PassContainerToUplink, 1),
            ],
            &reply.bytes(),
        );
    });
}

/// A host socket's own frame with the fast path's mark value (SO_MARK) is no fast-path
/// frame: only a forwarded one can be. The egress program decides on it as usual.
#[test]
fn the_mark_alone_does_not_pass_the_egress() {
    in_own_netns(|| {
        let (uplink, _) = uplink_netns();
        let mut dp = datapath(uplink, LO);
        let own = Packet::tcp(sock(UPLINK_ADDR, 40_000), sock(LAN_PEER, 80), SYN);
        let sent_by_host = Ifindexes {
            ifindex: uplink,
            ingress_ifindex: 0,
            mark: FAST_PATH_MARK,
        };
        let run = dp.run_on(Prog::EgressTc, &own.bytes(), Some(sent_by_host));
        run.assert(Verdict::Pass, Counter::PassNoMatch, &own.bytes());
    });
}
