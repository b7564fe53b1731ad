//! The CNI plugin, driven the way libcni drives it: the built `netfast-cni` binary run
//! inside a sandbox host namespace with `CNI_*` environment variables and the network
//! config (with prevResult) on stdin. The test imitates what the bridge plugin and
//! host-local would have done before it: a bridge with the gateway address, a veth per
//! container with its host side on the bridge, the container's address and default
//! route. A far-side namespace sits on the uplink. Every name starts with this run's
//! prefix ("nc..."), and everything is removed on drop, also on failure.

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
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::{Value, json};
use support::{
    Background, exec, exec_ok, netfast, netfast_cni_bin, require_root, succeeded, text,
    wait_listening,
};

const UPLINK_HOST: &str = "10.77.0.1";
const FAR: &str = "10.77.0.2";
const GATEWAY: &str = "10.88.0.1";
const SNAT_PORTS: std::ops::RangeInclusive<u16> = 61000..=65535;

/// A one-shot TCP server: accepts one connection, answers `echo:<data>`, prints the peer.
const TCP_ECHO_ONCE: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(); s.settimeout(15)
c,a=s.accept(); d=c.recv(100); c.sendall(b'echo:'+d); c.close()
print(a[0],a[1],flush=True)";

/// This run's own prefix: "nc", the pid and a counter (at most 9 characters, so
/// every interface name built on it fits in 15).
fn prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("nc{}{n}", std::process::id() % 100_000)
}

fn sh(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    succeeded(&out, &argv.join(" "));
}

/// What the plugin answered.
struct Answer {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Answer {
    fn from(out: &Output) -> Answer {
        Answer {
            ok: out.status.success(),
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
        }
    }

    /// The CNI error JSON of a failed call: (code, msg).
    fn error(&self) -> (u64, String) {
        assert!(
            !self.ok,
            "expected a CNI error, got success: {}",
            self.stdout
        );
        let v: Value = serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not error JSON ({e}): {:?}", self.stdout));
        assert!(v["cniVersion"].is_string(), "{v}");
        (
            v["code"].as_u64().expect("code"),
            v["msg"].as_str().expect("msg").to_owned(),
        )
    }

    fn expect_ok(&self, what: &str) -> &str {
        assert!(
            self.ok,
            "{what} failed: stdout {}\nstderr {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }
}

/// One imitated container: its namespace, host-side veth, address and MAC.
#[derive(Clone)]
struct Container {
    id: String,
    netns: String,
    ifname: String,
    veth: String,
    address: Ipv4Addr,
    mac: String,
    /// The bridge its host side is on, and that bridge's (gateway) address.
    bridge: String,
    gateway: Ipv4Addr,
}

/// The sandbox: host namespace (uplink, bridge), far side, containers. Drop takes the
/// instance down (from inside the host namespace) and removes the namespaces.
struct Net {
    p: String,
    host: String,
    far: String,
    bridge: String,
    instance: String,
    containers: Vec<String>,
}

impl Net {
    fn new() -> Net {
        require_root();
        let p = prefix();
        let net = Net {
            host: format!("{p}h"),
            far: format!("{p}f"),
            bridge: format!("{p}br"),
            instance: format!("{p}net"),
            containers: Vec::new(),
            p,
        };
        let (h, f) = (net.host.as_str(), net.far.as_str());
        sh(&["ip", "netns", "add", h]);
        sh(&["ip", "netns", "add", f]);
        let up = format!("{}u", net.p);
        sh(&[
            "ip", "link", "add", &up, "netns", h, "type", "veth", "peer", "name", "eth0", "netns",
            f,
        ]);
        sh(&[
            "ip",
            "-n",
            h,
            "addr",
            "add",
            &format!("{UPLINK_HOST}/24"),
            "dev",
            &up,
        ]);
        sh(&["ip", "-n", h, "link", "set", &up, "up"]);
        sh(&["ip", "-n", h, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", h, "route", "add", "default", "via", FAR]);
        sh(&[
            "ip",
            "-n",
            f,
            "addr",
            "add",
            &format!("{FAR}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", f, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", f, "link", "set", "lo", "up"]);
        // What the bridge plugin does with isGateway: the bridge, its address, forwarding.
        sh(&["ip", "-n", h, "link", "add", &net.bridge, "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            h,
            "addr",
            "add",
            &format!("{GATEWAY}/24"),
            "dev",
            &net.bridge,
        ]);
        sh(&["ip", "-n", h, "link", "set", &net.bridge, "up"]);
        exec_ok(h, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        net
    }

    /// A container `n` the way bridge + host-local leave it: a namespace with eth0 at
    /// 10.88.0.(10+n)/24, default route via the bridge, the host side on the bridge.
    fn container(&mut self, n: u8) -> Container {
        let bridge = self.bridge.clone();
        self.container_on(n, &bridge, GATEWAY.parse().expect("addr"))
    }

    /// A second network in the host namespace, for a second instance: an uplink
    /// (`<prefix>u2`, 10.78.0.1/24, its peer in the far namespace) and a bridge
    /// (`<prefix>br2`, 10.89.0.1/24). Returns (uplink, bridge, gateway).
    fn second_network(&self) -> (String, String, Ipv4Addr) {
        let (h, f) = (self.host.as_str(), self.far.as_str());
        let (uplink, bridge) = (format!("{}u2", self.p), format!("{}br2", self.p));
        sh(&[
            "ip", "link", "add", &uplink, "netns", h, "type", "veth", "peer", "name", "eth1",
            "netns", f,
        ]);
        sh(&["ip", "-n", h, "addr", "add", "10.78.0.1/24", "dev", &uplink]);
        sh(&["ip", "-n", h, "link", "set", &uplink, "up"]);
        sh(&["ip", "-n", f, "addr", "add", "10.78.0.2/24", "dev", "eth1"]);
        sh(&["ip", "-n", f, "link", "set", "eth1", "up"]);
        sh(&["ip", "-n", h, "link", "add", &bridge, "type", "bridge"]);
        sh(&["ip", "-n", h, "addr", "add", "10.89.0.1/24", "dev", &bridge]);
        sh(&["ip", "-n", h, "link", "set", &bridge, "up"]);
        (uplink, bridge, Ipv4Addr::new(10, 89, 0, 1))
    }

    /// A container `n` on `bridge`, whose address is `gateway`: eth0 at the gateway's
    /// /24 with host part 10+n, default route via the gateway.
    fn container_on(&mut self, n: u8, bridge: &str, gateway: Ipv4Addr) -> Container {
        let ns = format!("{}c{n}", self.p);
        let veth = format!("{}v{n}", self.p);
        sh(&["ip", "netns", "add", &ns]);
        self.containers.push(ns.clone());
        let h = self.host.as_str();
        sh(&[
            "ip", "-n", h, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        sh(&["ip", "-n", h, "link", "set", &veth, "master", bridge, "up"]);
        let [a, b, c, _] = gateway.octets();
        let address = Ipv4Addr::new(a, b, c, 10 + n);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
        ]);
        let mac = link_mac(&ns, "eth0");
        Container {
            id: format!("{}id{n}", self.p),
            netns: format!("/run/netns/{ns}"),
            ifname: "eth0".to_owned(),
            veth,
            address,
            mac,
            bridge: bridge.to_owned(),
            gateway,
        }
    }

    /// The bridge plugin's result for `c` (CNI 1.0.0), which libcni hands on as prevResult.
    fn prev_result(&self, c: &Container) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": c.bridge, "mac": link_mac(&self.host, &c.bridge)},
                {"name": c.veth, "mac": link_mac(&self.host, &c.veth)},
                {"name": c.ifname, "mac": c.mac, "sandbox": c.netns}
            ],
            "ips": [{"address": format!("{}/24", c.address), "gateway": c.gateway, "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        })
    }

    /// The netfast-cni entry of the conflist, as libcni passes it: name and
    /// cniVersion injected, `extra` keys merged in.
    fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0",
            "name": format!("{}net", self.p),
            "type": "netfast-cni",
            "capabilities": {"portMappings": true},
        });
        if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        conf
    }

    /// Runs the plugin inside the host namespace, as libcni does: env + stdin.
    fn cni(&self, command: &str, c: Option<&Container>, conf: &Value) -> Answer {
        self.plugin(&netfast_cni_bin(), command, c, conf)
    }

    /// Runs plugin `bin` as libcni does (see [`Net::cni`]).
    fn plugin(&self, bin: &Path, command: &str, c: Option<&Container>, conf: &Value) -> Answer {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host))
            .arg(bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(c) = c {
            cmd.env("CNI_CONTAINERID", &c.id)
                .env("CNI_NETNS", &c.netns)
                .env("CNI_IFNAME", &c.ifname);
        }
        let mut child = cmd.spawn().expect("spawn netfast-cni");
        let written = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes());
        // A plugin may answer without reading all of stdin; libcni ignores EPIPE too.
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
        Answer::from(&child.wait_with_output().expect("netfast-cni output"))
    }

    fn add(&self, c: &Container, mappings: Value) -> Answer {
        let conf = self.conf(json!({
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": self.prev_result(c),
        }));
        self.cni("ADD", Some(c), &conf)
    }

    fn del(&self, c: &Container) -> Answer {
        let conf = self.conf(json!({"prevResult": self.prev_result(c)}));
        self.cni("DEL", Some(c), &conf)
    }

    /// CHECK as libcni sends it: the runtimeConfig of the ADD (`mappings`) and its result.
    fn check(&self, c: &Container, mappings: Value) -> Answer {
        let conf = self.conf(json!({
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": self.prev_result(c),
        }));
        self.cni("CHECK", Some(c), &conf)
    }

    fn netfast(&self, args: &[&str]) -> Output {
        netfast(Some(&self.host), args)
    }

    /// `publish list --json` of the instance.
    fn publishes(&self) -> Vec<Value> {
        let out = self.netfast(&["publish", "list", "--instance", &self.instance, "--json"]);
        let v: Value = serde_json::from_str(&succeeded(&out, "publish list")).expect("json");
        v.as_array().expect("array").clone()
    }

    fn pins(&self) -> PathBuf {
        Path::new("/sys/fs/bpf/netfast").join(&self.instance)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = netfast(Some(&self.host), &["down", "--instance", &self.instance]);
        for ns in self.containers.iter().chain([&self.host, &self.far]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn link_mac(ns: &str, link: &str) -> String {
    let out = exec_ok(ns, &["ip", "-j", "link", "show", link]);
    let v: Value = serde_json::from_str(&out).expect("ip -j");
    v[0]["address"].as_str().expect("address").to_owned()
}

/// Parses the "ADDR PORT" line the one-shot server prints.
fn peer_seen(stdout: &str) -> (Ipv4Addr, u16) {
    let mut words = stdout.split_whitespace();
    match (
        words.next().and_then(|w| w.parse().ok()),
        words.next().and_then(|w| w.parse().ok()),
    ) {
        (Some(a), Some(p)) => (a, p),
        _ => panic!("server printed no peer: {stdout:?}"),
    }
}

/// A TCP client on the far side of the uplink to the published port: the reply.
fn far_client(net: &Net, port: u16, payload: &str) -> Output {
    exec(
        &net.far,
        &[
            "sh",
            "-c",
            &format!("printf {payload} | nc -N -w 3 {UPLINK_HOST} {port}"),
        ],
    )
}

/// A published exchange: a one-shot echo server on port 80 of container namespace
/// `ns`, the far side's client through the uplink at `host_port` with `tag`; asserts
/// the echo and returns the address and port the server saw.
fn published_exchange(net: &Net, ns: &str, host_port: u16, tag: &str) -> (Ipv4Addr, u16) {
    let server = Background::spawn(ns, &["python3", "-c", TCP_ECHO_ONCE, "0.0.0.0", "80"]);
    wait_listening(ns, "tcp", 80);
    let reply = far_client(net, host_port, tag);
    assert_eq!(
        text(&reply.stdout),
        format!("echo:{tag}"),
        "{}",
        text(&reply.stderr)
    );
    let (seen, _) = server.wait(Duration::from_secs(10));
    peer_seen(&seen)
}

/// A masqueraded exchange: container namespace `ns` to the far side's one-shot echo
/// server on port 9000; asserts the echo and returns the source the far side saw.
fn masqueraded_exchange(net: &Net, ns: &str) -> (Ipv4Addr, u16) {
    let server = Background::spawn(&net.far, &["python3", "-c", TCP_ECHO_ONCE, FAR, "9000"]);
    wait_listening(&net.far, "tcp", 9000);
    let reply = exec_ok(
        ns,
        &["sh", "-c", &format!("printf out | nc -N -w 3 {FAR} 9000")],
    );
    assert_eq!(reply, "echo:out");
    let (seen, _) = server.wait(Duration::from_secs(10));
    peer_seen(&seen)
}

fn one_mapping(host_port: u16) -> Value {
    json!([{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}])
}

/// ADD with a port mapping: the far side reaches the container's server through the
/// uplink address, the container reaches the far side masqueraded; CHECK passes and
/// fails once state is removed; `publish list` names the owner; DEL removes the
/// mapping (the client is refused) and is idempotent; `down --instance` removes it all.
#[test]
fn add_publishes_masquerades_check_and_del() {
    let mut net = Net::new();
    let c = net.container(1);
    let add = net.add(&c, one_mapping(8088));
    let out: Value = serde_json::from_str(add.expect_ok("ADD").trim()).expect("ADD result JSON");
    assert_eq!(
        out,
        net.prev_result(&c),
        "ADD must pass prevResult on unchanged"
    );
    assert!(
        net.pins()
            .join(format!("link_container_{}", c.veth))
            .exists()
    );

    // Published: far side -> uplink:8088 -> container:80; the server sees the far side.
    let ns = &net.containers[0];
    let seen = published_exchange(&net, ns, 8088, "via-cni");
    assert_eq!(seen.0, FAR.parse::<Ipv4Addr>().expect("addr"));

    // Masquerade: the far side sees the uplink address and a SNAT port.
    let (addr, port) = masqueraded_exchange(&net, ns);
    assert_eq!(
        addr,
        UPLINK_HOST.parse::<Ipv4Addr>().expect("addr"),
        "far side must see the uplink"
    );
    assert!(SNAT_PORTS.contains(&port), "SNAT port {port}");
    // No iptables rule did it: the host namespace's nat table is empty.
    let nat = exec(&net.host, &["nft", "list", "ruleset"]);
    assert!(
        !text(&nat.stdout).contains("masquerade"),
        "{}",
        text(&nat.stdout)
    );

    // The operator CLI on the CNI instance: the owner of the mapping.
    let rows = net.publishes();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["host_port"], 8088);
    assert_eq!(rows[0]["owner"]["container_id"], c.id.as_str());
    assert_eq!(rows[0]["owner"]["netns"], c.netns.as_str());
    let table = succeeded(
        &net.netfast(&["publish", "list", "--instance", &net.instance]),
        "publish list",
    );
    assert!(table.contains("OWNER") && table.contains(&c.id), "{table}");
    let status = net.netfast(&["status", "--instance", &net.instance]);
    assert!(
        succeeded(&status, "status").contains(&c.veth),
        "status names the container veth"
    );

    net.check(&c, one_mapping(8088)).expect_ok("CHECK");
    // What the runtime asks for now must be what the container has, as portmap checks.
    let (code, msg) = net.check(&c, one_mapping(7777)).error();
    assert_eq!(code, 102, "{msg}");
    assert!(msg.contains("7777") && msg.contains("8088"), "{msg}");
    let mut moved = c.clone();
    moved.address = "10.88.0.99".parse().expect("addr");
    let (code, msg) = net.check(&moved, one_mapping(8088)).error();
    assert_eq!(code, 102, "{msg}");
    assert!(msg.contains("10.88.0.99"), "{msg}");
    // Remove the mapping behind the plugin's back: CHECK now fails, naming it.
    succeeded(
        &net.netfast(&[
            "publish",
            "del",
            "--instance",
            &net.instance,
            &format!("8088:{}:80/tcp", c.address),
        ]),
        "publish del",
    );
    let (code, msg) = net.check(&c, one_mapping(8088)).error();
    assert_eq!(code, 102, "{msg}");
    assert!(msg.contains("8088") && msg.contains(&c.id), "{msg}");

    // ADD again puts it back; DEL removes it: the client is refused.
    net.add(&c, one_mapping(8088)).expect_ok("ADD again");
    net.check(&c, one_mapping(8088))
        .expect_ok("CHECK after ADD again");
    // A connection through the mapping again: its flow stays in conntrack (no GC
    // runs for a CNI instance) until DEL removes it with the container.
    let server = Background::spawn(ns, &["python3", "-c", TCP_ECHO_ONCE, "0.0.0.0", "80"]);
    wait_listening(ns, "tcp", 80);
    assert_eq!(text(&far_client(&net, 8088, "again").stdout), "echo:again");
    server.wait(Duration::from_secs(10));
    let ct = |net: &Net| {
        succeeded(
            &net.netfast(&["ct", "list", "--instance", &net.instance]),
            "ct list",
        )
    };
    let needle = format!("{}:", c.address);
    assert!(ct(&net).contains(&needle), "{}", ct(&net));
    let del = net.del(&c);
    assert_eq!(del.expect_ok("DEL").trim(), "");
    assert!(
        !ct(&net).contains(&needle),
        "DEL must remove the container's flows: {}",
        ct(&net)
    );
    assert!(net.publishes().is_empty());
    let _server = Background::spawn(ns, &["python3", "-c", TCP_ECHO_ONCE, "0.0.0.0", "80"]);
    wait_listening(ns, "tcp", 80);
    let refused = far_client(&net, 8088, "gone");
    assert!(
        !refused.status.success() && text(&refused.stdout).is_empty(),
        "{refused:?}"
    );
    assert!(
        !net.pins()
            .join(format!("link_container_{}", c.veth))
            .exists()
    );
    let (code, _) = net.check(&c, one_mapping(8088)).error();
    assert_eq!(code, 102);

    // DEL is idempotent: again, and for an instance that does not exist.
    net.del(&c).expect_ok("second DEL");
    let conf = net.conf(json!({"instance": format!("{}none", net.p)}));
    net.cni("DEL", Some(&c), &conf)
        .expect_ok("DEL of a missing instance");

    // The datapath stays pinned after the last container; `down --instance` removes it.
    assert!(net.pins().exists());
    succeeded(
        &net.netfast(&["down", "--instance", &net.instance]),
        "down --instance",
    );
    assert!(!net.pins().exists());
    assert!(!Path::new("/run/netfast").join(&net.instance).exists());
}

/// A host port already held by another container is a CNI error (code 101) naming the
/// port and the owner, and leaves nothing of the second container behind.
#[test]
fn a_taken_host_port_names_its_owner() {
    let mut net = Net::new();
    let (c1, c2) = (net.container(1), net.container(2));
    net.add(&c1, one_mapping(8088)).expect_ok("ADD c1");
    let (code, msg) = net.add(&c2, one_mapping(8088)).error();
    assert_eq!(code, 101, "{msg}");
    for needle in ["8088/tcp", c1.id.as_str(), c1.netns.as_str()] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    assert!(
        !net.pins()
            .join(format!("link_container_{}", c2.veth))
            .exists()
    );
    assert!(net.check(&c2, one_mapping(8088)).error().0 == 102);
    let rows = net.publishes();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["backend_addr"], c1.address.to_string());
    // Another port is fine.
    net.add(&c2, one_mapping(8089)).expect_ok("ADD c2 on 8089");
    assert_eq!(net.publishes().len(), 2);

    // A container in another subnet: the instance masquerades the first one's.
    let mut c3 = net.container(3);
    c3.address = "10.99.0.13".parse().expect("addr");
    let (code, msg) = net.add(&c3, one_mapping(8090)).error();
    assert_eq!(code, 7, "{msg}");
    for needle in ["(masquerade)", "10.88.0.0/24", "10.99.0.13", "\"instance\""] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    assert_eq!(net.publishes().len(), 2);
}

/// Bad configs: each answered with a CNI error JSON whose code is the spec's and whose
/// msg names the key; nothing is brought up.
#[test]
fn bad_configs_name_the_key() {
    let mut net = Net::new();
    let c = net.container(1);
    let prev = net.prev_result(&c);
    #[rustfmt::skip]
    let cases: Vec<(Value, u64, &str)> = vec![
        (json!({"masquerade": "yes"}), 7, "(masquerade)"),
        (json!({"fastPath": 1}), 7, "(fastPath)"),
        (json!({"instance": "bad/name"}), 7, "(instance)"),
        (json!({"instance": 42}), 7, "(instance)"),
        (json!({"snatPorts": "0-10"}), 7, "(snatPorts)"),
        (json!({"snatPorts": "40000-41000"}), 7, "ip_local_port_range"),
        (json!({"conntrack": {"capacity": "big"}}), 7, "(conntrack.capacity)"),
        (json!({"conntrack": {"udp": 5}}), 2, "(conntrack.udp)"),
        (json!({"uplink": "nosuchif0"}), 7, "(uplink)"),
        (json!({"cniVersion": "9.9.9"}), 1, "9.9.9"),
        (json!({"runtimeConfig": {"portMappings": [{"hostPort": "x", "containerPort": 80}]}}), 7, "portMappings[0].hostPort"),
        (json!({"prevResult": null}), 7, "(prevResult)"),
    ];
    for (extra, want_code, needle) in cases {
        let mut conf = net.conf(json!({"prevResult": prev.clone()}));
        for (k, v) in extra.as_object().expect("object") {
            conf[k] = v.clone();
        }
        let (code, msg) = net.cni("ADD", Some(&c), &conf).error();
        assert_eq!(code, want_code, "{extra}: {msg}");
        assert!(msg.contains(needle), "{extra}: {msg:?} lacks {needle:?}");
        // Nothing of the refused ADD stays, not even an empty state directory.
        let state = Path::new("/run/netfast").join(&net.instance);
        assert!(!state.exists(), "{extra}: {} was left", state.display());
    }
    // Not JSON at all: code 6; no CNI_COMMAND... the env is code 4.
    let bad = net.cni("ADD", Some(&c), &json!("not an object"));
    assert_eq!(bad.error().0, 6);
    let no_env = net.cni("ADD", None, &net.conf(json!({"prevResult": prev})));
    let (code, msg) = no_env.error();
    assert_eq!(code, 4);
    assert!(msg.contains("CNI_CONTAINERID"), "{msg}");
    assert!(!net.pins().exists(), "a refused ADD must bring nothing up");

    // The runtime's DEL after the failed ADD, with the same bad config, succeeds:
    // there is nothing to remove.
    for extra in [
        json!({"masquerade": "yes"}),
        json!({"instance": "bad/name"}),
    ] {
        let mut conf = net.conf(json!({"prevResult": prev.clone()}));
        for (k, v) in extra.as_object().expect("object") {
            conf[k] = v.clone();
        }
        net.cni("DEL", Some(&c), &conf)
            .expect_ok(&format!("DEL with {extra}"));
    }
    // A bad key does not stop DEL from removing what an ADD made.
    net.add(&c, one_mapping(8088)).expect_ok("ADD");
    let mut conf = net.conf(json!({"prevResult": prev}));
    conf["fastPath"] = json!("no");
    net.cni("DEL", Some(&c), &conf)
        .expect_ok("DEL with a bad fastPath");
    assert!(net.publishes().is_empty());
}

/// GC removes the state of attachments the runtime no longer lists.
#[test]
fn gc_removes_stale_attachments() {
    let mut net = Net::new();
    let (c1, c2) = (net.container(1), net.container(2));
    net.add(&c1, one_mapping(8088)).expect_ok("ADD c1");
    net.add(&c2, one_mapping(8089)).expect_ok("ADD c2");
    // GC is CNI 1.1's, and needs its list: without either, nothing is removed.
    let old = net.conf(json!({
        "cni.dev/valid-attachments": [{"containerID": c1.id, "ifname": "eth0"}],
    }));
    let (code, msg) = net.cni("GC", None, &old).error();
    assert_eq!(code, 1, "{msg}");
    assert!(
        msg.contains("(cniVersion)") && msg.contains("1.1.0"),
        "{msg}"
    );
    let (code, msg) = net
        .cni("GC", None, &net.conf(json!({"cniVersion": "1.1.0"})))
        .error();
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("(cni.dev/valid-attachments)"), "{msg}");
    assert_eq!(net.publishes().len(), 2, "a refused GC removed nothing");

    let conf = net.conf(json!({
        "cniVersion": "1.1.0",
        "cni.dev/valid-attachments": [{"containerID": c1.id, "ifname": "eth0"}],
    }));
    net.cni("GC", None, &conf).expect_ok("GC");
    net.check(&c1, one_mapping(8088))
        .expect_ok("CHECK c1 after GC");
    assert_eq!(net.check(&c2, one_mapping(8089)).error().0, 102);
    let rows = net.publishes();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["host_port"], 8088);
    assert!(
        !net.pins()
            .join(format!("link_container_{}", c2.veth))
            .exists()
    );
    assert!(
        net.pins()
            .join(format!("link_container_{}", c1.veth))
            .exists()
    );
}

/// VERSION lists the versions; STATUS is ready as root with bpffs.
#[test]
fn version_and_status() {
    let net = Net::new();
    let v = net.cni("VERSION", None, &json!({"cniVersion": "1.0.0"}));
    let v: Value = serde_json::from_str(v.expect_ok("VERSION").trim()).expect("json");
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    let status = net.cni("STATUS", None, &net.conf(json!({"cniVersion": "1.1.0"})));
    assert_eq!(status.expect_ok("STATUS").trim(), "");
    let (code, msg) = net.cni("STATUS", None, &net.conf(json!({}))).error();
    assert_eq!(code, 1, "STATUS with cniVersion 1.0.0: {msg}");
}

/// 50 ADDs in parallel threads, each with its own container id and host port, then
/// 50 DELs: no error, every mapping present after the ADDs (with its owner), none
/// after the DELs.
#[test]
fn fifty_parallel_add_del() {
    let mut net = Net::new();
    // One namespace, 50 interfaces in it (cheaper than 50 namespaces; each is an
    // attachment of its own to CNI: container id + ifname).
    let ns = format!("{}c", net.p);
    sh(&["ip", "netns", "add", &ns]);
    net.containers.push(ns.clone());
    let mut containers = Vec::new();
    for i in 0..50u16 {
        let veth = format!("{}p{i}", net.p);
        let ifname = format!("e{i}");
        sh(&[
            "ip", "-n", &net.host, "link", "add", &veth, "type", "veth", "peer", "name", &ifname,
            "netns", &ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &net.host,
            "link",
            "set",
            &veth,
            "master",
            &net.bridge,
            "up",
        ]);
        containers.push(Container {
            id: format!("{}id{i}", net.p),
            netns: format!("/run/netns/{ns}"),
            mac: link_mac(&ns, &ifname),
            ifname,
            veth,
            address: Ipv4Addr::new(10, 88, 0, 100 + i as u8),
            bridge: net.bridge.clone(),
            gateway: GATEWAY.parse().expect("addr"),
        });
    }
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let net = &net;
                s.spawn(move || net.add(c, one_mapping(10_000 + i as u16)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (a, c) in answers.iter().zip(&containers) {
        a.expect_ok(&format!("ADD {}", c.id));
    }
    let rows = net.publishes();
    assert_eq!(rows.len(), 50, "{rows:?}");
    for (i, c) in containers.iter().enumerate() {
        let row = rows
            .iter()
            .find(|r| r["host_port"] == 10_000 + i as u64)
            .unwrap_or_else(|| panic!("no mapping for port {}", 10_000 + i));
        assert_eq!(row["backend_addr"], c.address.to_string());
        assert_eq!(row["owner"]["container_id"], c.id.as_str());
    }
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .map(|c| {
                let net = &net;
                s.spawn(move || net.del(c))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (a, c) in answers.iter().zip(&containers) {
        a.expect_ok(&format!("DEL {}", c.id));
    }
    assert!(net.publishes().is_empty());
    let links: Vec<_> = std::fs::read_dir(net.pins())
        .expect("pins")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("link_container_")
        })
        .collect();
    assert!(links.is_empty(), "container links left: {links:?}");
}

fn counter(instance: &str, name: &str) -> u64 {
    netfast::bpf::maps::read_counters(instance)
        .expect("read counters")
        .into_iter()
        .find(|(c, _)| c.name() == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// What the container-side program brings on a CNI instance: hairpin (a container to
/// another's published port through the uplink address; the backend sees the
/// gateway, as with Docker), the fast path into the container, the bridge's static
/// entry for the container's MAC (and DEL removing it), and `ct list` of the instance.
#[test]
fn hairpin_fast_path_and_ct_list() {
    let mut net = Net::new();
    let (c1, c2) = (net.container(1), net.container(2));
    net.add(&c1, one_mapping(8088)).expect_ok("ADD c1");
    net.add(&c2, json!([])).expect_ok("ADD c2");
    let fdb = exec_ok(&net.host, &["bridge", "fdb", "show", "br", &net.bridge]);
    assert!(
        fdb.lines()
            .any(|l| l.starts_with(&c1.mac) && l.contains("static")),
        "no static bridge entry for {}: {fdb}",
        c1.mac
    );

    let backend = net.containers[0].clone();
    let server = Background::spawn(&backend, &["python3", "-c", TCP_ECHO_ONCE, "0.0.0.0", "80"]);
    wait_listening(&backend, "tcp", 80);
    let hairpin_before = counter(&net.instance, "hairpin_new");
    let reply = exec_ok(
        &net.containers[1],
        &[
            "sh",
            "-c",
            &format!("printf hp | nc -N -w 3 {UPLINK_HOST} 8088"),
        ],
    );
    assert_eq!(reply, "echo:hp");
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert_eq!(
        peer_seen(&seen).0,
        GATEWAY.parse::<Ipv4Addr>().expect("addr")
    );
    assert_eq!(counter(&net.instance, "hairpin_new"), hairpin_before + 1);

    let server = Background::spawn(&backend, &["python3", "-c", TCP_ECHO_ONCE, "0.0.0.0", "80"]);
    wait_listening(&backend, "tcp", 80);
    let fast_before = counter(&net.instance, "fast_path_to_container");
    let reply = far_client(&net, 8088, "fast");
    assert_eq!(text(&reply.stdout), "echo:fast", "{}", text(&reply.stderr));
    server.wait(Duration::from_secs(10));
    assert!(
        counter(&net.instance, "fast_path_to_container") > fast_before,
        "the published flow's packets must take the fast path into the container"
    );
    let ct = succeeded(
        &net.netfast(&["ct", "list", "--instance", &net.instance]),
        "ct list",
    );
    assert!(ct.contains(&format!("{}:80", c1.address)), "{ct}");

    // DEL of netfast-cni alone (its veth stays) removes the static entry ADD made.
    net.del(&c1).expect_ok("DEL c1");
    let fdb = exec_ok(&net.host, &["bridge", "fdb", "show", "br", &net.bridge]);
    assert!(
        !fdb.lines()
            .any(|l| l.starts_with(&c1.mac) && l.contains("static")),
        "DEL left the static bridge entry for {}: {fdb}",
        c1.mac
    );
}

/// Debian's bridge and host-local plugins (package containernetworking-plugins, which
/// `cargo xtask setup` installs), or a failure saying so.
fn debian_plugin(name: &str) -> PathBuf {
    let bin = Path::new("/usr/lib/cni").join(name);
    assert!(
        bin.exists(),
        "{} is missing: install containernetworking-plugins (`cargo xtask setup` does)",
        bin.display()
    );
    bin
}

/// The conflist of the issue with the real bridge and host-local plugins before
/// netfast-cni, run plugin by plugin as libcni runs a conflist: ADD in order, each
/// plugin's result as the next one's prevResult; DEL in reverse order. The far side
/// reaches the container through the mapping and sees its own address, the container
/// reaches the far side from the uplink address, no masquerade or DNAT rule exists;
/// after the DELs the client is refused.
#[test]
fn real_bridge_and_host_local_chain() {
    let bridge_bin = debian_plugin("bridge");
    debian_plugin("host-local");
    let mut net = Net::new();
    let ns = format!("{}c1", net.p);
    sh(&["ip", "netns", "add", &ns]);
    net.containers.push(ns.clone());
    // host-local's leases under a directory of this run's own, removed at the end.
    let data_dir = std::env::temp_dir().join(format!("netfast-{}-ipam", net.p));
    let _leases = RemoveDir(data_dir.clone());
    let bridge_name = format!("{}cb", net.p);
    let bridge_conf = json!({
        "cniVersion": "1.0.0",
        "name": format!("{}net", net.p),
        "type": "bridge",
        "bridge": bridge_name,
        "isGateway": true,
        "ipMasq": false,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.66.0.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": data_dir,
        },
    });
    let c = Container {
        id: format!("{}real", net.p),
        netns: format!("/run/netns/{ns}"),
        ifname: "eth0".to_owned(),
        // Filled from the bridge plugin's result; unused by the calls below.
        veth: String::new(),
        address: Ipv4Addr::UNSPECIFIED,
        mac: String::new(),
        bridge: bridge_name.clone(),
        gateway: Ipv4Addr::UNSPECIFIED,
    };
    let added = net.plugin(&bridge_bin, "ADD", Some(&c), &bridge_conf);
    let prev: Value =
        serde_json::from_str(added.expect_ok("bridge ADD").trim()).expect("bridge result");
    let address: Ipv4Addr = prev["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {prev}"));

    let conf = net.conf(json!({
        "runtimeConfig": {"portMappings": one_mapping(8088)},
        "prevResult": prev.clone(),
    }));
    let out = net.cni("ADD", Some(&c), &conf);
    let out: Value = serde_json::from_str(out.expect_ok("netfast-cni ADD").trim()).expect("json");
    assert_eq!(
        out, prev,
        "netfast-cni passes the bridge's result on unchanged"
    );

    let seen = published_exchange(&net, &ns, 8088, "real-bridge");
    assert_eq!(seen.0, FAR.parse::<Ipv4Addr>().expect("addr"));
    assert_eq!(
        masqueraded_exchange(&net, &ns).0,
        UPLINK_HOST.parse::<Ipv4Addr>().expect("addr")
    );
    let ruleset = exec_ok(&net.host, &["nft", "list", "ruleset"]);
    assert!(
        !ruleset.contains("masquerade") && !ruleset.contains("dnat"),
        "no NAT rule may exist in the host namespace: {ruleset}"
    );
    let rows = net.publishes();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["backend_addr"], address.to_string());
    assert_eq!(rows[0]["owner"]["container_id"], c.id.as_str());
    // libcni sends CHECK and DEL the runtimeConfig of the ADD.
    let check = net.conf(json!({
        "runtimeConfig": {"portMappings": one_mapping(8088)},
        "prevResult": prev.clone(),
    }));
    net.cni("CHECK", Some(&c), &check)
        .expect_ok("netfast-cni CHECK");

    // DEL in reverse order: netfast-cni, then bridge.
    net.cni("DEL", Some(&c), &check)
        .expect_ok("netfast-cni DEL");
    let mut bridge_del = bridge_conf.clone();
    bridge_del["prevResult"] = prev;
    net.plugin(&bridge_bin, "DEL", Some(&c), &bridge_del)
        .expect_ok("bridge DEL");
    assert!(net.publishes().is_empty());
    let refused = far_client(&net, 8088, "gone");
    assert!(
        !refused.status.success() && text(&refused.stdout).is_empty(),
        "{refused:?}"
    );
}

/// Removes a directory on drop, also when the test fails.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `netfast run --instance` looks after a CNI-made instance, which has no config file:
/// a Prometheus scrape shows its GC passes and the connection through the container's
/// mapping; a second daemon on it is refused; when the daemon stops, the instance and
/// the mapping stay. A missing instance is refused by name.
#[test]
fn run_watches_a_cni_instance() {
    use daemon::{Daemon, http_get, metric, metrics_addr};
    use nix::sys::signal::Signal;

    let mut net = Net::new();
    let c = net.container(1);
    net.add(&c, one_mapping(8088)).expect_ok("ADD");
    let mut run = Daemon::spawn(
        &net.host,
        &[
            "--instance",
            &net.instance,
            "--interval",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    run.wait_for("netfast: running instance", Duration::from_secs(30));
    let at = metrics_addr(&run);
    published_exchange(&net, &net.containers[0], 8088, "through-cni");

    let labels = format!("netfast_instance=\"{}\"", net.instance);
    let (status, _, body) = http_get(&net.host, at, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(
        metric(
            &body,
            &format!("netfast_packets_total{{{labels},decision=\"dnat_new\",verdict=\"pass\"}}")
        ),
        1.0,
        "{body}"
    );
    assert!(metric(&body, &format!("netfast_gc_runs_total{{{labels}}}")) >= 1.0);

    let second = net.netfast(&["run", "--instance", &net.instance]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("already has a running `netfast run`"),
        "{}",
        text(&second.stderr)
    );

    let exit = run.stop(Signal::SIGTERM, Duration::from_secs(20));
    assert!(exit.success(), "{}", run.output());
    assert!(
        run.output()
            .contains(&format!("SIGTERM; instance {} stays up", net.instance)),
        "{}",
        run.output()
    );
    assert!(net.pins().exists(), "the instance stays pinned");
    assert_eq!(net.publishes().len(), 1, "the mapping stays");

    let missing = net.netfast(&["run", "--instance", &format!("{}x", net.instance)]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains(&format!("{}x", net.instance)),
        "{}",
        text(&missing.stderr)
    );
}

/// A second network (instance) on an uplink another instance holds is refused by its
/// first ADD, naming the uplink and the holder, and leaves nothing behind: the first
/// instance's programs end the tc chain, so the second's would never run and its
/// mappings would be refused connections (as a review found before this check).
#[test]
fn a_second_instance_on_the_same_uplink_is_refused() {
    let mut net = Net::new();
    let c1 = net.container(1);
    net.add(&c1, one_mapping(8088))
        .expect_ok("ADD of the first network");
    let c2 = net.container(2);
    let other = format!("{}two", net.p);
    let conf = net.conf(json!({
        "instance": other,
        "runtimeConfig": {"portMappings": one_mapping(9091)},
        "prevResult": net.prev_result(&c2),
    }));
    let (code, msg) = net.cni("ADD", Some(&c2), &conf).error();
    assert_eq!(code, 7, "{msg}");
    assert!(
        msg.contains("(uplink)") && msg.contains(&format!("\"{}\"", net.instance)),
        "{msg}"
    );
    assert!(!Path::new("/sys/fs/bpf/netfast").join(&other).exists());
    assert!(!Path::new("/run/netfast").join(&other).exists());
    // The first network still works.
    published_exchange(&net, &net.containers[0], 8088, "first");
}

/// A TCP server that answers every connection with `TAG:<data>`, until killed.
const TCP_TAGGED_ECHO: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen()
while True:
    c,a=s.accept(); d=c.recv(100); c.sendall(sys.argv[3].encode()+b':'+d); c.close()";

/// A cgroup2 directory of this run's own (`<cgroup2 mount>/netfast-<prefix>`), never
/// the machine's root cgroup; removed on drop, also when the test fails.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(prefix: &str) -> TestCgroup {
        let path = netfast::lab::lab_cgroup(prefix)
            .expect("no cgroup2 is mounted: host-local tests need one");
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup(path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The clients that joined it have exited; their cgroup may lag a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `printf hi | nc ADDR 8088` from the host namespace, in `cgroup` (None: this
/// process's own): the reply.
fn host_client(net: &Net, cgroup: Option<&Path>, addr: &str) -> String {
    let script = format!("printf hi | nc -N -w 3 {addr} 8088");
    text(&support::exec_in_cgroup(&net.host, cgroup, &["sh", "-c", &script]).stdout)
}

/// `hostLocal`: a host process in the network's cgroup reaches a container's mapping
/// at 127.0.0.1, the uplink's address and the bridge's, as portmap's OUTPUT rule lets
/// it, even while the host listens on that port itself (podman's conmon holds every
/// published port that way); a process outside the cgroup meets that listener.
///
/// Refusals leave nothing up: a hostLocal that is no cgroup2 directory, and a first
/// ADD refused after it brought the instance up (a hostIP that is not the host's). A
/// later ADD or a CHECK asking for other host-local settings is refused by name; the
/// same cgroup written another way is the same setting. A cgroup removed and made
/// again under the instance is named by ADD, CHECK and `status`; `down --instance`
/// takes the programs off the cgroup.
#[test]
fn host_local_reaches_the_container_from_the_host() {
    let mut net = Net::new();
    let cgroup = TestCgroup::new(&net.p);
    let cgroup_path = cgroup.0.display().to_string();
    let (c, c2, c3) = (net.container(1), net.container(2), net.container(3));
    let conf = |command: &str, host_local: Value, c: &Container, mappings: Value| {
        let conf = net.conf(json!({
            "hostLocal": host_local,
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": net.prev_result(c),
        }));
        net.cni(command, Some(c), &conf)
    };
    let on = || json!({"cgroup": cgroup_path});
    let refused = |answer: Answer, want: u64, needles: &[&str]| {
        let (code, msg) = answer.error();
        assert_eq!(code, want, "{msg}");
        for needle in needles {
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
    };
    let nothing_left = |what: &str| {
        assert!(!net.pins().exists(), "{what} left the datapath up");
        assert!(
            !Path::new("/run/netfast").join(&net.instance).exists(),
            "{what} left the instance's state"
        );
    };

    refused(
        conf("ADD", json!({"cgroup": "/tmp"}), &c, one_mapping(8088)),
        7,
        &["\"/tmp\" (hostLocal.cgroup)", "cgroup2"],
    );
    nothing_left("a refused hostLocal");
    // Refused after the datapath and the host-local links were up: both go again.
    let elsewhere = json!([{"hostPort": 8088, "containerPort": 80, "hostIP": "10.9.9.9"}]);
    refused(conf("ADD", on(), &c, elsewhere), 7, &["10.9.9.9"]);
    nothing_left("a first ADD refused after bringing the instance up");

    conf("ADD", on(), &c, one_mapping(8088)).expect_ok("ADD with hostLocal");
    let _container = Background::spawn(
        &net.containers[0],
        &[
            "python3",
            "-c",
            TCP_TAGGED_ECHO,
            "0.0.0.0",
            "80",
            "container",
        ],
    );
    let _holder = Background::spawn(
        &net.host,
        &["python3", "-c", TCP_TAGGED_ECHO, "0.0.0.0", "8088", "host"],
    );
    let status = |netfast_args: &[&str]| succeeded(&net.netfast(netfast_args), "status");
    let shown = status(&["status", "--instance", &net.instance]);
    for needle in [
        format!("cni network: {}net", net.p),
        format!("host-local:  on for the processes in cgroup {cgroup_path}"),
    ] {
        assert!(shown.contains(&needle), "{shown} lacks {needle:?}");
    }
    wait_listening(&net.containers[0], "tcp", 80);
    wait_listening(&net.host, "tcp", 8088);
    for addr in ["127.0.0.1", UPLINK_HOST, GATEWAY] {
        assert_eq!(
            host_client(&net, Some(&cgroup.0), addr),
            "container:hi",
            "{addr}:8088 from the cgroup"
        );
    }
    assert_eq!(
        host_client(&net, None, "127.0.0.1"),
        "host:hi",
        "outside the cgroup, the host's own listener answers"
    );

    // The instance's setting is the first ADD's; the same cgroup spelled with a
    // trailing slash is that setting.
    refused(
        conf("ADD", Value::Null, &c2, one_mapping(8089)),
        7,
        &[
            "hostLocal.cgroup:",
            &format!("has host-local access on cgroup {cgroup_path}"),
            "asks for no host-local access",
        ],
    );
    let slash = json!({"cgroup": format!("{cgroup_path}/")});
    conf("ADD", slash, &c2, one_mapping(8089)).expect_ok("ADD with the cgroup as PATH/");
    conf("CHECK", on(), &c, one_mapping(8088)).expect_ok("CHECK with hostLocal");
    refused(
        conf("CHECK", Value::Null, &c, one_mapping(8088)),
        102,
        &["hostLocal.cgroup:", "asks for no host-local access"],
    );

    // The cgroup removed and made again: another cgroup, which the links are not on.
    std::fs::remove_dir(&cgroup.0).expect("rmdir the test's cgroup");
    std::fs::create_dir(&cgroup.0).expect("mkdir it again");
    let gone = ["is gone", "netfast down --instance"];
    refused(conf("ADD", on(), &c3, one_mapping(8090)), 7, &gone);
    refused(conf("CHECK", on(), &c, one_mapping(8088)), 102, &gone);
    let shown = status(&["status", "--instance", &net.instance]);
    assert!(
        shown.contains("host-local:  on, but its cgroup is gone")
            && shown
                .contains("the next ADD attaches them to the network config's hostLocal.cgroup"),
        "{shown}"
    );

    net.del(&c).expect_ok("DEL");
    net.del(&c2).expect_ok("DEL");
    let down = succeeded(
        &net.netfast(&["down", "--instance", &net.instance]),
        "down --instance",
    );
    assert!(
        down.contains(&format!("host-local links on cgroup {cgroup_path}")),
        "{down}"
    );
    assert_eq!(
        host_client(&net, Some(&cgroup.0), "127.0.0.1"),
        "host:hi",
        "after down, the cgroup's processes meet the host's listener"
    );
}

/// Takes an instance down (from inside `host`) on drop, also when the test fails.
struct DownOnDrop {
    host: String,
    instance: String,
}

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = netfast(Some(&self.host), &["down", "--instance", &self.instance]);
    }
}

/// Two networks (two instances on two uplinks) with host-local access on one cgroup.
/// Each instance's programs take every host address for the host, so a host port both
/// published would go to whichever program ran first: the second network's mapping
/// of a port the first publishes is refused (code 101, naming the first instance and
/// the cgroup) and leaves nothing up; another port is fine, and from the host each
/// port reaches its own network's container.
#[test]
fn two_networks_with_host_local_on_one_cgroup_do_not_share_a_host_port() {
    let mut net = Net::new();
    let cgroup = TestCgroup::new(&net.p);
    let cgroup_path = cgroup.0.display().to_string();
    let (uplink2, bridge2, gateway2) = net.second_network();
    let first = net.container(1);
    let second = net.container_on(2, &bridge2, gateway2);
    let _down = DownOnDrop {
        host: net.host.clone(),
        instance: format!("{}b", net.p),
    };
    let add = |c: &Container, extra: Value, host_port: u16| {
        let mut conf = net.conf(json!({
            "hostLocal": {"cgroup": cgroup_path},
            "runtimeConfig": {"portMappings": one_mapping(host_port)},
            "prevResult": net.prev_result(c),
        }));
        if let (Some(conf), Some(extra)) = (conf.as_object_mut(), extra.as_object()) {
            conf.extend(extra.clone());
        }
        net.cni("ADD", Some(c), &conf)
    };
    let on_second = json!({"instance": format!("{}b", net.p), "uplink": uplink2});

    add(&first, json!({}), 8088).expect_ok("ADD on the first network");
    let (code, msg) = add(&second, on_second.clone(), 8088).error();
    assert_eq!(code, 101, "{msg}");
    for needle in [
        format!(
            "host port 8088/tcp is published by instance \"{}\" too",
            net.instance
        ),
        format!("(cgroup {cgroup_path})"),
        "pick another host port".to_owned(),
    ] {
        assert!(msg.contains(&needle), "{msg:?} lacks {needle:?}");
    }
    assert!(
        !Path::new("/sys/fs/bpf/netfast")
            .join(format!("{}b", net.p))
            .exists(),
        "the refused first ADD of the second network left its datapath up"
    );
    add(&second, on_second, 8089).expect_ok("ADD on the second network, another port");

    let _servers: Vec<Background> = [
        (&net.containers[0], "first"),
        (&net.containers[1], "second"),
    ]
    .into_iter()
    .map(|(ns, tag)| {
        Background::spawn(
            ns,
            &["python3", "-c", TCP_TAGGED_ECHO, "0.0.0.0", "80", tag],
        )
    })
    .collect();
    for ns in &net.containers {
        wait_listening(ns, "tcp", 80);
    }
    for (port, tag) in [(8088, "first"), (8089, "second")] {
        let script = format!("printf hi | nc -N -w 3 127.0.0.1 {port}");
        let reply =
            support::exec_in_cgroup(&net.host, Some(&cgroup.0), &["sh", "-c", &script]).stdout;
        assert_eq!(
            text(&reply),
            format!("{tag}:hi"),
            "127.0.0.1:{port} from the cgroup"
        );
    }
}
