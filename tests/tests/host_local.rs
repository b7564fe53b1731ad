//! Host-local access to published ports, end to end as root: the seed lab with its own
//! cgroup (`[host_local] cgroup = "<cgroup2 mount>/netfast-<prefix>"`), real clients
//! (python3 sockets) that put themselves in that cgroup before they connect, and real
//! servers in the container namespaces. What is asserted is what each side saw: the
//! reply's bytes and source address, the socket's peer, the errno, the backend's view
//! of the client. Never the machine's root cgroup; everything goes on drop.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use netfast::config::IngressMode;
use support::{Background, Sandbox, exec_in_cgroup, text, wait_listening};

const UPLINK: &str = "10.0.1.48";
const LOOPBACK: &str = "127.0.0.1";
const BRIDGE: &str = "172.16.0.100";
/// The host addresses an "any" publish must answer on from the host itself.
const HOST_ADDRS: [&str; 3] = [UPLINK, LOOPBACK, BRIDGE];
const UDP_PUBLISH: &str = "\n[[publish]]\nspec = \"5353:172.16.0.102:53/udp\"\n";
/// A publish on one host address only.
const LOOPBACK_PUBLISH: &str = "\n[[publish]]\nspec = \"127.0.0.1:8081:172.16.0.102:80/tcp\"\n";
const ECONNREFUSED: i32 = 111;

/// One client call. `tcp ADDR PORT`: connect, send `ping`, read to the end. `udp`:
/// sendto, recvfrom. `udpc`: connect, send, recvfrom. Prints `ok REPLY FROM_IP FROM_PORT
/// PEER_IP PEER_PORT` (FROM: where the reply came from, for UDP the address recvfrom
/// gave; PEER: getpeername, for unconnected UDP the same as FROM), or `errno N`.
const CLIENT: &str = "import socket,sys
mode,addr,port=sys.argv[1],sys.argv[2],int(sys.argv[3])
try:
    if mode=='tcp':
        s=socket.create_connection((addr,port),timeout=3); p=s.getpeername()
        s.sendall(b'ping'); s.shutdown(socket.SHUT_WR); r=b''
        while True:
            d=s.recv(100)
            if not d: break
            r+=d
        src=p
    elif mode=='udp':
        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(3)
        s.sendto(b'ping',(addr,port)); r,src=s.recvfrom(100); p=src
    else:
        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(3)
        s.connect((addr,port)); p=s.getpeername(); s.send(b'ping'); r,src=s.recvfrom(100)
    print('ok',r.decode(),src[0],src[1],p[0],p[1])
except OSError as e:
    print('errno',e.errno)";

/// Echo servers: `tcp|udp ADDR PORT TAG` answers every connection or datagram with
/// `TAG:<data>` and prints the client's address and port, one line each.
const SERVER: &str = "import socket,sys
mode,addr,port,tag=sys.argv[1],sys.argv[2],int(sys.argv[3]),sys.argv[4].encode()
if mode=='tcp':
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
    s.bind((addr,port)); s.listen()
    while True:
        c,a=s.accept(); d=b''
        while True:
            x=c.recv(100)
            if not x: break
            d+=x
        c.sendall(tag+b':'+d); c.close(); print(a[0],a[1],flush=True)
else:
    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind((addr,port))
    while True:
        d,a=s.recvfrom(100); s.sendto(tag+b':'+d,a); print(a[0],a[1],flush=True)";

/// What a client call ended in.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok {
        reply: String,
        from: (Ipv4Addr, u16),
        peer: (Ipv4Addr, u16),
    },
    Errno(i32),
}

fn parse_outcome(stdout: &str) -> Outcome {
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let addr = |i: usize| -> (Ipv4Addr, u16) {
        (
            words[i].parse().expect("address"),
            words[i + 1].parse().expect("port"),
        )
    };
    match words.as_slice() {
        ["ok", reply, _, _, _, _] => Outcome::Ok {
            reply: (*reply).to_owned(),
            from: addr(2),
            peer: addr(4),
        },
        ["errno", n] => Outcome::Errno(n.parse().expect("errno")),
        _ => panic!("the client printed {stdout:?}"),
    }
}

/// Runs the client in `ns`, inside `cgroup` when given.
fn client(ns: &str, cgroup: Option<&Path>, mode: &str, addr: &str, port: u16) -> Outcome {
    let out = exec_in_cgroup(
        ns,
        cgroup,
        &["python3", "-c", CLIENT, mode, addr, &port.to_string()],
    );
    assert!(
        out.status.success(),
        "client {mode} {addr}:{port} in {ns}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    parse_outcome(&text(&out.stdout))
}

fn server(ns: &str, mode: &str, addr: &str, port: u16, tag: &str) -> Background {
    let bg = Background::spawn(
        ns,
        &[
            "python3",
            "-u",
            "-c",
            SERVER,
            mode,
            addr,
            &port.to_string(),
            tag,
        ],
    );
    wait_listening(ns, mode, port);
    bg
}

fn ok(reply: &str, addr: &str, port: u16) -> Outcome {
    let a = (addr.parse().expect("address"), port);
    Outcome::Ok {
        reply: reply.to_owned(),
        from: a,
        peer: a,
    }
}

/// The clients' addresses the server printed, one per line.
fn peers_seen(stdout: &str) -> Vec<Ipv4Addr> {
    stdout
        .lines()
        .map(|l| {
            l.split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("server line {l:?}"))
        })
        .collect()
}

/// Every host-local counter, summed: one per socket call the programs saw.
fn host_local_calls(sb: &Sandbox) -> u64 {
    netfast::bpf::maps::read_counters(&sb.prefix)
        .expect("read counters")
        .into_iter()
        .filter(|(c, _)| c.is_host_local())
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn tcp_to_the_uplink_loopback_and_bridge_address_reaches_the_backend() {
    let sb = Sandbox::up("hlt", IngressMode::Tc, "");
    let cgroup = sb.cgroup();
    let backend = server(&sb.container(2), "tcp", "172.16.0.102", 80, "backend");
    // Today's behaviour without the programs, for contrast: a host process outside
    // the cgroup is refused (nothing listens on the host's own port 8088).
    assert_eq!(
        client(&sb.host(), None, "tcp", UPLINK, 8088),
        Outcome::Errno(ECONNREFUSED),
        "a process outside the cgroup must be untouched"
    );
    let rewritten = sb.counter("host_local_rewritten");
    let replies = sb.counter("host_local_reply_rewritten");
    for addr in HOST_ADDRS {
        assert_eq!(
            client(&sb.host(), Some(&cgroup), "tcp", addr, 8088),
            ok("backend:ping", addr, 8088),
            "tcp to {addr}:8088 from the host, in the cgroup"
        );
    }
    assert_eq!(sb.counter("host_local_rewritten") - rewritten, 3);
    // getpeername once per connection.
    assert_eq!(sb.counter("host_local_reply_rewritten") - replies, 3);
    let (seen, _) = backend.finish();
    // The host reaches the container over the bridge, from its bridge address.
    assert_eq!(
        peers_seen(&seen),
        vec![Ipv4Addr::new(172, 16, 0, 100); 3],
        "the backend's view of the three clients"
    );
}

#[test]
fn udp_connected_and_not_reaches_the_backend_and_replies_come_from_the_address_used() {
    let sb = Sandbox::up("hlu", IngressMode::Tc, UDP_PUBLISH);
    let cgroup = sb.cgroup();
    let backend = server(&sb.container(2), "udp", "172.16.0.102", 53, "backend");
    let rewritten = sb.counter("host_local_rewritten");
    for addr in HOST_ADDRS {
        for mode in ["udp", "udpc"] {
            assert_eq!(
                client(&sb.host(), Some(&cgroup), mode, addr, 5353),
                ok("backend:ping", addr, 5353),
                "{mode} to {addr}:5353: the reply must come from the address the client used"
            );
        }
    }
    // sendto (sendmsg4) for unconnected UDP, connect4 for connected UDP.
    assert_eq!(sb.counter("host_local_rewritten") - rewritten, 6);
    let (seen, _) = backend.finish();
    assert_eq!(peers_seen(&seen), vec![Ipv4Addr::new(172, 16, 0, 100); 6]);
    // No packet of these went through the uplink: the uplink programs made no flow.
    assert_eq!(
        sb.counter("dnat_new"),
        0,
        "host-local traffic is not NAT-ed"
    );
}

#[test]
fn a_publish_on_one_host_address_answers_only_there() {
    let sb = Sandbox::up("hle", IngressMode::Tc, LOOPBACK_PUBLISH);
    let cgroup = sb.cgroup();
    let _backend = server(&sb.container(2), "tcp", "172.16.0.102", 80, "backend");
    assert_eq!(
        client(&sb.host(), Some(&cgroup), "tcp", LOOPBACK, 8081),
        ok("backend:ping", LOOPBACK, 8081)
    );
    let not_published = sb.counter("host_local_not_published");
    for addr in [UPLINK, BRIDGE, "127.0.0.2"] {
        assert_eq!(
            client(&sb.host(), Some(&cgroup), "tcp", addr, 8081),
            Outcome::Errno(ECONNREFUSED),
            "127.0.0.1:8081 is published, {addr}:8081 is not"
        );
    }
    assert_eq!(sb.counter("host_local_not_published") - not_published, 3);
}

#[test]
fn a_container_keeps_its_own_loopback() {
    let sb = Sandbox::up("hlc", IngressMode::Tc, "");
    let cgroup = sb.cgroup();
    let _backend = server(&sb.container(2), "tcp", "172.16.0.102", 80, "backend");
    // netns3 runs its own service on its own loopback, on the published port number.
    let _own = server(&sb.container(3), "tcp", LOOPBACK, 8088, "netns3");
    let other_netns = sb.counter("host_local_other_netns");
    let rewritten = sb.counter("host_local_rewritten");
    assert_eq!(
        client(&sb.container(3), Some(&cgroup), "tcp", LOOPBACK, 8088),
        ok("netns3:ping", LOOPBACK, 8088),
        "a process of netns3 in the cgroup must reach netns3's own 127.0.0.1:8088"
    );
    // connect4 and getpeername4 each saw a socket of another namespace.
    assert_eq!(sb.counter("host_local_other_netns") - other_netns, 2);
    assert_eq!(sb.counter("host_local_rewritten"), rewritten);
    // And a process of the host outside the cgroup: untouched, not even counted.
    let calls = host_local_calls(&sb);
    assert_eq!(
        client(&sb.host(), None, "tcp", LOOPBACK, 8088),
        Outcome::Errno(ECONNREFUSED)
    );
    assert_eq!(host_local_calls(&sb), calls, "no program ran for it");
}

/// The programs attached to the cgroup, as the kernel lists them (`bpftool cgroup
/// show`): one line per program whose name starts with `host_`.
fn attached(cgroup: &Path) -> Vec<String> {
    let out = std::process::Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("run bpftool (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| l.contains("host_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn re_up_updates_in_place_turns_off_and_down_removes_the_links() {
    let sb = Sandbox::up("hld", IngressMode::Tc, "");
    let cgroup = sb.cgroup();
    let pins = netfast::bpf::pins::pin_dir(&sb.prefix);
    let links = |dir: &Path| -> Vec<String> {
        netfast::bpf::pins::HOST_LOCAL_LINK_NAMES
            .iter()
            .filter(|l| dir.join(l).exists())
            .map(|l| (*l).to_owned())
            .collect()
    };
    let _backend = server(&sb.container(2), "tcp", "172.16.0.102", 80, "backend");
    assert_eq!(attached(&cgroup).len(), 4, "{:?}", attached(&cgroup));
    assert_eq!(links(&pins).len(), 4);
    let status = exec_status(&sb);
    for hook in ["connect4", "sendmsg4", "recvmsg4", "getpeername4"] {
        assert!(
            status.contains(&format!("{}  cgroup {hook}", cgroup.display())),
            "status lacks the {hook} link: {status}"
        );
    }

    // The same config again: the links are updated in place, not re-attached.
    let ids = link_ids(&pins);
    let out = support::succeeded(&sb.netfast(&["up", "--config", sb.config_str()]), "re-up");
    assert_eq!(out.matches("updated in place").count(), 4, "{out}");
    assert_eq!(link_ids(&pins), ids, "the same links");
    assert_eq!(attached(&cgroup).len(), 4);

    // Without [host_local]: the links go, and the cgroup's processes are untouched.
    let without = std::fs::read_to_string(&sb.config)
        .expect("read config")
        .replace("[host_local]", "[host_local_removed]")
        .lines()
        .filter(|l| !l.starts_with("[host_local_removed]") && !l.starts_with("cgroup = "))
        .collect::<Vec<_>>()
        .join("\n");
    let off_config = std::env::temp_dir().join(format!("netfast-test-{}-off.toml", sb.prefix));
    std::fs::write(&off_config, without).expect("write config");
    let up_off = sb.netfast(&["up", "--config", off_config.to_str().expect("utf-8")]);
    let _ = std::fs::remove_file(&off_config);
    let report = support::succeeded(&up_off, "up without [host_local]");
    assert!(
        report.contains(&format!(
            "  removed host-local links on cgroup {} (connect4, sendmsg4, recvmsg4, getpeername4)\n",
            cgroup.display()
        )),
        "the re-up must say which links it removed: {report}"
    );
    assert!(attached(&cgroup).is_empty(), "{:?}", attached(&cgroup));
    assert!(links(&pins).is_empty());
    assert!(exec_status(&sb).contains("host-local:  off (add [host_local]"));
    assert_eq!(
        client(&sb.host(), Some(&cgroup), "tcp", UPLINK, 8088),
        Outcome::Errno(ECONNREFUSED)
    );

    // On again, then down: links, pins and the cgroup attachment are gone.
    support::succeeded(
        &sb.netfast(&["up", "--config", sb.config_str()]),
        "up again",
    );
    assert_eq!(
        client(&sb.host(), Some(&cgroup), "tcp", UPLINK, 8088),
        ok("backend:ping", UPLINK, 8088)
    );
    let down = support::succeeded(&sb.netfast(&["down", "--config", sb.config_str()]), "down");
    assert!(
        down.contains(&format!(
            "removed host-local links on cgroup {}",
            cgroup.display()
        )),
        "{down}"
    );
    assert!(attached(&cgroup).is_empty(), "{:?}", attached(&cgroup));
    assert!(!pins.exists(), "{} is still there", pins.display());
    assert!(cgroup.is_dir(), "down leaves the lab's cgroup to the lab");
}

/// A cgroup the test makes under the lab's, removed on drop (the lab removes only
/// its own, which must be empty by then).
struct ChildCgroup(PathBuf);

impl ChildCgroup {
    fn new(path: PathBuf) -> ChildCgroup {
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        ChildCgroup(path)
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A config file of the test's own, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(sb: &Sandbox, tag: &str, text: &str) -> TempConfig {
        let path = std::env::temp_dir().join(format!("netfast-test-{}-{tag}.toml", sb.prefix));
        std::fs::write(&path, text).expect("write config");
        TempConfig(path)
    }

    fn as_str(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const HOOKS: &str = "(connect4, sendmsg4, recvmsg4, getpeername4)";

/// A re-`up` that moves `[host_local]` to another cgroup says where from and where
/// to; `status` says so when that cgroup is removed under the links (never "cgroup
/// cgroup id 0"); a re-`up` then names the removed cgroup as removed, and one
/// without `[host_local]` says which links it removed.
#[test]
fn re_up_reports_moved_and_removed_host_local_links_and_status_a_removed_cgroup() {
    let sb = Sandbox::up("hlm", IngressMode::Tc, "");
    let cgroup = sb.cgroup();
    let original = std::fs::read_to_string(&sb.config).expect("read config");
    let setting = format!("cgroup = \"{}\"", cgroup.display());
    assert!(original.contains(&setting), "{original}");
    let child = ChildCgroup::new(cgroup.join("moved"));
    let moved = TempConfig::new(
        &sb,
        "moved",
        &original.replace(&setting, &format!("cgroup = \"{}\"", child.0.display())),
    );
    let report = support::succeeded(&sb.netfast(&["up", "--config", moved.as_str()]), "move");
    assert!(
        report.contains(&format!(
            "  moved host-local links from cgroup {} to {} {HOOKS}\n",
            cgroup.display(),
            child.0.display()
        )),
        "{report}"
    );
    assert_eq!(attached(&child.0).len(), 4, "{:?}", attached(&child.0));
    assert!(attached(&cgroup).is_empty(), "{:?}", attached(&cgroup));
    let status = exec_status(&sb);
    assert!(
        status.contains(&format!(
            "host-local:  on for the processes in cgroup {};",
            child.0.display()
        )),
        "{status}"
    );

    // The cgroup goes (it is empty): the kernel detaches the links from it.
    std::fs::remove_dir(&child.0).expect("rmdir the moved-to cgroup");
    let gone = "host-local:  on, but its cgroup is gone (";
    assert!(
        support::eventually(std::time::Duration::from_secs(5), || exec_status(&sb)
            .contains(gone)),
        "{}",
        exec_status(&sb)
    );
    let status = exec_status(&sb);
    assert!(
        status.contains("point [host_local] cgroup at an existing cgroup2 directory"),
        "{status}"
    );
    assert!(!status.contains("cgroup cgroup"), "{status}");
    assert!(
        status
            .lines()
            .filter(|l| l.starts_with("host_"))
            .all(|l| l.contains("(cgroup removed)") || l.contains(" (removed)")),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&support::succeeded(
        &sb.netfast(&["status", "--instance", &sb.prefix, "--json"]),
        "status --json",
    ))
    .expect("status JSON");
    assert_eq!(json["host_local"]["cgroup_gone"], true, "{json}");

    // Back to the lab's cgroup: the old one is named, and said to be removed.
    let report = support::succeeded(
        &sb.netfast(&["up", "--config", sb.config_str()]),
        "move back",
    );
    assert!(
        report.contains(&format!(
            "  moved host-local links from cgroup {} to {} {HOOKS}; that cgroup was removed since\n",
            child.0.display(),
            cgroup.display()
        )),
        "{report}"
    );
    assert_eq!(attached(&cgroup).len(), 4);
    // An unchanged re-up reports no host-local change.
    let report = support::succeeded(&sb.netfast(&["up", "--config", sb.config_str()]), "re-up");
    assert!(!report.contains("host-local links"), "{report}");
}

fn exec_status(sb: &Sandbox) -> String {
    support::succeeded(&sb.netfast(&["status", "--instance", &sb.prefix]), "status")
}

/// The kernel ids of the pinned host-local links.
fn link_ids(pins: &Path) -> Vec<u32> {
    netfast::bpf::pins::HOST_LOCAL_LINK_NAMES
        .iter()
        .map(|l| {
            netfast::bpf::link_info::link_info(&pins.join(l))
                .unwrap_or_else(|e| panic!("{l}: {e}"))
                .id
        })
        .collect()
}

/// The client itself puts its pid in the cgroup: the sandbox's helper is what every
/// test here relies on to stay out of the machine's root cgroup.
#[test]
fn the_clients_run_in_the_labs_own_cgroup() {
    let sb = Sandbox::up("hlg", IngressMode::Tc, "");
    let cgroup = sb.cgroup();
    assert_ne!(
        cgroup,
        netfast::host::cgroup::cgroup2_mount().expect("cgroup2"),
        "never the root"
    );
    let out = exec_in_cgroup(&sb.host(), Some(&cgroup), &["cat", "/proc/self/cgroup"]);
    let rel = cgroup
        .file_name()
        .and_then(|n| n.to_str())
        .expect("cgroup name");
    assert!(
        text(&out.stdout).contains(&format!("0::/{rel}")),
        "{}",
        text(&out.stdout)
    );
}
