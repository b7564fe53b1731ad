//! Conntrack GC against a sandbox instance's pinned `CONNTRACK`: one pass over 100k
//! flows (200k entries) removes exactly the expired pairs; and with 1-2 s timeouts under
//! `netfast run`, a flow that keeps sending survives pass after pass while an idle one
//! goes.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod daemon;

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use daemon::Daemon;
use netfast::{
    config::IngressMode,
    conntrack::{monotonic_ns, pair_flows, raw_addr},
    gc::{self, Timeouts},
};
use netfast_common::{
    CtEntry, CtTuple,
    ct::{DIR_ORIGINAL, DIR_REPLY, KIND_DNAT, KIND_ROUTED, KIND_SNAT},
    names::MAP_CONNTRACK,
    proto,
};
use nix::sys::signal::Signal;
use support::{Background, Sandbox, exec_ok};

const FLOWS: u32 = 100_000;
const ORPHANS: u32 = 100;
const S: u64 = 1_000_000_000;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

fn timeouts() -> Timeouts {
    let secs = Duration::from_secs;
    Timeouts {
        tcp_syn_sent: secs(20),
        tcp_syn_recv: secs(20),
        tcp_established: secs(100),
        tcp_fin_wait: secs(5),
        tcp_close_wait: secs(5),
        tcp_last_ack: secs(5),
        tcp_time_wait: secs(5),
        tcp_close: secs(5),
        udp: secs(30),
        icmp: secs(10),
    }
}

/// Flow `i`'s shape: protocol, kind, flags of each half, idle seconds of each half,
/// and whether the GC must remove it under [`timeouts`]. Half of the shapes expire,
/// and so do exactly half of `FLOWS`.
fn shape(i: u32) -> (u8, u8, (u8, u8), (u64, u64), bool) {
    match i % 12 {
        0 => (
            proto::TCP,
            KIND_DNAT,
            (SYN | ACK, SYN | ACK),
            (50, 50),
            false,
        ),
        1 => (
            proto::TCP,
            KIND_DNAT,
            (SYN | ACK, SYN | ACK),
            (200, 150),
            true,
        ),
        2 => (proto::TCP, KIND_DNAT, (SYN, 0), (30, 30), true),
        3 => (proto::TCP, KIND_SNAT, (SYN, 0), (10, 10), false),
        4 => (
            proto::TCP,
            KIND_SNAT,
            (SYN | ACK | RST, SYN | ACK),
            (6, 6),
            true,
        ),
        5 => (proto::UDP, KIND_DNAT, (0, 0), (40, 40), true),
        // The original half is old, the reply half fresh: the pair lives.
        6 => (proto::UDP, KIND_SNAT, (0, 0), (40, 1), false),
        7 => (proto::ICMP, KIND_SNAT, (0, 0), (11, 11), true),
        8 => (proto::ICMP, KIND_SNAT, (0, 0), (1, 1), false),
        // Routed flows (allow_direct_routing) expire like any other.
        10 => (
            proto::TCP,
            KIND_ROUTED,
            (SYN | ACK, SYN | ACK),
            (200, 150),
            true,
        ),
        11 => (proto::UDP, KIND_ROUTED, (0, 0), (20, 2), false),
        _ => (
            proto::TCP,
            KIND_DNAT,
            (SYN | ACK | FIN, SYN | ACK),
            (4, 4),
            false,
        ),
    }
}

fn be(a: Ipv4Addr) -> u32 {
    raw_addr(a)
}

/// Both entries of flow `i`, built the way the datapath builds them.
fn flow(i: u32, now: u64) -> [(CtTuple, CtEntry); 2] {
    let (proto, kind, (oflags, rflags), (oidle, ridle), _) = shape(i);
    let client = be(Ipv4Addr::from(0x6440_0000 + i)); // 100.64.0.0/10
    let port = |p: u16| p.to_be();
    let (original, nat_addr, nat_port) = if kind == KIND_DNAT {
        let key = CtTuple {
            src_addr: client,
            dst_addr: be(Ipv4Addr::new(10, 0, 1, 48)),
            src_port: port(40_000 + (i % 20_000) as u16),
            dst_port: port(8088),
            proto,
            _pad: [0; 3],
        };
        (key, be(Ipv4Addr::new(172, 16, 0, 102)), port(80))
    } else if kind == KIND_ROUTED {
        // From outside to a container's own address, which is what it writes.
        let container = be(Ipv4Addr::new(172, 16, 0, 103));
        let key = CtTuple {
            src_addr: client,
            dst_addr: container,
            src_port: port(30_000 + (i % 20_000) as u16),
            dst_port: port(22),
            proto,
            _pad: [0; 3],
        };
        (key, container, port(22))
    } else {
        // Container side: one address per 60000 flows, ports unique within it.
        let key = CtTuple {
            src_addr: be(Ipv4Addr::from(0xac10_0000 + 2 + i / 60_000)),
            dst_addr: client,
            src_port: port(1024 + (i % 60_000) as u16),
            dst_port: port(9000),
            proto,
            _pad: [0; 3],
        };
        (
            key,
            be(Ipv4Addr::new(10, 0, 1, 48)),
            port(61_000 + (i % 4_000) as u16),
        )
    };
    let o = CtEntry {
        nat_addr,
        nat_port,
        kind,
        direction: DIR_ORIGINAL,
        tcp_flags: oflags,
        created_ns: now - 300 * S,
        last_seen_ns: now - oidle * S,
        packets: 1,
        bytes: 60,
        ..CtEntry::default()
    };
    let reply_key = o.reverse_tuple(&original);
    let r = CtEntry {
        nat_addr: if kind != KIND_SNAT {
            original.dst_addr
        } else {
            original.src_addr
        },
        nat_port: if kind != KIND_SNAT {
            original.dst_port
        } else {
            original.src_port
        },
        kind,
        direction: DIR_REPLY,
        tcp_flags: rflags,
        created_ns: now - 300 * S,
        last_seen_ns: now - ridle * S,
        ..CtEntry::default()
    };
    assert_eq!(r.reverse_tuple(&reply_key), original, "flow {i} pairs up");
    [(original, o), (reply_key, r)]
}

/// A reply entry whose original half is gone (as after an LRU eviction): UDP, idle
/// 100 s when `old`, else 1 s.
fn orphan(j: u32, now: u64, old: bool) -> (CtTuple, CtEntry) {
    let key = CtTuple {
        src_addr: be(Ipv4Addr::new(198, 51, 100, 7)),
        dst_addr: be(Ipv4Addr::new(10, 0, 1, 48)),
        src_port: 53u16.to_be(),
        dst_port: (50_000 + j as u16 * 2 + u16::from(old)).to_be(),
        proto: proto::UDP,
        _pad: [0; 3],
    };
    let state = CtEntry {
        nat_addr: be(Ipv4Addr::new(172, 16, 0, 103)),
        nat_port: 5353u16.to_be(),
        kind: KIND_SNAT,
        direction: DIR_REPLY,
        last_seen_ns: now - if old { 100 } else { 1 } * S,
        ..CtEntry::default()
    };
    (key, state)
}

#[test]
fn one_pass_over_100k_flows_removes_exactly_the_expired_pairs() {
    // CONNTRACK has an LRU list per CPU (`BPF_F_NO_COMMON_LRU`): the entries this test
    // inserts from one CPU fit without eviction only in that CPU's share of the table,
    // capacity ÷ possible CPUs, so the table is sized for that.
    let entries = 2 * (FLOWS + ORPHANS) as usize;
    let cpus = aya::util::nr_cpus().expect("the number of possible CPUs");
    let capacity = (entries * cpus).next_multiple_of(1024);
    assert!(
        capacity <= 4_194_304,
        "{cpus} possible CPUs need a CONNTRACK of {capacity} entries, over [conntrack] \
         capacity's maximum: this test cannot run here"
    );
    let sb = Sandbox::up(
        "g",
        IngressMode::Tc,
        &format!("\n[conntrack]\ncapacity = {capacity}\n"),
    );
    let mut map = gc::open_conntrack(&sb.prefix, MAP_CONNTRACK).expect("open the pinned CONNTRACK");
    // The entries' timestamps reach 300 s back from `now`, and the pass is given `now`
    // rather than reading the clock: an hour ahead of the monotonic clock, so the test
    // holds right after boot too, when the clock is below 300 s.
    let now = monotonic_ns() + 3_600 * S;

    let mut live = HashSet::new();
    let mut dead = HashSet::new();
    let fill = Instant::now();
    for i in 0..FLOWS {
        let expired = shape(i).4;
        for (key, state) in flow(i, now) {
            map.insert(key, state, 0).expect("insert a flow entry");
            if expired {
                dead.insert(key);
            } else {
                live.insert(key);
            }
        }
    }
    for j in 0..ORPHANS {
        for old in [true, false] {
            let (key, state) = orphan(j, now, old);
            map.insert(key, state, 0).expect("insert an orphan");
            if old {
                dead.insert(key);
            } else {
                live.insert(key);
            }
        }
    }
    let entries = 2 * FLOWS as usize + 2 * ORPHANS as usize;
    assert_eq!(live.len() + dead.len(), entries, "every key is distinct");
    let before: Vec<_> = map.iter().filter_map(Result::ok).collect();
    assert_eq!(
        before.len(),
        entries,
        "every entry fits without LRU eviction"
    );
    let flows = pair_flows(before);
    assert_eq!(
        flows.iter().filter(|f| f.is_complete()).count(),
        FLOWS as usize,
        "every flow pairs up"
    );
    eprintln!(
        "filled {entries} entries in {:.2} s",
        fill.elapsed().as_secs_f64()
    );

    let report = gc::collect_at(&mut map, now, &timeouts()).expect("GC pass");
    eprintln!("GC pass over {entries} entries: {report}");
    assert_eq!(report.scanned, entries);
    assert_eq!(report.expired, FLOWS as usize / 2 + ORPHANS as usize);
    assert_eq!(report.deleted, dead.len());
    assert_eq!(report.revived, 0);
    assert_eq!(report.half_flows, 2 * ORPHANS as usize);
    assert!(
        report.duration < Duration::from_secs(60),
        "a pass over 200k entries must complete in well under a minute: {:?}",
        report.duration
    );

    let after: HashSet<CtTuple> = map.keys().filter_map(Result::ok).collect();
    let wrongly_kept = after.intersection(&dead).count();
    let wrongly_deleted = live.difference(&after).count();
    assert_eq!(
        (wrongly_kept, wrongly_deleted),
        (0, 0),
        "exactly the expired pairs go"
    );
    assert_eq!(after, live);

    // A second pass finds nothing more to do.
    let again = gc::collect_at(&mut map, now, &timeouts()).expect("second GC pass");
    assert_eq!((again.expired, again.deleted), (0, 0));
    for key in &live {
        map.remove(key).expect("clean up");
    }
}

/// Every entry of both conntrack maps (assured and not yet).
fn all_entries(sb: &Sandbox) -> Vec<(CtTuple, CtEntry)> {
    gc::CONNTRACK_MAPS
        .iter()
        .flat_map(|name| {
            let map = gc::open_conntrack(&sb.prefix, name).expect("a conntrack map");
            map.iter().filter_map(Result::ok).collect::<Vec<_>>()
        })
        .collect()
}

/// The ICMP echo flow of netns2's ping, as the datapath keyed its original half.
fn echo_flow(sb: &Sandbox) -> Option<(CtTuple, CtEntry)> {
    all_entries(sb).into_iter().find(|(k, s)| {
        k.proto == proto::ICMP
            && s.direction == DIR_ORIGINAL
            && k.src_addr == be(Ipv4Addr::new(172, 16, 0, 102))
    })
}

/// Both halves of every UDP flow from netns3.
fn udp_entries(sb: &Sandbox) -> usize {
    pair_flows(all_entries(sb))
        .iter()
        .filter(|f| {
            f.proto() == proto::UDP
                && f.original_key().src_addr == be(Ipv4Addr::new(172, 16, 0, 103))
        })
        .map(|f| f.keys().len())
        .sum()
}

#[test]
fn under_the_daemon_a_busy_flow_survives_and_an_idle_one_goes() {
    let sb = Sandbox::up(
        "a",
        IngressMode::Tc,
        "\n[conntrack]\ngc_interval = 1\nicmp = 2\nudp = 2\n",
    );
    let mut run = Daemon::start(&sb, &["--interval", "1"]);
    run.wait_for("netfast: running instance", Duration::from_secs(30));

    // Busy: 5 echo requests a second for 8 s, through the masquerade.
    let ping = Background::spawn(
        &sb.container(2),
        &["ping", "-c", "40", "-i", "0.2", "-W", "2", "10.0.1.26"],
    );
    // Idle: a single datagram, then nothing.
    exec_ok(
        &sb.container(3),
        &[
            "python3",
            "-c",
            "import socket; socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'x',('10.0.1.26',9999))",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let (echo_key, first) = echo_flow(&sb).expect("the ping made an ICMP flow");
    assert_eq!(udp_entries(&sb), 2, "the datagram made a UDP pair");

    // Several 1 s GC passes past the 2 s timeout.
    run.wait_for("gc: ", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(udp_entries(&sb), 0, "the idle UDP pair is gone");
    let (key, now) = echo_flow(&sb).expect("the busy ICMP flow is still there");
    assert_eq!(key, echo_key);
    assert_eq!(
        now.created_ns, first.created_ns,
        "the same flow, never deleted and recreated"
    );
    assert!(now.packets > first.packets, "and it kept counting packets");

    let (out, _) = ping.wait(Duration::from_secs(20));
    assert!(
        out.contains("40 packets transmitted, 40 received"),
        "no echo lost while GC ran: {out}"
    );

    // Ctrl-C's SIGTERM twin: the daemon takes the instance down.
    let status = run.stop(Signal::SIGTERM, Duration::from_secs(30));
    let output = run.output();
    eprintln!("netfast run printed:\n{output}");
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status}\n{output}"
    );
    assert!(output.contains("SIGTERM; taking instance"), "{output}");
    assert!(
        output.contains("1 flow expired, 2 entries deleted"),
        "{output}"
    );
    assert!(
        !netfast::bpf::pins::pin_dir(&sb.prefix).exists(),
        "the daemon's down removed the pins"
    );
}
