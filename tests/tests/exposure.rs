//! Issue 10, exposure, end to end as root: the seed lab brought up by the real
//! `netfast` binary, real traffic from the LAN namespace, in both ingress modes.
//! - A peer that routes the container subnet via the host (a route the test adds in
//!   the LAN namespace, which it created) does not reach an unpublished container
//!   port, while a published port and a container's own flow keep working; with
//!   `allow_direct_routing = true` it does reach it.
//! - With `allow_direct_routing = true`, that peer's TCP connection, UDP exchange and
//!   ping to a container work both ways: the container sees the peer's own address and
//!   answers from its own (routed flows: tracked, not masqueraded).
//! - The host's own addresses inside the subnet (the bridge's 172.16.0.100, netns1's
//!   point-to-point 172.16.0.1) answer that peer from those addresses, and a host
//!   connection from one of them leaves with it: the host's own traffic is never
//!   masqueraded.
//! - The crafted SYN of the Docker report (to the host's MAC, addressed to
//!   127.0.0.1:8081, published as `127.0.0.1:8081:172.16.0.102:80`) gets no SYN-ACK,
//!   while the same crafted SYN to the published 10.0.1.48:8088 does.
//!
//! Each test has its own prefix and cleans up on drop, also on failure.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::time::Duration;

use netfast::config::IngressMode;
use support::{Background, Sandbox, eventually, exec_ok, succeeded, text, wait_listening};

const HOST: &str = "10.0.1.48";
const LAN: &str = "10.0.1.26";
/// netns3: no port of it is published.
const CONTAINER: &str = "172.16.0.103";
/// The host's own addresses inside the masquerade subnet: the bridge's, and the
/// point-to-point host address toward netns1.
const BRIDGE_ADDR: &str = "172.16.0.100";
const P2P_HOST_ADDR: &str = "172.16.0.1";
const UNPUBLISHED: &str = "7000";
const ROUTED_DROP: &str = "drop_routed_to_container";

/// Prints one line per datagram it receives ("ADDR PAYLOAD"), until killed.
const UDP_LISTEN: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.bind((sys.argv[1],int(sys.argv[2])))
while True:
    d,a=s.recvfrom(2000); print(a[0],d.decode(),flush=True)";

/// Sends each argument after the first two as one datagram to ADDR PORT.
const UDP_SEND: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for p in sys.argv[3:]: s.sendto(p.encode(),(sys.argv[1],int(sys.argv[2])))";

/// A one-shot TCP server: accepts one connection, answers `echo:<data>`.
const TCP_ECHO_ONCE: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(); s.settimeout(15)
c,a=s.accept(); d=c.recv(100); c.sendall(b'echo:'+d); c.close()";

/// A one-shot UDP server: answers one datagram with `echo:<data>`.
const UDP_ECHO_ONCE: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(15)
s.bind((sys.argv[1],int(sys.argv[2])))
d,a=s.recvfrom(100); s.sendto(b'echo:'+d,a)";

/// A one-shot TCP server that says who connected: accepts one connection, prints
/// the peer's address, answers `echo:<data>`. Arguments: ADDR PORT.
const TCP_ECHO_PEER: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(); s.settimeout(15)
c,a=s.accept(); print(a[0],flush=True); d=c.recv(100); c.sendall(b'echo:'+d); c.close()";

/// A one-shot UDP server that says who sent: prints the sender's address, answers
/// `echo:<data>`. Arguments: ADDR PORT.
const UDP_ECHO_PEER: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(15)
s.bind((sys.argv[1],int(sys.argv[2])))
d,a=s.recvfrom(100); print(a[0],flush=True); s.sendto(b'echo:'+d,a)";

/// A TCP client: connects to ADDR PORT (from SRC, when given), sends DATA, and prints
/// the address it is connected to and the answer. Arguments: ADDR PORT DATA [SRC].
/// The peer is read right after connect: once the server's answer and FIN are in, a
/// half-closed socket is in TIME_WAIT, where getpeername says ENOTCONN (the socket
/// itself is TCP_CLOSE by then), a race a loaded machine lost.
const TCP_CLIENT: &str = "import socket,sys
s=socket.socket(); s.settimeout(5)
if len(sys.argv)>4: s.bind((sys.argv[4],0))
s.connect((sys.argv[1],int(sys.argv[2]))); p=s.getpeername(); s.sendall(sys.argv[3].encode())
s.shutdown(socket.SHUT_WR); print('%s:%d'%p, s.recv(100).decode())";

/// A UDP client on an unconnected socket: sends DATA to ADDR PORT and prints where
/// the answer came from (any source is accepted) and the answer. Arguments: ADDR
/// PORT DATA.
const UDP_CLIENT: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(sys.argv[3].encode(),(sys.argv[1],int(sys.argv[2])))
d,a=s.recvfrom(100); print('%s:%d'%a, d.decode())";

/// Keeps a TCP listener open (the kernel answers SYNs with SYN-ACKs) until killed.
const TCP_LISTEN: &str = "import socket,sys,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen()
time.sleep(60)";

/// Sends one hand-built TCP SYN on IFACE from a packet socket, to DST_MAC and
/// DST_IP:DST_PORT from SRC_IP:SRC_PORT, with correct checksums, then watches the
/// interface for 2 s and prints "synack ADDR:PORT" for a SYN-ACK to SRC_PORT, or
/// "none". Arguments: IFACE DST_MAC SRC_IP SRC_PORT DST_IP DST_PORT.
const RAW_SYN: &str = r#"import socket,struct,sys,time
iface,dmac,sip,sport,dip,dport=sys.argv[1],sys.argv[2],sys.argv[3],int(sys.argv[4]),sys.argv[5],int(sys.argv[6])
def csum(b):
    if len(b)%2: b+=b'\0'
    s=sum(struct.unpack('!%dH'%(len(b)//2),b)); s=(s>>16)+(s&0xffff); s+=s>>16
    return (~s)&0xffff
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(0x0800))
s.bind((iface,0))
smac=s.getsockname()[4]
src,dst=socket.inet_aton(sip),socket.inet_aton(dip)
tcp=struct.pack('!HHIIBBHHH',sport,dport,0x12345678,0,5<<4,0x02,64240,0,0)
c=csum(src+dst+struct.pack('!BBH',0,6,len(tcp))+tcp)
tcp=tcp[:16]+struct.pack('!H',c)+tcp[18:]
ip=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(tcp),0x4242,0x4000,64,6,0,src,dst)
ip=ip[:10]+struct.pack('!H',csum(ip))+ip[12:]
s.send(bytes.fromhex(dmac.replace(':',''))+smac+b'\x08\x00'+ip+tcp)
end=time.time()+2
while time.time()<end:
    s.settimeout(max(end-time.time(),0.01))
    try: f,a=s.recvfrom(2000)
    except socket.timeout: break
    if a[2]==socket.PACKET_OUTGOING or len(f)<54 or f[23]!=6: continue
    ihl=(f[14]&15)*4; t=f[14+ihl:]
    if struct.unpack('!H',t[2:4])[0]==sport and t[13]&0x12==0x12:
        print('synack %s:%d'%(socket.inet_ntoa(f[26:30]),struct.unpack('!H',t[0:2])[0])); sys.exit(0)
print('none')"#;

/// Turns tx checksum offload off where the test's packets start, so every rewritten
/// checksum is verified by a real receiver (veth otherwise hands partial ones over).
fn full_checksums(sb: &Sandbox) {
    exec_ok(&sb.lan(), &["ethtool", "-K", "eth0", "tx", "off"]);
    for n in 2..=3 {
        exec_ok(
            &sb.container(n),
            &["ethtool", "-K", &format!("veth{n}-peer"), "tx", "off"],
        );
    }
}

/// Sends `payloads` from the LAN to CONTAINER:UNPUBLISHED by routing, while netns3
/// listens there, and returns what the listener printed after the routed-drop counter
/// moved by `expect_drops` (and a settling moment), with how much it moved.
fn routed_datagrams(sb: &Sandbox, payloads: &[&str], expect_drops: u64) -> (String, u64) {
    let listener = Background::spawn(
        &sb.container(3),
        &["python3", "-c", UDP_LISTEN, CONTAINER, UNPUBLISHED],
    );
    wait_listening(&sb.container(3), "udp", 7000);
    let before = sb.counter(ROUTED_DROP);
    let mut argv = vec!["python3", "-c", UDP_SEND, CONTAINER, UNPUBLISHED];
    argv.extend_from_slice(payloads);
    exec_ok(&sb.lan(), &argv);
    let seen = payloads.len();
    eventually(Duration::from_secs(5), || {
        sb.counter(ROUTED_DROP) - before >= expect_drops
    });
    // Long enough for a datagram the datapath let through to reach the listener.
    std::thread::sleep(Duration::from_millis(500));
    let moved = sb.counter(ROUTED_DROP) - before;
    let (out, err) = listener.finish();
    assert!(err.is_empty(), "listener in netns3 failed: {err}");
    assert!(out.lines().count() <= seen, "{out}");
    (out, moved)
}

/// The config file of `sb` with `[masquerade] allow_direct_routing` set to `allow`,
/// brought up again (a re-`up` of the running instance).
fn reup_with_direct_routing(sb: &Sandbox, allow: bool) {
    let toml = std::fs::read_to_string(&sb.config).expect("read the sandbox config");
    let toml: String = toml
        .lines()
        .filter(|l| !l.starts_with("allow_direct_routing"))
        .map(|l| {
            if l == "[masquerade]" {
                format!("{l}\nallow_direct_routing = {allow}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&sb.config, toml).expect("write the sandbox config");
    succeeded(
        &sb.netfast(&["up", "--config", sb.config_str()]),
        "netfast up (re-up)",
    );
    let status = succeeded(
        &sb.netfast(&["status", "--instance", &sb.prefix]),
        "netfast status",
    );
    let line = format!("(allow_direct_routing = {allow})");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("routed in:") && l.ends_with(&line)),
        "status should show {line}:\n{status}"
    );
    let json = succeeded(
        &sb.netfast(&["status", "--instance", &sb.prefix, "--json"]),
        "netfast status --json",
    );
    let json: serde_json::Value = serde_json::from_str(&json).expect("status JSON");
    assert_eq!(json["config"]["allow_direct_routing"], allow, "{json}");
}

fn routed_access(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, "");
    full_checksums(&sb);
    lan_routes_the_subnet(&sb);

    // An unpublished container port: nothing arrives, and the counter moves by
    // exactly the datagrams sent.
    let (seen, moved) = routed_datagrams(&sb, &["routed-1", "routed-2", "routed-3"], 3);
    assert_eq!(seen, "", "netns3 must receive nothing by routing");
    assert_eq!(moved, 3, "{ROUTED_DROP} moves once per datagram sent");
    let drops_before = sb.counter(ROUTED_DROP);

    // A published port still works (the seed's 8088 -> netns2:80).
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
            &format!("printf published | nc -N -w 5 {HOST} 8088"),
        ],
    );
    assert_eq!(reply, "echo:published");
    server.wait(Duration::from_secs(10));

    // A flow the container opened still gets its replies.
    let server = Background::spawn(&sb.lan(), &["python3", "-c", UDP_ECHO_ONCE, LAN, "9001"]);
    wait_listening(&sb.lan(), "udp", 9001);
    let reply = exec_ok(
        &sb.container(3),
        &[
            "sh",
            "-c",
            &format!("printf opened | nc -u -w 2 {LAN} 9001"),
        ],
    );
    assert_eq!(reply, "echo:opened");
    server.wait(Duration::from_secs(10));
    assert_eq!(
        sb.counter(ROUTED_DROP),
        drops_before,
        "the published port and the container's flow must not be counted as routed"
    );

    // Switched on, by a re-`up` (CONFIG only): the datagram arrives, from the LAN
    // peer's own address (routed, not translated).
    reup_with_direct_routing(&sb, true);
    let (seen, moved) = routed_datagrams(&sb, &["allowed"], 0);
    assert_eq!(seen.trim(), format!("{LAN} allowed"), "netns3 receives it");
    assert_eq!(moved, 0);

    // And off again.
    reup_with_direct_routing(&sb, false);
    let (seen, moved) = routed_datagrams(&sb, &["closed-again"], 1);
    assert_eq!((seen.as_str(), moved), ("", 1));
}

#[test]
fn routed_access_to_containers_tc() {
    routed_access(IngressMode::Tc, "rt");
}

#[test]
fn routed_access_to_containers_xdp() {
    routed_access(IngressMode::Xdp, "rx");
}

/// The LAN peer routes the container subnet via the host: in the LAN namespace,
/// which the test created, never in the root namespace.
fn lan_routes_the_subnet(sb: &Sandbox) {
    exec_ok(
        &sb.lan(),
        &["ip", "route", "add", "172.16.0.0/24", "via", HOST],
    );
}

/// Runs a one-shot server (`script` ADDR PORT) in `server_ns` and `client`'s argv in
/// `client_ns`; returns (what the client printed, what the server printed), trimmed.
fn exchange(
    server_ns: &str,
    (script, addr, port, proto): (&str, &str, u16, &str),
    client_ns: &str,
    client: &[&str],
) -> (String, String) {
    let port_arg = port.to_string();
    let server = Background::spawn(server_ns, &["python3", "-c", script, addr, &port_arg]);
    wait_listening(server_ns, proto, port);
    let said = exec_ok(client_ns, client);
    let (heard, err) = server.wait(Duration::from_secs(10));
    assert!(err.is_empty(), "server in {server_ns} failed: {err}");
    (said.trim().to_owned(), heard.trim().to_owned())
}

/// The flows `ct list --json` shows, as (kind, proto, original destination).
fn flows(sb: &Sandbox) -> Vec<(String, String, String)> {
    let json = succeeded(
        &sb.netfast(&["ct", "list", "--instance", &sb.prefix, "--json"]),
        "netfast ct list --json",
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("ct list JSON");
    rows.iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or_default().to_owned(),
                r["proto"].as_str().unwrap_or_default().to_owned(),
                r["original"]["dst"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// With `allow_direct_routing = true`, a LAN peer that routes the subnet via the host
/// reaches netns3 (no port of it published) over TCP, UDP and ICMP echo, and every
/// answer comes back from netns3's own address: the TCP connection completes, the
/// UDP answer comes from 172.16.0.103 (before routed flows: from 10.0.1.48, and the
/// SYN-ACK too, so TCP never completed), and netns3 sees 10.0.1.26. `ct list` shows
/// the routed flows, untranslated; no masqueraded flow is made (`nat list` has no
/// binding, `snat_new` does not move).
fn routed_connections(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, "");
    full_checksums(&sb);
    lan_routes_the_subnet(&sb);
    reup_with_direct_routing(&sb, true);
    let snat_before = sb.counter("snat_new");
    let routed_before = sb.counter("routed_new");

    let (said, heard) = exchange(
        &sb.container(3),
        (TCP_ECHO_PEER, CONTAINER, 7000, "tcp"),
        &sb.lan(),
        &["python3", "-c", TCP_CLIENT, CONTAINER, "7000", "routed-tcp"],
    );
    assert_eq!(said, format!("{CONTAINER}:7000 echo:routed-tcp"));
    assert_eq!(heard, LAN, "netns3 sees the LAN peer's own address");

    let (said, heard) = exchange(
        &sb.container(3),
        (UDP_ECHO_PEER, CONTAINER, 7001, "udp"),
        &sb.lan(),
        &["python3", "-c", UDP_CLIENT, CONTAINER, "7001", "routed-udp"],
    );
    assert_eq!(
        said,
        format!("{CONTAINER}:7001 echo:routed-udp"),
        "the UDP answer comes from the container's own address"
    );
    assert_eq!(heard, LAN);

    let ping = exec_ok(&sb.lan(), &["ping", "-c", "2", "-W", "2", CONTAINER]);
    assert!(ping.contains("2 received"), "{ping}");

    assert!(sb.counter("routed_new") - routed_before >= 3);
    assert!(sb.counter("routed_reply") >= 3);
    assert_eq!(
        sb.counter("snat_new"),
        snat_before,
        "no answer may be taken for a new masqueraded flow"
    );
    let shown = flows(&sb);
    for proto in ["tcp", "udp", "icmp"] {
        let routed = ("ROUTED".to_owned(), proto.to_owned(), CONTAINER.to_owned());
        assert!(shown.contains(&routed), "ct list: {shown:?}");
    }
    let table = succeeded(
        &sb.netfast(&["ct", "list", "--instance", &sb.prefix, "--kind", "routed"]),
        "netfast ct list --kind routed",
    );
    let tcp_row = table
        .lines()
        .find(|l| l.starts_with("tcp") && l.contains(&format!("{CONTAINER}:7000")))
        .unwrap_or_else(|| panic!("no routed tcp row:\n{table}"));
    let original = format!("{LAN}:");
    assert_eq!(
        tcp_row.matches(&original).count(),
        2,
        "ORIGINAL and TRANSLATED are the same tuple: {tcp_row}"
    );
    let nat = succeeded(
        &sb.netfast(&["nat", "list", "--instance", &sb.prefix, "--json"]),
        "netfast nat list --json",
    );
    let nat: serde_json::Value = serde_json::from_str(&nat).expect("nat list JSON");
    assert_eq!(nat["bindings"], serde_json::json!([]), "{nat}");
}

#[test]
fn routed_connections_to_containers_tc() {
    routed_connections(IngressMode::Tc, "dpr");
}

#[test]
fn routed_connections_to_containers_xdp() {
    routed_connections(IngressMode::Xdp, "dpx");
}

/// The host's own addresses inside the subnet, with `allow_direct_routing` off (it
/// plays no part): a LAN peer that routes the subnet via the host reaches a TCP
/// listener of the host on the bridge's 172.16.0.100 and on netns1's point-to-point
/// 172.16.0.1, a UDP service and ping on 172.16.0.100, each answering from the
/// address the peer used (before: the SYN-ACK and the UDP answer were masqueraded
/// from 10.0.1.48, the echo reply dropped). A host connection from 172.16.0.100 to
/// the LAN arrives from 172.16.0.100. No flow is made, and `pass_from_host` counts
/// the host's packets.
fn host_services_on_subnet_addresses(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, "");
    full_checksums(&sb);
    lan_routes_the_subnet(&sb);
    let snat_before = sb.counter("snat_new");
    let from_host_before = sb.counter("pass_from_host");

    for (addr, port) in [(BRIDGE_ADDR, 7100), (P2P_HOST_ADDR, 7101)] {
        let port_arg = port.to_string();
        let (said, heard) = exchange(
            &sb.host(),
            (TCP_ECHO_PEER, addr, port, "tcp"),
            &sb.lan(),
            &["python3", "-c", TCP_CLIENT, addr, &port_arg, "to-host"],
        );
        assert_eq!(said, format!("{addr}:{port} echo:to-host"));
        assert_eq!(heard, LAN);
    }

    let (said, heard) = exchange(
        &sb.host(),
        (UDP_ECHO_PEER, BRIDGE_ADDR, 7102, "udp"),
        &sb.lan(),
        &["python3", "-c", UDP_CLIENT, BRIDGE_ADDR, "7102", "to-host"],
    );
    assert_eq!(said, format!("{BRIDGE_ADDR}:7102 echo:to-host"));
    assert_eq!(heard, LAN);

    let ping = exec_ok(&sb.lan(), &["ping", "-c", "2", "-W", "2", BRIDGE_ADDR]);
    assert!(ping.contains("2 received"), "{ping}");

    // The host's own connection from the bridge's address keeps it.
    let (said, heard) = exchange(
        &sb.lan(),
        (TCP_ECHO_PEER, LAN, 9002, "tcp"),
        &sb.host(),
        &[
            "python3",
            "-c",
            TCP_CLIENT,
            LAN,
            "9002",
            "from-host",
            BRIDGE_ADDR,
        ],
    );
    assert_eq!(said, format!("{LAN}:9002 echo:from-host"));
    assert_eq!(heard, BRIDGE_ADDR, "the LAN sees the host's bridge address");

    assert_eq!(sb.counter("snat_new"), snat_before, "nothing masqueraded");
    assert!(sb.counter("pass_from_host") - from_host_before >= 5);
    let shown = flows(&sb);
    assert!(
        shown
            .iter()
            .all(|(_, _, dst)| dst != BRIDGE_ADDR && dst != P2P_HOST_ADDR && dst != LAN),
        "no flow for the host's own traffic: {shown:?}"
    );
}

#[test]
fn host_services_on_subnet_addresses_tc() {
    host_services_on_subnet_addresses(IngressMode::Tc, "dph");
}

#[test]
fn host_services_on_subnet_addresses_xdp() {
    host_services_on_subnet_addresses(IngressMode::Xdp, "dpy");
}

/// Sends `RAW_SYN` from the LAN's eth0 to the host's MAC and returns its verdict line.
fn crafted_syn(sb: &Sandbox, host_mac: &str, src_port: u16, dst: &str, dst_port: u16) -> String {
    let out = exec_ok(
        &sb.lan(),
        &[
            "python3",
            "-c",
            RAW_SYN,
            "eth0",
            host_mac,
            LAN,
            &src_port.to_string(),
            dst,
            &dst_port.to_string(),
        ],
    );
    out.trim().to_owned()
}

fn loopback_publish(ingress: IngressMode, tag: &str) {
    // `up` must accept 127.0.0.1 as a host address: it is one, on lo.
    let sb = Sandbox::up(
        tag,
        ingress,
        "\n[[publish]]\nspec = \"127.0.0.1:8081:172.16.0.102:80/tcp\"\n",
    );
    full_checksums(&sb);
    // A listener on the backend port: a SYN reaching it is answered.
    let _listener = Background::spawn(
        &sb.container(2),
        &["python3", "-c", TCP_LISTEN, "172.16.0.102", "80"],
    );
    wait_listening(&sb.container(2), "tcp", 80);
    let host_mac = exec_ok(&sb.host(), &["cat", "/sys/class/net/eth0/address"]);
    let host_mac = host_mac.trim();

    // The control: the same crafted SYN to the port published on every address is
    // answered, so the sender and its capture work.
    let answered = crafted_syn(&sb, host_mac, 45_001, HOST, 8088);
    assert_eq!(answered, format!("synack {HOST}:8088"));

    let before = sb.counter("drop_loopback_publish");
    let answer = crafted_syn(&sb, host_mac, 45_002, "127.0.0.1", 8081);
    assert_eq!(
        answer, "none",
        "a SYN from the LAN to 127.0.0.1:8081 must get no SYN-ACK"
    );
    assert_eq!(sb.counter("drop_loopback_publish") - before, 1);
    let flows = succeeded(
        &sb.netfast(&["ct", "list", "--instance", &sb.prefix, "--json"]),
        "netfast ct list",
    );
    assert!(
        !flows.contains("127.0.0.1"),
        "no flow to 127.0.0.1: {flows}"
    );

    // `publish add` applies the same host-address rule: 127.0.0.1 is accepted live.
    let out = sb.netfast(&[
        "publish",
        "add",
        "--instance",
        &sb.prefix,
        "127.0.0.1:8082:172.16.0.102:80",
    ]);
    assert!(
        out.status.success(),
        "publish add 127.0.0.1:8082: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let answer = crafted_syn(&sb, host_mac, 45_003, "127.0.0.1", 8082);
    assert_eq!(answer, "none");
    assert_eq!(sb.counter("drop_loopback_publish") - before, 2);
}

#[test]
fn loopback_publish_is_not_reachable_from_the_lan_tc() {
    loopback_publish(IngressMode::Tc, "lt");
}

#[test]
fn loopback_publish_is_not_reachable_from_the_lan_xdp() {
    loopback_publish(IngressMode::Xdp, "lx");
}
