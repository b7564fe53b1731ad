//! IPv4 fragments through BPF_PROG_TEST_RUN: every fragment of a datagram is
//! translated the way its first fragment was, in both directions, for published
//! ports and for the masquerade. Expected fragments are cut from the translated
//! datagram built from scratch, so every checksum is independent of the datapath.
//!
//! Needs root and a BPF-capable kernel; without them every test fails, saying so.

use std::net::SocketAddrV4;

use netfast_common::Counter;
use netfast_tests::{
    cases::{DROP, PASS, client, each_ingress, lan_server, sock},
    harness::{BACKEND, Datapath, LAN_PEER, Prog, UDP_BACKEND_PORT, UDP_PUBLISHED, UPLINK_ADDR},
    packet::{ETH_LEN, Packet, internet_checksum},
};

/// 3000 bytes of payload, not periodic, so a misplaced fragment shows.
fn big_payload() -> Vec<u8> {
    (0..3000u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Fragment payloads of 1480 bytes: what a 1500-byte MTU gives.
const CHUNK: usize = 1480;

/// Runs each fragment through `prog` and asserts its bytes and decision: `first` for
/// the first fragment, `fragment_translated` for the others.
#[track_caller]
fn run_fragments(
    datapath: &mut Datapath,
    prog: Prog,
    sent: &Packet,
    expected: &Packet,
    first: &[(Counter, u64)],
) {
    let (sent, expected) = (sent.fragments(CHUNK), expected.fragments(CHUNK));
    assert!(sent.len() >= 2, "the case cuts the datagram into fragments");
    for (i, (frame, want)) in sent.iter().zip(&expected).enumerate() {
        let counted: &[(Counter, u64)] = if i == 0 {
            first
        } else {
            &[(Counter::FragmentTranslated, 1)]
        };
        datapath.run(prog, frame).assert_counts(PASS, counted, want);
    }
}

#[test]
fn a_datagram_to_a_published_port_and_its_answer() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let client = sock(LAN_PEER, 33_333);
        let published = sock(UPLINK_ADDR, UDP_PUBLISHED);
        let backend = sock(BACKEND, UDP_BACKEND_PORT);
        let query = Packet::udp(client, published)
            .payload(&big_payload())
            .with_ip_id(0x4242);
        run_fragments(
            &mut datapath,
            prog,
            &query,
            &query.clone().with_dst(backend),
            &[(Counter::DnatNew, 1)],
        );

        let answer = Packet::udp(backend, client)
            .payload(&big_payload())
            .with_ip_id(0x0101);
        run_fragments(
            &mut datapath,
            Prog::EgressTc,
            &answer,
            &answer.clone().with_src(published),
            // The first reply makes the flow assured.
            &[(Counter::DnatReply, 1), (Counter::ConntrackAssured, 1)],
        );
    });
}

#[test]
fn a_masqueraded_datagram_and_its_answer() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        // Inside the SNAT range, so the port is kept and the expected bytes are known.
        let container = sock(BACKEND, 61_234);
        let masqueraded = sock(UPLINK_ADDR, 61_234);
        let far = sock(LAN_PEER, 7000);
        let out = Packet::udp(container, far)
            .payload(&big_payload())
            .with_ip_id(0x7777);
        run_fragments(
            &mut datapath,
            Prog::EgressTc,
            &out,
            &out.clone().with_src(masqueraded),
            &[(Counter::SnatNew, 1)],
        );
        let back = Packet::udp(far, masqueraded)
            .payload(&big_payload())
            .with_ip_id(0x7777);
        run_fragments(
            &mut datapath,
            prog,
            &back,
            &back.clone().with_dst(container),
            // The first reply makes the flow assured.
            &[(Counter::SnatReply, 1), (Counter::ConntrackAssured, 1)],
        );
    });
}

/// `ping -s 2000`: the echo identifier is in the first fragment only.
#[test]
fn a_fragmented_ping_and_its_reply() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let id = 61_500; // inside the range: kept
        let payload = vec![0x5a; 2000];
        let request = Packet::icmp_echo_request(BACKEND, LAN_PEER, id, 1).payload(&payload);
        run_fragments(
            &mut datapath,
            Prog::EgressTc,
            &request,
            &request.clone().with_src_ip(UPLINK_ADDR),
            &[(Counter::SnatNew, 1)],
        );
        let reply = Packet::icmp_echo_reply(LAN_PEER, UPLINK_ADDR, id, 1).payload(&payload);
        run_fragments(
            &mut datapath,
            prog,
            &reply,
            &reply.clone().with_dst_ip(BACKEND),
            // The first reply makes the flow assured.
            &[(Counter::SnatReply, 1), (Counter::ConntrackAssured, 1)],
        );
    });
}

/// A later fragment whose first fragment has not been seen: ingress passes it
/// untouched (the host may be its destination); egress drops it when it comes from
/// the subnet, since it cannot be translated and must not leak a private address.
#[test]
fn a_later_fragment_before_its_first() {
    let datagram = |src: SocketAddrV4, dst: SocketAddrV4| {
        Packet::udp(src, dst)
            .payload(&big_payload())
            .with_ip_id(0x1357)
            .fragments(CHUNK)
    };
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let later = &datagram(client(), sock(UPLINK_ADDR, UDP_PUBLISHED))[1];
        datapath
            .run(prog, later)
            .assert(PASS, Counter::PassFragmentUntracked, later);
        assert!(datapath.conntrack().is_empty());
    });
    let mut datapath = Datapath::configured();
    let from_subnet = &datagram(sock(BACKEND, 5000), lan_server())[2];
    datapath.run(Prog::EgressTc, from_subnet).assert(
        DROP,
        Counter::DropFragmentFromSubnet,
        from_subnet,
    );
    let from_host = &datagram(sock(UPLINK_ADDR, 5000), lan_server())[1];
    datapath
        .run(Prog::EgressTc, from_host)
        .assert(PASS, Counter::PassFragmentUntracked, from_host);
}

/// A datagram that matches no flow: its first fragment is a plain miss, and the later
/// ones find no record, so nothing is changed.
#[test]
fn fragments_of_an_untranslated_datagram_pass_untouched() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let fragments = Packet::udp(client(), sock(UPLINK_ADDR, 5300))
            .payload(&big_payload())
            .fragments(CHUNK);
        datapath
            .run(prog, &fragments[0])
            .assert(PASS, Counter::PassNoMatch, &fragments[0]);
        for later in &fragments[1..] {
            datapath
                .run(prog, later)
                .assert(PASS, Counter::PassFragmentUntracked, later);
        }
        assert!(datapath.conntrack().is_empty());
    });
}

/// A record is keyed by the datagram: a later fragment with another IP id, or from
/// another source, does not take the translation.
#[test]
fn a_record_applies_to_its_own_datagram_only() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let published = sock(UPLINK_ADDR, UDP_PUBLISHED);
        let query = Packet::udp(client(), published)
            .payload(&big_payload())
            .with_ip_id(0x2222);
        let fragments = query.fragments(CHUNK);
        datapath
            .run(prog, &fragments[0])
            .assert_counted(Counter::DnatNew);
        let other_id = query.clone().with_ip_id(0x2223).fragments(CHUNK);
        datapath
            .run(prog, &other_id[1])
            .assert(PASS, Counter::PassFragmentUntracked, &other_id[1]);
        let other_source = query
            .with_src(sock(LAN_PEER, 33_334))
            .with_src_ip(std::net::Ipv4Addr::new(10, 0, 1, 27))
            .fragments(CHUNK);
        datapath.run(prog, &other_source[1]).assert(
            PASS,
            Counter::PassFragmentUntracked,
            &other_source[1],
        );
    });
}

/// Found by the fuzz run: a later fragment whose IHL claims more header than the frame
/// holds is truncated, like any other packet, and never translated.
#[test]
fn a_later_fragment_shorter_than_its_header_is_truncated() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let query = Packet::udp(client(), sock(UPLINK_ADDR, UDP_PUBLISHED))
            .payload(&big_payload())
            .with_ip_id(0x3333);
        let fragments = query.fragments(CHUNK);
        datapath
            .run(prog, &fragments[0])
            .assert_counted(Counter::DnatNew);
        // IHL 13 (52 bytes) on a later fragment cut to 28 bytes of IP.
        let mut later = fragments[1][..ETH_LEN + 28].to_vec();
        later[ETH_LEN] = 0x4d;
        later[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&28u16.to_be_bytes());
        later[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&[0, 0]);
        let check = internet_checksum(&later[ETH_LEN..ETH_LEN + 20]);
        later[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&check.to_be_bytes());
        datapath
            .run(prog, &later)
            .assert(DROP, Counter::DropTruncated, &later);
    });
}

/// Found in review (RFC 1858): a first fragment too small for the TCP header, padded
/// to the Ethernet minimum, must not be translated with its checksum "updated" in the
/// padding while the real checksum travels in the next fragment. It is truncated.
#[test]
fn a_first_fragment_too_small_for_its_tcp_header_is_truncated() {
    each_ingress(|prog| {
        let mut datapath = Datapath::configured();
        let syn = Packet::tcp(
            client(),
            sock(UPLINK_ADDR, 8088),
            netfast_tests::packet::tcp_flags::SYN,
        )
        .payload(&[0x11; 100])
        .with_ip_id(2001);
        // 16 bytes of TCP in the first fragment, then Ethernet padding to 60 bytes.
        let mut first = syn.fragments(16).remove(0);
        assert_eq!(first.len(), ETH_LEN + 20 + 16);
        first.resize(60, 0);
        datapath
            .run(prog, &first)
            .assert(DROP, Counter::DropTruncated, &first);
        assert!(datapath.conntrack().is_empty(), "{prog:?}: no flow");
    });
}
