//! End to end, as root: the seed topology in a sandbox, brought up by the real
//! `netfast` binary, with real clients (curl, nc, ping) and real servers in the
//! namespaces. Each test has its own prefix and cleans up on drop, also on failure.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::{net::Ipv4Addr, path::Path, time::Duration};

use netfast::config::IngressMode;
use support::{
    Background, Sandbox, exec, exec_ok, require_root, text, unique_prefix, wait_listening,
};

const HOST: &str = "10.0.1.48";
const LAN: &str = "10.0.1.26";
const UDP_PUBLISH: &str = "\n[[publish]]\nspec = \"5353:172.16.0.102:53/udp\"\n";
const SNAT_PORTS: std::ops::RangeInclusive<u16> = 61000..=65535;

/// A one-shot TCP server: accepts one connection, answers `echo:<data>`, prints the peer.
const TCP_ECHO_ONCE: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(); s.settimeout(15)
c,a=s.accept(); d=c.recv(100); c.sendall(b'echo:'+d); c.close()
print(a[0],a[1],flush=True)";

/// A one-shot UDP server: answers one datagram with `echo:<data>`, prints the peer.
const UDP_ECHO_ONCE: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(15)
s.bind((sys.argv[1],int(sys.argv[2])))
d,a=s.recvfrom(100); s.sendto(b'echo:'+d,a)
print(a[0],a[1],flush=True)";

/// Parses the "ADDR PORT" line the one-shot servers print.
fn peer_seen(stdout: &str) -> (Ipv4Addr, u16) {
    let mut words = stdout.split_whitespace();
    let addr = words.next().and_then(|w| w.parse().ok());
    let port = words.next().and_then(|w| w.parse().ok());
    match (addr, port) {
        (Some(addr), Some(port)) => (addr, port),
        _ => panic!("server printed no peer: {stdout:?}"),
    }
}

fn seed_traffic(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, UDP_PUBLISH);
    // veth hands CHECKSUM_PARTIAL skbs across, which receivers trust unverified. With
    // tx checksum offload off the senders compute full checksums, as on a real wire,
    // so the receivers verify every checksum the datapath rewrote.
    exec_ok(&sb.lan(), &["ethtool", "-K", "eth0", "tx", "off"]);
    for n in 2..=3 {
        exec_ok(
            &sb.container(n),
            &["ethtool", "-K", &format!("veth{n}-peer"), "tx", "off"],
        );
    }

    // Seed check 1 and 2: netns1 <-> host point to point, netns2 <-> netns3 over br0.
    exec_ok(
        &sb.container(1),
        &["ping", "-c", "2", "-W", "2", "172.16.0.1"],
    );
    exec_ok(&sb.host(), &["ping", "-c", "2", "-W", "2", "172.16.0.2"]);
    exec_ok(
        &sb.container(2),
        &["ping", "-c", "2", "-W", "2", "172.16.0.103"],
    );
    exec_ok(
        &sb.container(3),
        &["ping", "-c", "2", "-W", "2", "172.16.0.102"],
    );

    // Published TCP port: an HTTP GET from the LAN reaches netns2:80, and the server
    // sees the real client address (DNAT only, no source rewrite).
    let www = std::env::temp_dir().join(format!("netfast-www-{}", sb.prefix));
    std::fs::create_dir_all(&www).expect("web root");
    let token = format!("hello from {}\n", sb.container(2));
    std::fs::write(www.join("token.txt"), &token).expect("web file");
    let http = Background::spawn(
        &sb.container(2),
        &[
            "python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            "172.16.0.102",
            "--directory",
            path_str(&www),
        ],
    );
    wait_listening(&sb.container(2), "tcp", 80);
    let dnat_before = sb.counter("dnat_new");
    let body = exec_ok(
        &sb.lan(),
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{HOST}:8088/token.txt"),
        ],
    );
    assert_eq!(body, token, "HTTP body through the published port");
    let (_, http_log) = http.finish();
    let _ = std::fs::remove_dir_all(&www);
    assert!(
        http_log.contains(&format!("{LAN} - - ")) && http_log.contains("GET /token.txt"),
        "the backend should log the LAN client {LAN}: {http_log}"
    );
    assert!(
        sb.counter("dnat_new") > dnat_before,
        "dnat_new did not move"
    );

    // Published TCP port with nc as the client, byte-exact both ways.
    let server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", TCP_ECHO_ONCE, "172.16.0.102", "80"],
    );
    wait_listening(&sb.container(2), "tcp", 80);
    let reply = exec_ok(
        &sb.lan(),
        &[
            "sh",
            "-c",
            &format!("printf nc-dnat | nc -N -w 5 {HOST} 8088"),
        ],
    );
    assert_eq!(reply, "echo:nc-dnat");
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert_eq!(peer_seen(&seen).0, LAN.parse::<Ipv4Addr>().expect("addr"));

    // Published UDP port: a datagram and its echo.
    let server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", UDP_ECHO_ONCE, "0.0.0.0", "53"],
    );
    wait_listening(&sb.container(2), "udp", 53);
    let reply = exec_ok(
        &sb.lan(),
        &[
            "sh",
            "-c",
            &format!("printf udp-dnat | nc -u -w 2 {HOST} 5353"),
        ],
    );
    assert_eq!(reply, "echo:udp-dnat");
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert_eq!(peer_seen(&seen).0, LAN.parse::<Ipv4Addr>().expect("addr"));

    // Masquerade, TCP: the far side sees the uplink address and a port from the range.
    let server = Background::spawn(&sb.lan(), &["python3", "-c", TCP_ECHO_ONCE, LAN, "9000"]);
    wait_listening(&sb.lan(), "tcp", 9000);
    let reply = exec_ok(
        &sb.container(2),
        &[
            "sh",
            "-c",
            &format!("printf nc-snat | nc -N -w 5 {LAN} 9000"),
        ],
    );
    assert_eq!(reply, "echo:nc-snat");
    let (seen, _) = server.wait(Duration::from_secs(10));
    let (addr, port) = peer_seen(&seen);
    assert_eq!(
        addr,
        HOST.parse::<Ipv4Addr>().expect("addr"),
        "far side must see the uplink address"
    );
    assert!(
        SNAT_PORTS.contains(&port),
        "SNAT port {port} outside {SNAT_PORTS:?}"
    );

    // Masquerade, UDP.
    let server = Background::spawn(&sb.lan(), &["python3", "-c", UDP_ECHO_ONCE, LAN, "9001"]);
    wait_listening(&sb.lan(), "udp", 9001);
    let reply = exec_ok(
        &sb.container(3),
        &[
            "sh",
            "-c",
            &format!("printf udp-snat | nc -u -w 2 {LAN} 9001"),
        ],
    );
    assert_eq!(reply, "echo:udp-snat");
    let (seen, _) = server.wait(Duration::from_secs(10));
    let (addr, port) = peer_seen(&seen);
    assert_eq!(addr, HOST.parse::<Ipv4Addr>().expect("addr"));
    assert!(
        SNAT_PORTS.contains(&port),
        "SNAT port {port} outside {SNAT_PORTS:?}"
    );

    // Masquerade, ICMP echo: replies come back through reverse SNAT.
    let replies_before = sb.counter("snat_reply");
    exec_ok(&sb.container(2), &["ping", "-c", "3", "-W", "2", LAN]);
    assert!(
        sb.counter("snat_reply") >= replies_before + 3,
        "three echo replies must be reverse-translated"
    );

    // No netfilter anywhere in the host namespace: empty rulesets, no conntrack entry.
    assert_netfilter_untouched(&sb.host());
}

fn assert_netfilter_untouched(ns: &str) {
    for save in ["iptables-save", "iptables-legacy-save"] {
        let rules = exec_ok(ns, &[save]);
        assert!(
            !rules.lines().any(|line| line.starts_with("-A")),
            "{save} in {ns} shows rules:\n{rules}"
        );
    }
    let ruleset = exec_ok(ns, &["nft", "list", "ruleset"]);
    assert!(
        ruleset.trim().is_empty(),
        "nft ruleset in {ns} is not empty:\n{ruleset}"
    );
    let count = exec(ns, &["conntrack", "-C"]);
    assert!(
        count.status.success(),
        "conntrack -C in {ns} failed: {}",
        text(&count.stderr)
    );
    assert_eq!(
        text(&count.stdout).trim(),
        "0",
        "nf_conntrack entries in {ns}"
    );
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
fn seed_traffic_with_tc_ingress() {
    seed_traffic(IngressMode::Tc, "t");
}

#[test]
fn seed_traffic_with_xdp_ingress() {
    seed_traffic(IngressMode::Xdp, "x");
}

fn down_leaves_no_namespace_link_or_pin(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, "");
    let pins = netfast::bpf::pins::pin_dir(&sb.prefix);
    assert!(pins.join("CONNTRACK").exists(), "up pins the maps");
    assert!(
        pins.join("link_uplink_ingress").exists(),
        "up pins the links"
    );
    assert_eq!(
        pins.join("link_uplink_ingress_fallback").exists(),
        ingress == IngressMode::Xdp,
        "the tc fallback behind XDP is pinned in XDP mode only"
    );

    let out = sb.netfast(&["down", "--config", sb.config_str()]);
    assert!(out.status.success(), "down failed: {}", text(&out.stderr));

    for n in 1..=3 {
        let ns = sb.container(n);
        assert!(
            !Path::new("/run/netns").join(&ns).exists(),
            "{ns} is left behind"
        );
    }
    assert!(!pins.exists(), "{} is left behind", pins.display());
    let links = exec_ok(&sb.host(), &["ip", "-o", "link", "show"]);
    let names: Vec<&str> = links
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .collect();
    assert_eq!(
        names,
        ["lo", "eth0"],
        "only the lab's own links may remain in the host"
    );
    let filters = exec_ok(&sb.host(), &["bpftool", "net", "show", "dev", "eth0"]);
    assert!(
        !filters.contains("uplink_"),
        "programs still attached after down:\n{filters}"
    );
    let attached = exec_ok(&sb.host(), &["ip", "-d", "link", "show", "eth0"]);
    assert!(
        !attached.contains("prog/xdp"),
        "XDP still attached after down:\n{attached}"
    );
}

#[test]
fn down_leaves_nothing_with_tc_ingress() {
    down_leaves_no_namespace_link_or_pin(IngressMode::Tc, "d");
}

#[test]
fn down_leaves_nothing_with_xdp_ingress() {
    down_leaves_no_namespace_link_or_pin(IngressMode::Xdp, "dx");
}

#[test]
fn up_twice_keeps_flows_working() {
    let sb = Sandbox::up("u", IngressMode::Tc, "");
    let again = sb.netfast(&["up", "--config", sb.config_str()]);
    assert!(
        again.status.success(),
        "second up failed: {}",
        text(&again.stderr)
    );
    let server = Background::spawn(&sb.lan(), &["python3", "-c", TCP_ECHO_ONCE, LAN, "9000"]);
    wait_listening(&sb.lan(), "tcp", 9000);
    let reply = exec_ok(
        &sb.container(2),
        &["sh", "-c", &format!("printf again | nc -N -w 5 {LAN} 9000")],
    );
    assert_eq!(reply, "echo:again");
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert_eq!(peer_seen(&seen).0, HOST.parse::<Ipv4Addr>().expect("addr"));
}

#[test]
fn bad_config_is_refused_before_any_change() {
    require_root();
    let prefix = unique_prefix("b");
    let lab = netfast::lab::Lab::create(&prefix).expect("lab");
    let config = std::env::temp_dir().join(format!("netfast-test-{prefix}.toml"));
    let toml = netfast::lab::seed_config_toml(&prefix, IngressMode::Tc)
        + "\n[[publish]]\nspec = \"9090:172.16.9.9:80/tcp\"\n";
    std::fs::write(&config, toml).expect("write config");
    let out = support::netfast(Some(&lab.host_ns()), &["up", "--config", path_str(&config)]);
    let _ = std::fs::remove_file(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "bad input exits 2: {stderr}");
    assert!(
        stderr.contains("172.16.9.9"),
        "the error names the bad value: {stderr}"
    );
    for n in 1..=3 {
        let ns = netfast::lab::container_ns(&prefix, n);
        assert!(
            !Path::new("/run/netns").join(&ns).exists(),
            "{ns} was created by a refused up"
        );
    }
    assert!(
        !netfast::bpf::pins::pin_dir(&prefix).exists(),
        "a refused up left pins"
    );
    let links = exec_ok(&lab.host_ns(), &["ip", "-o", "link", "show"]);
    assert!(!links.contains("br0"), "a refused up created br0:\n{links}");
}

/// Flood-pings $1 until the file $2 exists, then stops ping with SIGINT so that it
/// prints its statistics. (ping sets its own SIGINT handler, so the signal reaches it
/// even though a non-interactive shell starts background jobs with SIGINT ignored.)
const FLOOD_PING_UNTIL: &str = "ping -q -f \"$1\" & p=$!
while [ ! -e \"$2\" ]; do sleep 0.05; done
kill -INT $p; wait $p";

/// (transmitted, received) from ping's statistics line.
fn ping_counts(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("ping printed no statistics: {stdout:?}"));
    let mut numbers = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok());
    match (numbers.next(), numbers.next()) {
        (Some(sent), Some(received)) => (sent, received),
        _ => panic!("cannot read ping's statistics: {line:?}"),
    }
}

#[test]
fn switching_ingress_between_tc_and_xdp_keeps_forwarding() {
    let sb = Sandbox::up("s", IngressMode::Tc, "");
    let original = std::fs::read_to_string(&sb.config).expect("read config");
    let pins = netfast::bpf::pins::pin_dir(&sb.prefix);
    for (from, to) in [("tc", "xdp"), ("xdp", "tc")] {
        let switched = original.replace("ingress = \"tc\"", &format!("ingress = \"{to}\""));
        std::fs::write(&sb.config, switched).expect("write config");

        // A masqueraded flood ping runs across the switch: every echo reply needs the
        // ingress translation, so a moment without it loses replies.
        let stop = std::env::temp_dir().join(format!("netfast-{}-stop-{to}", sb.prefix));
        let _ = std::fs::remove_file(&stop);
        let pinger = Background::spawn(
            &sb.container(2),
            &["sh", "-c", FLOOD_PING_UNTIL, "sh", LAN, path_str(&stop)],
        );
        std::thread::sleep(Duration::from_millis(300));
        let up = sb.netfast(&["up", "--config", sb.config_str()]);
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&stop, "").expect("stop file");
        let (pinged, ping_err) = pinger.wait(Duration::from_secs(10));
        let _ = std::fs::remove_file(&stop);
        assert!(
            up.status.success(),
            "up {from} -> {to}: {}",
            text(&up.stderr)
        );
        let (sent, received) = ping_counts(&pinged);
        assert!(
            sent >= 100,
            "{from} -> {to}: the flood ping hardly ran: {pinged}{ping_err}"
        );
        // The one in flight when SIGINT came may be missing.
        assert!(
            sent - received <= 1,
            "{from} -> {to}: {} echo replies lost while switching: {pinged}",
            sent - received
        );

        let report = text(&up.stdout);
        assert!(
            report.contains(&format!("uplink_ingress_{to} on eth0")),
            "{from} -> {to}: {report}"
        );
        assert_eq!(
            report.contains("attached uplink_ingress_tc on eth0: tcx ingress (fallback for XDP)"),
            to == "xdp",
            "{from} -> {to}: the tc fallback is reported in XDP mode only: {report}"
        );
        // The links of the mode it left are reported as detached, as `down` would.
        let detached: Vec<&str> = report
            .lines()
            .filter_map(|l| l.strip_prefix("  detached "))
            .map(|l| l.split(", link id ").next().unwrap_or(l))
            .collect();
        let expected: &[&str] = if to == "xdp" {
            &["uplink_ingress_tc on eth0: tcx ingress"]
        } else {
            &[
                "uplink_ingress_xdp on eth0: xdp",
                "uplink_ingress_tc on eth0: tcx ingress (fallback for XDP)",
            ]
        };
        assert_eq!(detached, expected, "{from} -> {to}: {report}");
        let link = pins.join("link_uplink_ingress");
        assert!(link.exists(), "{from} -> {to}: the ingress link is pinned");
        assert_eq!(
            pins.join("link_uplink_ingress_fallback").exists(),
            to == "xdp",
            "{from} -> {to}: the tc fallback behind XDP is pinned in XDP mode only"
        );

        let server = Background::spawn(
            &sb.container(2),
            &["python3", "-c", TCP_ECHO_ONCE, "172.16.0.102", "80"],
        );
        wait_listening(&sb.container(2), "tcp", 80);
        let deferred = sb.counter("pass_xdp_csum_partial");
        let reply = exec_ok(
            &sb.lan(),
            &["sh", "-c", &format!("printf {to} | nc -N -w 5 {HOST} 8088")],
        );
        assert_eq!(
            reply,
            format!("echo:{to}"),
            "after switching {from} -> {to}"
        );
        server.wait(Duration::from_secs(10));
        // The LAN's veth leaves TCP checksums partial (tx offload is on here), which
        // XDP cannot finish: it left those frames to the tc fallback behind it, so the
        // exchange above went through the fallback.
        if to == "xdp" {
            assert!(
                sb.counter("pass_xdp_csum_partial") > deferred,
                "XDP left no partial-checksum frame to the tc fallback"
            );
        }
    }
    let attached = exec_ok(&sb.host(), &["ip", "-d", "link", "show", "eth0"]);
    assert!(
        !attached.contains("prog/xdp"),
        "XDP must be gone after switching back to tc:\n{attached}"
    );
}
