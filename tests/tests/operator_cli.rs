//! The operator commands against a running seed lab, as root: `publish` (and its old
//! name `forward`), `ct`, `nat`,
//! `stats` and `status` run by the real `netfast` binary from a "second shell" while
//! real traffic flows. Each test has its own prefix and cleans up on drop.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::Duration,
};

use netfast::config::IngressMode;
use netfast_common::Counter;
use support::{
    Background, Sandbox, eventually, exec, exec_ok, succeeded, text, unique_prefix, wait_listening,
};

const HOST: &str = "10.0.1.48";
const LAN: &str = "10.0.1.26";
const NETNS2: &str = "172.16.0.102";

/// A TCP echo server for any number of connections: each line comes back as `echo:<line>`.
const TCP_ECHO_MANY: &str = "import socket,sys,threading
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen()
def serve(c):
    with c:
        while True:
            d=c.recv(100)
            if not d: break
            c.sendall(b'echo:'+d)
while True:
    c,_=s.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()";

/// One connection attempt: exit 0 when `probe` comes back echoed within 2 s.
const TCP_PROBE: &str = "import socket,sys
s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)
s.sendall(b'probe'); assert s.recv(100)==b'echo:probe'";

/// Holds one connection: exchanges `one`, writes `<local port>` to MARKER, waits for
/// the file GO, exchanges `two` on the same connection and prints the reply.
const TCP_HOLD: &str = "import socket,sys,os,time
host,port,marker,go=sys.argv[1],int(sys.argv[2]),sys.argv[3],sys.argv[4]
s=socket.create_connection((host,port),timeout=5)
s.sendall(b'one'); assert s.recv(100)==b'echo:one'
open(marker+'.tmp','w').write(str(s.getsockname()[1])); os.rename(marker+'.tmp',marker)
deadline=time.time()+30
while not os.path.exists(go):
    if time.time()>deadline: sys.exit('never told to go on')
    time.sleep(0.05)
s.sendall(b'two'); print(s.recv(100).decode(),flush=True)";

/// Receives datagrams on a UDP port forever, answering each with `echo:<data>`.
const UDP_ECHO_MANY: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind((sys.argv[1],int(sys.argv[2])))
while True:
    d,a=s.recvfrom(100); s.sendto(b'echo:'+d,a)";

/// Sends N datagrams from one socket (one flow), waiting for each echo.
const UDP_SEND_N: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2); s.bind(('0.0.0.0',0))
for i in range(int(sys.argv[3])):
    s.sendto(b'd%d'%i,(sys.argv[1],int(sys.argv[2]))); s.recvfrom(100)
print(s.getsockname()[1],flush=True)";

fn json(out: &Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {}", text(&out.stdout)))
}

fn probe(sb: &Sandbox, port: u16) -> bool {
    exec(
        &sb.lan(),
        &["python3", "-c", TCP_PROBE, HOST, &port.to_string()],
    )
    .status
    .success()
}

/// Temp files removed on drop.
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats["counters"]
        .as_array()
        .expect("counters array")
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["value"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

/// Driven through `forward`, the verb's old name, which must keep working: the other
/// tests use `publish`.
#[test]
fn forward_add_and_del_while_traffic_flows() {
    let sb = Sandbox::up("fa", IngressMode::Tc, "");
    let inst = sb.prefix.clone();
    let _server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", TCP_ECHO_MANY, NETNS2, "81"],
    );
    wait_listening(&sb.container(2), "tcp", 81);
    assert!(!probe(&sb, 8081), "8081 is not published yet");

    // A client loops while the forward is added: connections start succeeding.
    let client = Background::spawn(
        &sb.lan(),
        &[
            "sh",
            "-c",
            "for i in $(seq 200); do python3 -c \"$1\" $2 8081 2>/dev/null && echo ok || echo fail; sleep 0.1; done",
            "sh",
            TCP_PROBE,
            HOST,
        ],
    );
    // Let the loop fail a few times first.
    thread::sleep(Duration::from_millis(700));
    let out = sb.netfast(&[
        "forward",
        "add",
        "--instance",
        &inst,
        "8081:172.16.0.102:81/tcp",
    ]);
    let said = succeeded(&out, "forward add");
    assert!(
        said.contains("published 8081:172.16.0.102:81/tcp"),
        "{said}"
    );
    assert!(
        eventually(Duration::from_secs(5), || probe(&sb, 8081)),
        "connections to 8081 must succeed once it is published"
    );
    thread::sleep(Duration::from_millis(500));
    let (attempts, _) = client.finish();
    let attempts: Vec<&str> = attempts.lines().collect();
    let first_ok = attempts.iter().position(|a| *a == "ok");
    assert!(
        first_ok.is_some_and(|i| i > 0)
            && attempts[..first_ok.unwrap_or(0)]
                .iter()
                .all(|a| *a == "fail"),
        "the looping client should fail, then succeed: {attempts:?}"
    );
    assert_eq!(attempts.last(), Some(&"ok"), "{attempts:?}");

    // `publish list`, by --config this time, shows it next to the seed's 8088.
    let list = json(
        &sb.netfast(&["publish", "list", "--config", sb.config_str(), "--json"]),
        "publish list",
    );
    let ports: Vec<u64> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["host_port"].as_u64())
        .collect();
    assert_eq!(ports, [8081, 8088], "{list}");

    // Hold one connection open across the delete.
    let marker = std::env::temp_dir().join(format!("netfast-{inst}-held"));
    let go = std::env::temp_dir().join(format!("netfast-{inst}-go"));
    let _files = TempFiles(vec![marker.clone(), go.clone()]);
    let held = Background::spawn(
        &sb.lan(),
        &[
            "python3",
            "-c",
            TCP_HOLD,
            HOST,
            "8081",
            path_str(&marker),
            path_str(&go),
        ],
    );
    assert!(
        eventually(Duration::from_secs(10), || marker.exists()),
        "the held connection never exchanged its first bytes"
    );
    let client_port: u64 = std::fs::read_to_string(&marker)
        .expect("marker")
        .trim()
        .parse()
        .expect("client port");

    // ct list --json shows the client's exact tuple and the translated one.
    let flows = json(
        &sb.netfast(&[
            "ct",
            "list",
            "--instance",
            &inst,
            "--kind",
            "dnat",
            "--port",
            "8081",
            "--json",
        ]),
        "ct list",
    );
    let flows = flows.as_array().expect("array");
    let flow = flows
        .iter()
        .find(|f| f["original"]["sport"] == client_port)
        .unwrap_or_else(|| panic!("no flow from port {client_port}: {flows:?}"));
    assert_eq!(flow["proto"], "tcp");
    assert_eq!(flow["kind"], "DNAT");
    assert_eq!(flow["original"]["src"], LAN);
    assert_eq!(flow["original"]["dst"], HOST);
    assert_eq!(flow["original"]["dport"], 8081);
    assert_eq!(flow["translated"]["src"], LAN);
    assert_eq!(flow["translated"]["sport"], client_port);
    assert_eq!(flow["translated"]["dst"], NETNS2);
    assert_eq!(flow["translated"]["dport"], 81);
    assert_eq!(flow["tcp_state"], "ESTABLISHED");
    assert_eq!(flow["complete"], true);
    assert!(flow["packets_original"].as_u64() >= Some(3), "{flow}");
    assert!(flow["packets_reply"].as_u64() >= Some(2), "{flow}");

    // Delete: new connections fail, the held one keeps working.
    let said = succeeded(
        &sb.netfast(&[
            "forward",
            "del",
            "--instance",
            &inst,
            "8081:172.16.0.102:81/tcp",
        ]),
        "publish del",
    );
    assert!(said.contains("established flows keep working"), "{said}");
    assert!(!probe(&sb, 8081), "a new connection after del must fail");
    std::fs::write(&go, "").expect("go file");
    let (reply, err) = held.wait(Duration::from_secs(10));
    assert_eq!(reply.trim(), "echo:two", "held connection after del: {err}");

    // --kill-flows: re-publish, connect once, delete with the flows.
    succeeded(
        &sb.netfast(&[
            "forward",
            "add",
            "--instance",
            &inst,
            "8081:172.16.0.102:81",
        ]),
        "forward add again",
    );
    assert!(eventually(Duration::from_secs(5), || probe(&sb, 8081)));
    let said = succeeded(
        &sb.netfast(&[
            "forward",
            "del",
            "--instance",
            &inst,
            "8081:172.16.0.102:81",
            "--kill-flows",
        ]),
        "forward del --kill-flows",
    );
    assert!(!said.contains("deleted 0 flows"), "{said}");
    let left = json(
        &sb.netfast(&[
            "ct",
            "list",
            "--instance",
            &inst,
            "--port",
            "8081",
            "--json",
        ]),
        "ct list after --kill-flows",
    );
    assert_eq!(
        left,
        serde_json::json!([]),
        "DNAT flows through 8081 remain"
    );
}

#[test]
fn stats_move_by_the_packets_sent_and_nat_list_shows_bindings() {
    let sb = Sandbox::up(
        "st",
        IngressMode::Tc,
        "\n[[publish]]\nspec = \"5353:172.16.0.102:53/udp\"\n",
    );
    let inst = sb.prefix.clone();
    let _server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", UDP_ECHO_MANY, "0.0.0.0", "53"],
    );
    wait_listening(&sb.container(2), "udp", 53);

    let before = json(
        &sb.netfast(&["stats", "--instance", &inst, "--json"]),
        "stats",
    );
    const N: u64 = 7;
    let port = exec_ok(
        &sb.lan(),
        &["python3", "-c", UDP_SEND_N, HOST, "5353", &N.to_string()],
    );
    let port: u64 = port.trim().parse().expect("client port");
    let after = json(
        &sb.netfast(&["stats", "--instance", &inst, "--json"]),
        "stats",
    );
    let moved = |name| counter(&after, name) - counter(&before, name);
    assert_eq!(moved("dnat_new"), 1, "one new flow");
    assert_eq!(moved("dnat_established"), N - 1, "the other datagrams");
    assert_eq!(moved("dnat_reply"), N, "every echo");
    // The CLI's sums match the library's.
    assert_eq!(counter(&after, "dnat_new"), sb.counter("dnat_new"));
    for c in after["counters"].as_array().expect("counters") {
        // The kind comes from the counter's own classification in netfast-common, the
        // one the datapath's verdicts follow: a hand-kept list here fell behind it.
        let name = c["name"].as_str().expect("a counter name");
        let kind = *Counter::ALL
            .iter()
            .find(|k| k.name() == name)
            .unwrap_or_else(|| panic!("stats lists an unknown counter {name}"));
        let want = if kind.is_host_local() {
            "socket"
        } else if !kind.is_decision() {
            "info"
        } else if kind.is_drop() {
            "drop"
        } else if kind.is_redirect() {
            "redirect"
        } else {
            "pass"
        };
        assert_eq!(c["decision"], want, "{c}");
    }
    let maps = after["maps"].as_array().expect("maps");
    let ct = maps
        .iter()
        .find(|m| m["name"] == "CONNTRACK")
        .expect("CONNTRACK fill");
    assert!(ct["entries"].as_u64() >= Some(2), "{ct}");
    assert!(ct["capacity"].as_u64() > Some(0), "{ct}");
    let frag = maps
        .iter()
        .find(|m| m["name"] == "FRAGMENTS")
        .expect("FRAGMENTS fill");
    assert_eq!(frag["capacity"].as_u64(), Some(8192), "{frag}");

    let flows = json(
        &sb.netfast(&[
            "ct",
            "list",
            "--instance",
            &inst,
            "--proto",
            "udp",
            "--json",
        ]),
        "ct list",
    );
    let flow = flows
        .as_array()
        .expect("array")
        .iter()
        .find(|f| f["original"]["sport"] == port)
        .unwrap_or_else(|| panic!("no flow from {port}: {flows}"));
    assert_eq!(flow["packets_original"], N);
    assert_eq!(flow["packets_reply"], N);
    assert_eq!(flow["tcp_state"], serde_json::Value::Null);

    // --watch gives rates, bounded by --count.
    let watch = succeeded(
        &sb.netfast(&[
            "stats",
            "--instance",
            &inst,
            "--watch",
            "1",
            "--count",
            "1",
            "--json",
        ]),
        "stats --watch",
    );
    let sample: serde_json::Value = serde_json::from_str(watch.trim()).expect("one JSON line");
    assert!(sample["counters"][0]["rate"].is_number(), "{sample}");

    // Masquerade: a UDP exchange from netns3 shows up as a binding in `nat list`.
    let _far = Background::spawn(&sb.lan(), &["python3", "-c", UDP_ECHO_MANY, LAN, "9001"]);
    wait_listening(&sb.lan(), "udp", 9001);
    let cport = exec_ok(
        &sb.container(3),
        &["python3", "-c", UDP_SEND_N, LAN, "9001", "2"],
    );
    let nat = json(
        &sb.netfast(&["nat", "list", "--instance", &inst, "--json"]),
        "nat list",
    );
    let container = format!("172.16.0.103:{}", cport.trim());
    let binding = nat["bindings"]
        .as_array()
        .expect("bindings")
        .iter()
        .find(|b| b["container"] == container.as_str())
        .unwrap_or_else(|| panic!("no binding for {container}: {nat}"));
    assert_eq!(binding["proto"], "udp");
    assert_eq!(binding["remote"], format!("{LAN}:9001"));
    let uplink = binding["uplink"].as_str().expect("uplink");
    assert!(uplink.starts_with(&format!("{HOST}:")), "{uplink}");
    let udp = nat["port_use"]
        .as_array()
        .expect("port_use")
        .iter()
        .find(|p| p["proto"] == "udp")
        .expect("udp use");
    assert!(udp["used"].as_u64() >= Some(1), "{udp}");
    assert_eq!(udp["total"], 4536);
}

fn bpftool_link(path: &Path) -> serde_json::Value {
    let out = Command::new("bpftool")
        .args(["--json", "link", "show", "pinned"])
        .arg(path)
        .output()
        .expect("run bpftool");
    json(&out, "bpftool link show")
}

fn bpftool_prog(id: &serde_json::Value) -> serde_json::Value {
    let id = id.as_u64().unwrap_or_else(|| panic!("prog id {id}"));
    let out = Command::new("bpftool")
        .args(["--json", "prog", "show", "id", &id.to_string()])
        .output()
        .expect("run bpftool");
    json(&out, "bpftool prog show")
}

fn status_matches_bpftool(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, "");
    let inst = sb.prefix.clone();
    let status = json(
        &sb.netfast(&["status", "--instance", &inst, "--json"]),
        "status",
    );
    let pins = netfast::bpf::pins::pin_dir(&inst);
    assert_eq!(status["pin_dir"], path_str(&pins));
    assert_eq!(status["config"]["uplink_addr"], HOST);
    assert_eq!(status["config"]["masquerade"], "172.16.0.0/24");
    assert_eq!(status["config"]["snat_ports"], "61000-65535");
    assert_eq!(status["config"]["published_ports"], 1);
    // The old key stays for scripts written against it.
    assert_eq!(status["config"]["forwards"], 1);
    let programs = status["programs"].as_array().expect("programs");
    // (pin, program, attach, hook): in XDP mode the tc ingress program sits behind XDP.
    let ingress_rows: &[(&str, &str, &str)] = match ingress {
        IngressMode::Tc => &[("link_uplink_ingress", "uplink_ingress_tc", "tcx")],
        IngressMode::Xdp => &[
            ("link_uplink_ingress", "uplink_ingress_xdp", "xdp"),
            ("link_uplink_ingress_fallback", "uplink_ingress_tc", "tcx"),
        ],
    };
    // (pin, program, attach, hook, interface): the uplink's, then the container
    // program on each container's host-side veth, in both ingress modes.
    let expected: Vec<(&str, &str, &str, &str, &str)> = ingress_rows
        .iter()
        .map(|&(pin, prog, attach)| (pin, prog, attach, "ingress", "eth0"))
        .chain([(
            "link_uplink_egress",
            "uplink_egress_tc",
            "tcx",
            "egress",
            "eth0",
        )])
        // The seed's [host_local] on the lab's own cgroup, in the order of the hooks
        // (no interface).
        .chain([
            (
                "link_host_connect4",
                "host_connect4",
                "cgroup",
                "connect4",
                "",
            ),
            (
                "link_host_sendmsg4",
                "host_sendmsg4",
                "cgroup",
                "sendmsg4",
                "",
            ),
            (
                "link_host_recvmsg4",
                "host_recvmsg4",
                "cgroup",
                "recvmsg4",
                "",
            ),
            (
                "link_host_getpeername4",
                "host_getpeername4",
                "cgroup",
                "getpeername4",
                "",
            ),
        ])
        .chain(["veth1", "veth2", "veth3"].map(|veth| {
            let pin: &str = match veth {
                "veth1" => "link_container_veth1",
                "veth2" => "link_container_veth2",
                _ => "link_container_veth3",
            };
            (pin, "container_ingress_tc", "tcx", "ingress", veth)
        }))
        .collect();
    assert_eq!(programs.len(), expected.len(), "{status}");
    let cgroup = sb.cgroup();
    for (p, (pin, prog, attach, hook, interface)) in programs.iter().zip(&expected) {
        assert_eq!(p["pin"], *pin, "{p}");
        assert_eq!(p["program"], *prog, "{p}");
        assert_eq!(p["attach"], *attach, "{p}");
        if *attach == "cgroup" {
            assert_eq!(p["cgroup"], path_str(&cgroup), "{p}");
            assert_eq!(p["interface"], serde_json::Value::Null, "{p}");
        } else {
            assert_eq!(p["interface"], *interface, "{p}");
        }
        assert_eq!(p["hook"], *hook, "{p}");
        assert_eq!(p["fallback"], *pin == "link_uplink_ingress_fallback", "{p}");
        let link = bpftool_link(&pins.join(pin));
        assert_eq!(p["link_id"], link["id"], "{p} vs {link}");
        assert_eq!(p["prog_id"], link["prog_id"], "{p} vs {link}");
        // The program behind the link is of the kind status says.
        let prog = bpftool_prog(&link["prog_id"]);
        let prog_type = match *attach {
            "xdp" => "xdp",
            "cgroup" => "cgroup_sock_addr",
            _ => "sched_cls",
        };
        assert_eq!(prog["type"], prog_type, "{p} vs {prog}");
    }
    if ingress == IngressMode::Xdp {
        let mode = programs[0]["mode"].as_str().expect("xdp mode is known");
        assert!(["native", "skb"].contains(&mode), "{mode}");
    }
    let table = succeeded(
        &sb.netfast(&["status", "--instance", &inst]),
        "status (table)",
    );
    assert!(
        table.contains("PROGRAM") && table.contains("eth0"),
        "{table}"
    );
    assert_eq!(
        table.contains("tcx ingress (fallback for XDP)"),
        ingress == IngressMode::Xdp,
        "{table}"
    );

    // Maps carry BTF: bpftool prints CONNTRACK's field names.
    exec_ok(&sb.container(2), &["ping", "-c", "1", "-W", "2", LAN]);
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(pins.join("CONNTRACK"))
        .output()
        .expect("run bpftool");
    let dump = succeeded(&dump, "bpftool map dump");
    for field in [
        "src_addr",
        "dst_port",
        "nat_addr",
        "tcp_flags",
        "created_ns",
        "packets",
    ] {
        assert!(dump.contains(field), "bpftool shows no {field}:\n{dump}");
    }
}

#[test]
fn status_matches_bpftool_tc() {
    status_matches_bpftool(IngressMode::Tc, "sc");
}

#[test]
fn status_matches_bpftool_xdp() {
    status_matches_bpftool(IngressMode::Xdp, "sx");
}

#[test]
fn concurrent_publish_add_exactly_one_wins() {
    let sb = Sandbox::up("cc", IngressMode::Tc, "");
    let inst = sb.prefix.clone();
    let bin = support::netfast_bin();
    // Identical keys (BPF_NOEXIST alone would catch those), then every address
    // against one address of the same port (only the forwards lock catches those).
    let races = (9100..9105u16)
        .map(|port| {
            (
                port,
                format!("{port}:172.16.0.102:80/tcp"),
                format!("{port}:172.16.0.103:80/tcp"),
            )
        })
        .chain((9105..9110u16).map(|port| {
            (
                port,
                format!("{port}:172.16.0.102:80/tcp"),
                format!("{HOST}:{port}:172.16.0.103:80/tcp"),
            )
        }));
    for (port, first, second) in races {
        let spawn = |spec: &str| {
            Command::new(&bin)
                .args(["--netns", &sb.host(), "publish", "add", "--instance", &inst])
                .arg(spec)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn netfast")
        };
        let (a, b) = (spawn(&first), spawn(&second));
        let outs = [
            a.wait_with_output().expect("wait"),
            b.wait_with_output().expect("wait"),
        ];
        let winners = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(winners, 1, "port {port}: {outs:?}");
        let loser = outs.iter().find(|o| !o.status.success()).expect("a loser");
        let err = text(&loser.stderr);
        assert_eq!(loser.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("{port}/tcp")), "{err}");
    }
    let list = json(
        &sb.netfast(&["publish", "list", "--instance", &inst, "--json"]),
        "publish list",
    );
    let n = list
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| (9100..9110).contains(&r["host_port"].as_u64().unwrap_or(0)))
        .count();
    assert_eq!(n, 10, "one entry per contested port: {list}");
}

/// A directory in bpffs, removed on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn bad_input_exits_2_and_changes_no_map() {
    let sb = Sandbox::up("bi", IngressMode::Tc, "");
    let inst = sb.prefix.clone();
    let snapshot = || {
        let fwd = json(
            &sb.netfast(&["publish", "list", "--instance", &inst, "--json"]),
            "publish list",
        );
        let status = json(
            &sb.netfast(&["status", "--instance", &inst, "--json"]),
            "status",
        );
        (fwd, status["config"].clone())
    };
    let before = snapshot();

    // An instance directory without its maps.
    let empty = format!("{}e", unique_prefix("bi"));
    let empty_dir = PinDir(netfast::bpf::pins::pin_dir(&empty));
    std::fs::create_dir_all(&empty_dir.0).expect("mkdir in bpffs");
    let unknown = format!("{inst}nosuch");

    #[rustfmt::skip]
    let cases: &[(&[&str], &str)] = &[
        (&["publish", "add", "--instance", &inst, "0:172.16.0.102:80"], "host port 0"),
        (&["publish", "add", "--instance", &inst, "70000:172.16.0.102:80"], "70000"),
        (&["publish", "add", "--instance", &inst, "9000-8000:172.16.0.102:80"], "9000-8000"),
        (&["publish", "add", "--instance", &inst, "garbage"], "\"garbage\""),
        (&["publish", "add", "--instance", &inst, "8088:172.16.0.103:80"], "8088/tcp is already published"),
        (&["publish", "add", "--instance", &inst, "10.0.1.48:8088:172.16.0.103:80"], "8088/tcp is already published"),
        (&["publish", "add", "--instance", &inst, "8089:172.16.9.9:80"], "172.16.9.9"),
        (&["publish", "add", "--instance", &inst, "8086-8090:172.16.0.102:80"], "8088/tcp is already published"),
        (&["publish", "del", "--instance", &inst, "8095:172.16.0.102:80"], "8095/tcp is not published"),
        (&["publish", "del", "--instance", &inst, "8088:172.16.0.103:80"], "172.16.0.103"),
        (&["publish", "add", "--instance", &unknown, "8089:172.16.0.102:80"], &unknown),
        (&["publish", "list", "--instance", "../etc"], "../etc"),
        (&["ct", "list", "--instance", &unknown], &unknown),
        (&["ct", "flush", "--instance", &unknown], &unknown),
        (&["stats", "--instance", &empty], "has no pinned"),
        (&["status", "--instance", &empty], "has no pinned"),
        (&["ct", "list", "--instance", &inst, "--port", "70000"], "70000"),
        (&["ct", "list", "--instance", &inst, "--kind", "masq"], "masq"),
        (&["stats", "--instance", &inst, "--watch", "0"], "0"),
    ];
    for (args, needle) in cases {
        let out = sb.netfast(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert_eq!(snapshot(), before, "a refused command changed a map");

    // Not root: refused before anything is opened.
    let out = Command::new(support::netfast_bin())
        .args([
            "forward",
            "add",
            "--instance",
            &inst,
            "8089:172.16.0.102:80",
        ])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run netfast as nobody");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "as nobody: {err}");
    assert!(err.contains("root"), "{err}");
    assert_eq!(snapshot(), before, "a refused command changed a map");
}

/// `netfast ... | head -1`: every read command ends with exit 0 and says nothing on
/// stderr when its stdout pipe closes, whether before its first write or between two
/// `--watch` samples.
#[test]
fn read_commands_end_quietly_when_the_pipe_closes() {
    use std::{
        io::{BufRead, BufReader},
        process::Stdio,
    };
    let sb = Sandbox::up("bp", IngressMode::Tc, "");
    let inst = sb.prefix.clone();
    let host = sb.host();
    let commands: &[&[&str]] = &[
        &["ct", "list"],
        &["ct", "list", "--json"],
        &["publish", "list"],
        &["publish", "list", "--json"],
        &["nat", "list"],
        &["nat", "list", "--json"],
        &["status"],
        &["status", "--json"],
        &["stats"],
        &["stats", "--json"],
        &["stats", "--watch", "1", "--count", "3"],
        &["stats", "--watch", "1", "--count", "3", "--json"],
    ];
    for args in commands {
        let mut cmd = Command::new(support::netfast_bin());
        cmd.args(["--netns", &host])
            .args(*args)
            .args(["--instance", &inst])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn netfast");
        let stdout = child.stdout.take().expect("stdout");
        if args.contains(&"--watch") {
            // Like `head -1`: read one line, then close the pipe.
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("read the first line");
            assert!(!line.is_empty(), "{args:?} printed nothing");
        } else {
            // Closed before netfast writes anything.
            drop(stdout);
        }
        let out = child.wait_with_output().expect("wait for netfast");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} wrote to stderr: {err}");
    }
}

/// `publish del` takes back every row `publish list` prints, as the row's three
/// columns or joined into one spec (`*:8088:172.16.0.102:80/tcp`): any address and one
/// address, TCP and UDP, and each port of a published range.
#[test]
fn publish_del_takes_what_publish_list_prints() {
    let sb = Sandbox::up("fd", IngressMode::Tc, "");
    let inst = sb.prefix.clone();
    let publish = || {
        for spec in [
            "8090-8091:172.16.0.103:90/udp",
            "10.0.1.48:8092:172.16.0.102:81/tcp",
            "10.0.1.48:5353:172.16.0.103:53/udp",
        ] {
            succeeded(
                &sb.netfast(&["publish", "add", "--instance", &inst, spec]),
                "forward add",
            );
        }
    };
    let rows = || -> Vec<Vec<String>> {
        let list = succeeded(
            &sb.netfast(&["publish", "list", "--instance", &inst]),
            "publish list",
        );
        list.lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    };
    for joined in [false, true] {
        if joined {
            // The seed's 8088 went in the first round; put it back with the others.
            succeeded(
                &sb.netfast(&[
                    "forward",
                    "add",
                    "--instance",
                    &inst,
                    "8088:172.16.0.102:80",
                ]),
                "forward add",
            );
        }
        publish();
        let listed = rows();
        assert_eq!(listed.len(), 5, "{listed:?}");
        assert!(
            listed.iter().any(|r| r[1] == "*:8088")
                && listed.iter().any(|r| r[1] == "10.0.1.48:8092"),
            "{listed:?}"
        );
        for row in &listed {
            let [proto, host, backend] = row.as_slice() else {
                panic!("a row of three columns: {row:?}");
            };
            let spec = format!("{host}:{backend}/{proto}");
            let mut args = vec!["publish", "del", "--instance", &inst];
            if joined {
                args.push(&spec);
            } else {
                args.extend([proto.as_str(), host.as_str(), backend.as_str()]);
            }
            let out = sb.netfast(&args);
            let said = succeeded(&out, &format!("{args:?}"));
            assert!(said.contains("unpublished"), "{said}");
        }
        assert_eq!(rows(), Vec::<Vec<String>>::new(), "every row was deleted");
    }
}
