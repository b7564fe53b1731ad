//! The fast path, end to end, as root: published-port and masqueraded flows between
//! the LAN peer and a container, over TCP and UDP, in both uplink ingress modes. Each
//! test has its own sandbox (unique prefix, `netfast down` and the namespaces removed
//! on drop, also on failure).
//!
//! What is asserted: what the ends saw (answers, the peer address each side got), and
//! the counters that say which way the packets went: `fast_path_to_container`
//! (`bpf_redirect_peer` from the uplink), `fast_path_to_uplink` (fib lookup and
//! `bpf_redirect` from a container's veth), `pass_fast_path_translated` (the uplink's
//! egress passing what the fast path translated), and the fallbacks by reason. With
//! `fast_path = false` the same traffic works and no fast-path counter moves; a packet
//! whose TTL would expire on the hop falls back, and the sender gets the host's ICMP
//! time exceeded as the errno EHOSTUNREACH.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::{collections::BTreeMap, time::Duration};

use netfast::config::IngressMode;
use support::{Background, Sandbox, exec, exec_ok, text, wait_listening};

const HOST: &str = "10.0.1.48";
const LAN: &str = "10.0.1.26";
const UDP_PUBLISH: &str = "\n[[publish]]\nspec = \"5353:172.16.0.102:53/udp\"\n";
/// Request/response exchanges per connection: enough established packets each way
/// that the counters tell the fast path from a single new-flow packet.
const EXCHANGES: u64 = 8;

/// A TCP server: accepts one connection, answers each message with `echo:<data>`
/// until the client closes, then prints the peer it accepted.
const TCP_ECHO: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(); s.settimeout(15)
c,a=s.accept(); c.settimeout(15)
while True:
    d=c.recv(100)
    if not d: break
    c.sendall(b'echo:'+d)
print(a[0],a[1],flush=True)";

/// A TCP client: connects to ADDR PORT and sends N messages one at a time, each after
/// the answer to the one before; prints the answers.
const TCP_CLIENT: &str = "import socket,sys
s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)
out=[]
for i in range(int(sys.argv[3])):
    s.sendall(b'm%d' % i); out.append(s.recv(100).decode())
s.close(); print(' '.join(out),flush=True)";

/// A UDP server: answers N datagrams with `echo:<data>`, prints the last peer.
const UDP_ECHO: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(15)
s.bind((sys.argv[1],int(sys.argv[2])))
for i in range(int(sys.argv[3])):
    d,a=s.recvfrom(100); s.sendto(b'echo:'+d,a)
print(a[0],a[1],flush=True)";

/// A UDP client: sends N datagrams to ADDR PORT from one socket, each after the answer
/// to the one before; prints the answers and where the last came from.
const UDP_CLIENT: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)
out=[]
for i in range(int(sys.argv[3])):
    s.sendto(b'u%d' % i,(sys.argv[1],int(sys.argv[2]))); d,a=s.recvfrom(100); out.append(d.decode())
print(' '.join(out),a[0],a[1],flush=True)";

/// A connected UDP client with IP_RECVERR and an IP TTL of ARGV[3]: sends one
/// datagram and prints the answer, or the errno the ICMP error it got turned into.
const UDP_TTL_CLIENT: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)
s.setsockopt(socket.IPPROTO_IP,11,1)  # IP_RECVERR (linux/in.h)
s.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,int(sys.argv[3]))
s.connect((sys.argv[1],int(sys.argv[2]))); s.send(b'ttl')
try: print('answer',s.recv(100).decode(),flush=True)
except OSError as e: print('errno',e.errno,flush=True)";

const FAST_PATH_COUNTERS: [&str; 9] = [
    "fast_path_to_container",
    "fast_path_to_uplink",
    "pass_fast_path_translated",
    "fast_path_fallback_no_endpoint",
    "fast_path_fallback_ttl",
    "fast_path_fallback_mtu",
    "fast_path_fallback_no_neigh",
    "pass_container_to_uplink",
    "pass_hairpin_unavailable",
];

/// The fast-path counters now.
fn snapshot(sb: &Sandbox) -> BTreeMap<&'static str, u64> {
    FAST_PATH_COUNTERS
        .iter()
        .map(|&name| (name, sb.counter(name)))
        .collect()
}

/// How much each fast-path counter moved since `before`.
fn moved(sb: &Sandbox, before: &BTreeMap<&'static str, u64>) -> BTreeMap<&'static str, u64> {
    snapshot(sb)
        .into_iter()
        .map(|(name, now)| (name, now - before[name]))
        .collect()
}

fn expected_answers(prefix: &str) -> String {
    (0..EXCHANGES)
        .map(|i| format!("echo:{prefix}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// LAN peer -> HOST:8088/tcp -> netns2:80, `EXCHANGES` round trips on one connection.
fn published_tcp(sb: &Sandbox) {
    let server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", TCP_ECHO, "172.16.0.102", "80"],
    );
    wait_listening(&sb.container(2), "tcp", 80);
    let answers = exec_ok(
        &sb.lan(),
        &[
            "python3",
            "-c",
            TCP_CLIENT,
            HOST,
            "8088",
            &EXCHANGES.to_string(),
        ],
    );
    assert_eq!(
        answers.trim(),
        expected_answers("m"),
        "the LAN client's answers"
    );
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert!(
        seen.starts_with(&format!("{LAN} ")),
        "the backend must see the LAN peer's own address: {seen:?}"
    );
}

/// LAN peer -> HOST:5353/udp -> netns2:53, `EXCHANGES` datagrams each way.
fn published_udp(sb: &Sandbox) {
    let n = EXCHANGES.to_string();
    let server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", UDP_ECHO, "0.0.0.0", "53", &n],
    );
    wait_listening(&sb.container(2), "udp", 53);
    let answers = exec_ok(&sb.lan(), &["python3", "-c", UDP_CLIENT, HOST, "5353", &n]);
    assert_eq!(
        answers.trim(),
        format!("{} {HOST} 5353", expected_answers("u")),
        "the answers, from the published address and port"
    );
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert!(seen.starts_with(&format!("{LAN} ")), "backend saw {seen:?}");
}

/// netns2 -> LAN peer:9000/tcp through the masquerade, `EXCHANGES` round trips.
fn masqueraded_tcp(sb: &Sandbox) {
    let server = Background::spawn(&sb.lan(), &["python3", "-c", TCP_ECHO, LAN, "9000"]);
    wait_listening(&sb.lan(), "tcp", 9000);
    let answers = exec_ok(
        &sb.container(2),
        &[
            "python3",
            "-c",
            TCP_CLIENT,
            LAN,
            "9000",
            &EXCHANGES.to_string(),
        ],
    );
    assert_eq!(
        answers.trim(),
        expected_answers("m"),
        "the container's answers"
    );
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert!(
        seen.starts_with(&format!("{HOST} ")),
        "the LAN peer must see the uplink address: {seen:?}"
    );
}

fn traffic_takes_the_fast_path(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, UDP_PUBLISH);
    let status = support::succeeded(&sb.netfast(&["status", "--instance", &sb.prefix]), "status");
    assert!(status.contains("fast path:   on"), "status: {status}");

    let before = snapshot(&sb);
    published_tcp(&sb);
    let tcp = moved(&sb, &before);
    // From the LAN: SYN, the client's ACK, each message and its ACKs, FIN: every one
    // goes into the container on the fast path. Back: SYN-ACK and each answer go out
    // of the uplink on it (the SYN-ACK hits the flow the SYN made).
    assert!(
        tcp["fast_path_to_container"] >= EXCHANGES + 2,
        "published TCP into the container: {tcp:?}"
    );
    assert!(
        tcp["fast_path_to_uplink"] > EXCHANGES,
        "published TCP replies out of the uplink: {tcp:?}"
    );
    assert_eq!(
        tcp["pass_fast_path_translated"], tcp["fast_path_to_uplink"],
        "the uplink's egress passes every frame the fast path sent it: {tcp:?}"
    );

    let before = snapshot(&sb);
    published_udp(&sb);
    let udp = moved(&sb, &before);
    assert_eq!(udp["fast_path_to_container"], EXCHANGES, "UDP in: {udp:?}");
    assert_eq!(
        udp["fast_path_to_uplink"], EXCHANGES,
        "UDP answers out: {udp:?}"
    );

    let before = snapshot(&sb);
    masqueraded_tcp(&sb);
    let masq = moved(&sb, &before);
    // The SYN opens the flow on the normal path (the uplink's egress creates it); the
    // rest of the container's packets leave on the fast path, and every reply comes
    // in on it.
    assert!(
        masq["pass_container_to_uplink"] >= 1,
        "the first packet opened the flow on the normal path: {masq:?}"
    );
    assert!(
        masq["fast_path_to_uplink"] >= EXCHANGES,
        "the container's established packets: {masq:?}"
    );
    assert!(
        masq["fast_path_to_container"] > EXCHANGES,
        "the replies to the masqueraded flow: {masq:?}"
    );

    for (name, value) in [&tcp, &udp, &masq].into_iter().flat_map(|m| m.iter()) {
        if name.starts_with("fast_path_fallback") || *name == "pass_hairpin_unavailable" {
            assert_eq!(*value, 0, "{name} moved: {tcp:?} {udp:?} {masq:?}");
        }
    }
}

#[test]
fn published_and_masqueraded_flows_take_the_fast_path_with_tc_ingress() {
    traffic_takes_the_fast_path(IngressMode::Tc, "fptc");
}

#[test]
fn published_and_masqueraded_flows_take_the_fast_path_with_xdp_ingress() {
    traffic_takes_the_fast_path(IngressMode::Xdp, "fpxd");
}

#[test]
fn with_fast_path_false_the_same_traffic_takes_the_normal_path() {
    let sb = Sandbox::up_with("fpoff", IngressMode::Tc, "fast_path = false", UDP_PUBLISH);
    let status = support::succeeded(&sb.netfast(&["status", "--instance", &sb.prefix]), "status");
    assert!(status.contains("fast path:   off"), "status: {status}");
    let before = snapshot(&sb);
    let dnat_before = sb.counter("dnat_established");
    published_tcp(&sb);
    published_udp(&sb);
    masqueraded_tcp(&sb);
    let after = moved(&sb, &before);
    assert!(
        after.values().all(|&v| v == 0),
        "no fast-path counter may move with fast_path = false: {after:?}"
    );
    assert!(
        sb.counter("dnat_established") > dnat_before,
        "the uplink still translated the flows"
    );

    // A re-`up` that turns it on says so, and the next flows take it; one that
    // changes nothing about it says nothing.
    let config = std::fs::read_to_string(&sb.config).expect("read config");
    std::fs::write(
        &sb.config,
        config.replace("fast_path = false", "fast_path = true"),
    )
    .expect("write config");
    let on = support::succeeded(&sb.netfast(&["up", "--config", sb.config_str()]), "re-up");
    assert!(on.contains("  fast path switched on: "), "{on}");
    let before = snapshot(&sb);
    published_tcp(&sb);
    assert!(
        moved(&sb, &before).values().any(|&v| v > 0),
        "the fast path is on after the re-up"
    );
    let again = support::succeeded(&sb.netfast(&["up", "--config", sb.config_str()]), "re-up");
    assert!(!again.contains("fast path switched"), "{again}");
}

/// A datagram from the LAN with TTL 1 to a published port: its TTL would expire on the
/// host's hop, so the fast path leaves it to the host's forwarding, which answers with
/// ICMP time exceeded (translated back to the published address by the uplink's
/// egress, so the LAN socket takes it for its own): the application gets
/// EHOSTUNREACH. The backend never sees the datagram. TTL 2 reaches it.
#[test]
fn a_packet_whose_ttl_would_expire_falls_back_and_the_sender_gets_time_exceeded() {
    let sb = Sandbox::up("fpttl", IngressMode::Tc, UDP_PUBLISH);
    let server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", UDP_ECHO, "0.0.0.0", "53", "1"],
    );
    wait_listening(&sb.container(2), "udp", 53);

    let before = snapshot(&sb);
    let out = exec(
        &sb.lan(),
        &["python3", "-c", UDP_TTL_CLIENT, HOST, "5353", "1"],
    );
    assert_eq!(
        text(&out.stdout).trim(),
        format!("errno {}", libc::EHOSTUNREACH),
        "TTL 1: the host's time exceeded, as errno EHOSTUNREACH; stderr: {}",
        text(&out.stderr)
    );
    let ttl1 = moved(&sb, &before);
    assert_eq!(ttl1["fast_path_fallback_ttl"], 1, "{ttl1:?}");
    assert_eq!(ttl1["fast_path_to_container"], 0, "{ttl1:?}");

    let out = exec_ok(
        &sb.lan(),
        &["python3", "-c", UDP_TTL_CLIENT, HOST, "5353", "2"],
    );
    assert_eq!(out.trim(), "answer echo:ttl", "TTL 2 reaches the backend");
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert!(seen.starts_with(&format!("{LAN} ")), "backend saw {seen:?}");
}

/// The MAC of `link` in namespace `ns`, as `ip -j link show` prints it.
fn mac_of(ns: &str, link: &str) -> String {
    let out = exec_ok(ns, &["ip", "-j", "link", "show", link]);
    let links: serde_json::Value = serde_json::from_str(&out).expect("ip -j link JSON");
    links[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{link} in {ns} has no address: {out}"))
        .to_owned()
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Fast-path frames never cross the bridge, so the bridge would forget the containers'
/// MACs after its ageing time and flood to every port what it still forwards to them;
/// `up` gives each bridged container a static forwarding entry. And the bridge keeps
/// the MAC it was created with (set explicitly, as Docker does), so the gateway MAC in
/// `ENDPOINTS`, which fast-path frames carry as their source, is the bridge's own.
#[test]
fn bridged_containers_have_static_bridge_entries_and_the_bridges_own_mac() {
    let sb = Sandbox::up("fpfdb", IngressMode::Tc, "");
    let fdb = exec_ok(&sb.host(), &["bridge", "fdb", "show", "br", "br0"]);
    for n in [2, 3] {
        let mac = mac_of(&sb.container(n), &format!("veth{n}-peer"));
        assert!(
            fdb.lines()
                .any(|l| l.starts_with(&mac) && l.contains("static") && !l.contains("permanent")),
            "no static entry for netns{n}'s {mac} in:\n{fdb}"
        );
    }
    let bridge_mac = mac_of(&sb.host(), "br0");
    let endpoints = netfast::bpf::pinned::PinnedInstance::open(&sb.prefix)
        .expect("open the instance")
        .endpoints()
        .expect("read ENDPOINTS");
    for (addr, endpoint) in endpoints {
        if addr.octets()[3] != 2 {
            assert_eq!(
                mac_text(&endpoint.host_mac),
                bridge_mac,
                "the gateway MAC of {addr} is the bridge's"
            );
        }
    }
}
