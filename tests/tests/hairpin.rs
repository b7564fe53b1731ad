//! Hairpin, end to end, as root: a container reaches a published port through the
//! host's uplink address, the backend being another container or itself, over TCP
//! and UDP, in both uplink ingress modes (the container-side program does the work,
//! so the mode must not matter). Each test has its own sandbox (unique prefix,
//! `netfast down` and the namespaces removed on drop, also on failure).
//!
//! What is asserted is what the ends saw: the backend's server prints the peer it
//! accepted or received from (the containers' gateway, 172.16.0.100, and a port),
//! and the client prints the answer and, for UDP, the address it came from
//! (10.0.1.48 and the published port). A TCP client only completes its handshake
//! when the SYN-ACK comes from the address and port it connected to.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::{net::Ipv4Addr, time::Duration};

use netfast::config::IngressMode;
use support::{Background, Sandbox, exec_ok, wait_listening};

const HOST: &str = "10.0.1.48";
/// The bridge's address: the gateway of netns2 and netns3.
const GATEWAY: &str = "172.16.0.100";
const UDP_PUBLISH: &str = "\n[[publish]]\nspec = \"5353:172.16.0.102:53/udp\"\n";

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

/// A TCP client: connects to ADDR PORT, sends DATA, prints the answer.
const TCP_CLIENT: &str = "import socket,sys
s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)
s.sendall(sys.argv[3].encode()); print(s.recv(100).decode(),flush=True)";

/// A UDP client: sends DATA to ADDR PORT, prints the answer and where it came from.
const UDP_CLIENT: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(sys.argv[3].encode(),(sys.argv[1],int(sys.argv[2])))
d,a=s.recvfrom(100); print(d.decode(),a[0],a[1],flush=True)";

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

/// From container `client` to HOST:8088/tcp, which leads to netns2:80.
fn tcp_hairpin(sb: &Sandbox, client: u8, data: &str) {
    let server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", TCP_ECHO_ONCE, "172.16.0.102", "80"],
    );
    wait_listening(&sb.container(2), "tcp", 80);
    let new_before = sb.counter("hairpin_new");
    let reply = exec_ok(
        &sb.container(client),
        &["python3", "-c", TCP_CLIENT, HOST, "8088", data],
    );
    assert_eq!(reply.trim(), format!("echo:{data}"), "the client's answer");
    let (seen, _) = server.wait(Duration::from_secs(10));
    let (addr, port) = peer_seen(&seen);
    assert_eq!(
        addr,
        GATEWAY.parse::<Ipv4Addr>().expect("addr"),
        "the backend must see the gateway as the source of a hairpin connection"
    );
    assert_ne!(port, 0);
    assert_eq!(
        sb.counter("hairpin_new"),
        new_before + 1,
        "one new hairpin flow"
    );
}

/// From container `client` to HOST:5353/udp, which leads to netns2:53.
fn udp_hairpin(sb: &Sandbox, client: u8, data: &str) {
    let server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", UDP_ECHO_ONCE, "0.0.0.0", "53"],
    );
    wait_listening(&sb.container(2), "udp", 53);
    let replies_before = sb.counter("hairpin_reply");
    let reply = exec_ok(
        &sb.container(client),
        &["python3", "-c", UDP_CLIENT, HOST, "5353", data],
    );
    assert_eq!(
        reply.split_whitespace().collect::<Vec<_>>(),
        [format!("echo:{data}").as_str(), HOST, "5353"],
        "the answer, from the published address and port"
    );
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert_eq!(
        peer_seen(&seen).0,
        GATEWAY.parse::<Ipv4Addr>().expect("addr"),
        "the backend must see the gateway as the source"
    );
    assert_eq!(
        sb.counter("hairpin_reply"),
        replies_before + 1,
        "the backend's answer went back through the hairpin"
    );
}

fn hairpin(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, UDP_PUBLISH);
    // Another container as the backend: netns3 -> HOST:8088 -> netns2:80.
    tcp_hairpin(&sb, 3, "from-c3");
    udp_hairpin(&sb, 3, "udp-from-c3");
    // The client is its own backend: netns2 -> HOST:8088 -> netns2:80.
    tcp_hairpin(&sb, 2, "from-c2-itself");
    udp_hairpin(&sb, 2, "udp-from-c2-itself");

    // `ct list` shows each hairpin connection as its two flows: the DNAT flow from
    // the client to the published port, and the SNAT flow from the client to the
    // backend, translated to the gateway.
    let out = sb.netfast(&["ct", "list", "--instance", &sb.prefix, "--json"]);
    let flows: serde_json::Value =
        serde_json::from_str(&support::succeeded(&out, "ct list")).expect("ct list JSON");
    let flows = flows.as_array().expect("a list of flows");
    let has = |kind: &str, side: &str, field: &str, value: &str, client: &str| {
        flows.iter().any(|f| {
            f["proto"] == "tcp"
                && f["kind"] == kind
                && f["original"]["src"] == client
                && f[side][field] == value
        })
    };
    for client in ["172.16.0.103", "172.16.0.102"] {
        assert!(
            has("DNAT", "original", "dst", HOST, client),
            "no DNAT flow {client} -> {HOST}:8088 in {flows:#?}"
        );
        assert!(
            has("SNAT", "translated", "src", GATEWAY, client),
            "no SNAT flow {client} -> 172.16.0.102:80 as {GATEWAY} in {flows:#?}"
        );
    }
}

#[test]
fn hairpin_tcp_and_udp_with_tc_ingress() {
    hairpin(IngressMode::Tc, "hptc");
}

#[test]
fn hairpin_tcp_and_udp_with_xdp_ingress() {
    hairpin(IngressMode::Xdp, "hpxdp");
}

/// The flows of `proto` from container address `client`, as `ct list --json` shows
/// them: (kind, translated destination or source).
fn flows_from(sb: &Sandbox, proto: &str, client: &str) -> Vec<String> {
    let out = sb.netfast(&["ct", "list", "--instance", &sb.prefix, "--json"]);
    let flows: serde_json::Value =
        serde_json::from_str(&support::succeeded(&out, "ct list")).expect("ct list JSON");
    flows
        .as_array()
        .expect("a list of flows")
        .iter()
        .filter(|f| f["proto"] == proto && f["original"]["src"] == client)
        .map(|f| format!("{} {}", f["kind"], f["original"]["dst"]))
        .collect()
}

/// Deleting a publish deletes the hairpin SNAT flows chained to the DNAT flows it
/// deletes: a UDP publish's flows (always), a TCP publish's with --kill-flows, and
/// a re-`up` that drops a UDP publish. None is left in conntrack until its timeout,
/// and each command says how many went.
#[test]
fn unpublishing_removes_the_hairpin_flows_it_orphans() {
    let sb = Sandbox::up(
        "hpdel",
        IngressMode::Tc,
        &format!("{UDP_PUBLISH}\n[[publish]]\nspec = \"5354:172.16.0.102:54/udp\"\n"),
    );
    let client = "172.16.0.103";

    // UDP: `publish del` takes the DNAT flow and the SNAT flow chained to it.
    udp_hairpin(&sb, 3, "before-del");
    assert_eq!(
        flows_from(&sb, "udp", client),
        ["\"DNAT\" \"10.0.1.48\"", "\"SNAT\" \"172.16.0.102\""],
        "a hairpin connection is two flows"
    );
    let out = support::succeeded(
        &sb.netfast(&[
            "publish",
            "del",
            "--instance",
            &sb.prefix,
            "5353:172.16.0.102:53/udp",
        ]),
        "publish del",
    );
    assert!(
        out.contains(
            "removed 1 UDP flow to the old backend 172.16.0.102:53 and 1 hairpin SNAT flow \
             chained to it"
        ),
        "{out}"
    );
    assert_eq!(flows_from(&sb, "udp", client), Vec::<String>::new());

    // TCP with --kill-flows: the same.
    tcp_hairpin(&sb, 3, "before-kill");
    assert_eq!(flows_from(&sb, "tcp", client).len(), 2);
    let out = support::succeeded(
        &sb.netfast(&[
            "publish",
            "del",
            "--instance",
            &sb.prefix,
            "8088:172.16.0.102:80/tcp",
            "--kill-flows",
        ]),
        "publish del --kill-flows",
    );
    assert!(
        out.contains("deleted 1 flow through it and 1 hairpin SNAT flow chained to it"),
        "{out}"
    );
    assert_eq!(flows_from(&sb, "tcp", client), Vec::<String>::new());

    // A re-`up` whose config drops a UDP publish: the same, and it says so.
    let server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", UDP_ECHO_ONCE, "0.0.0.0", "54"],
    );
    wait_listening(&sb.container(2), "udp", 54);
    exec_ok(
        &sb.container(3),
        &["python3", "-c", UDP_CLIENT, HOST, "5354", "before-re-up"],
    );
    server.wait(Duration::from_secs(10));
    assert_eq!(flows_from(&sb, "udp", client).len(), 2);
    let config = std::fs::read_to_string(&sb.config).expect("read config");
    let dropped = std::env::temp_dir().join(format!("netfast-test-{}-dropped.toml", sb.prefix));
    std::fs::write(
        &dropped,
        config.replace(
            "spec = \"5354:172.16.0.102:54/udp\"",
            "spec = \"5355:172.16.0.102:55/udp\"",
        ),
    )
    .expect("write config");
    let up = sb.netfast(&["up", "--config", dropped.to_str().expect("utf-8")]);
    let _ = std::fs::remove_file(&dropped);
    let out = support::succeeded(&up, "re-up without the publish");
    assert!(
        out.contains(
            "removed 1 UDP flow to the old backend 172.16.0.102:54 (5354/udp) and 1 hairpin \
             SNAT flow chained to it"
        ),
        "{out}"
    );
    assert_eq!(flows_from(&sb, "udp", client), Vec::<String>::new());

    // `ct flush` of the DNAT flows: the SNAT flows chained to them go too (the
    // re-up published 8088 again, from the config).
    tcp_hairpin(&sb, 3, "before-flush");
    let out = support::succeeded(
        &sb.netfast(&[
            "ct",
            "flush",
            "--instance",
            &sb.prefix,
            "--kind",
            "dnat",
            "--addr",
            client,
        ]),
        "ct flush",
    );
    assert!(
        out.contains("deleted 1 flow and 1 hairpin SNAT flow chained to it (4 entries)"),
        "{out}"
    );
    assert_eq!(flows_from(&sb, "tcp", client), Vec::<String>::new());
}

/// Without hairpin the container's connection to the published port was refused; the
/// status shows the container program on every container veth.
#[test]
fn status_lists_the_container_program_on_each_veth() {
    let sb = Sandbox::up("hpst", IngressMode::Tc, "");
    let out = sb.netfast(&["status", "--instance", &sb.prefix]);
    let status = support::succeeded(&out, "status");
    for veth in ["veth1", "veth2", "veth3"] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("container_ingress_tc") && l.contains(veth)),
            "status should list container_ingress_tc on {veth}:\n{status}"
        );
    }
    let pins = std::fs::read_dir(format!("/sys/fs/bpf/netfast/{}", sb.prefix))
        .expect("pin dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("link_container_"))
        .count();
    assert_eq!(pins, 3, "one pinned link per container veth");
}
