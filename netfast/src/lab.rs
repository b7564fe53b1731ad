//! The seed's sandbox, for the demo and the tests.
//!
//! [`Lab::create`] makes two namespaces: `<prefix>-host` (netfast's "host") and
//! `<prefix>-lan` (the LAN peer), joined by a veth named `eth0` on both sides that stands
//! in for the uplink: 10.0.1.48/24 in host, 10.0.1.26/24 in lan; and a cgroup2
//! directory of its own, `<cgroup2 mount>/netfast-<prefix>` ([`lab_cgroup`]), for the
//! host-local programs, so they never attach to the machine's root cgroup. Dropping
//! the [`Lab`] removes all of it, the seed's container namespaces and the instance's
//! pins, also on panic.
//! [`seed_config`] is the seed topology for an instance running in that host namespace,
//! and [`run_seed_checks`] sends real traffic through it.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;

use crate::{
    bpf,
    config::{Config, ConfigError, IngressMode},
    host::{
        cgroup, netlink,
        netns::{self, NetnsError},
        topology::{self, TopologyError},
    },
};

pub const UPLINK: &str = "eth0";
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 48);
pub const LAN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 26);
pub const UPLINK_PREFIX: u8 = 24;
pub const NETNS1_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
pub const NETNS1_HOST_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
pub const NETNS2_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 102);
pub const NETNS3_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 103);
pub const PUBLISHED_PORT: u16 = 8088;
pub const BACKEND_PORT: u16 = 80;
/// The LAN-side listener of the masquerade check.
pub const LAN_PORT: u16 = 9000;

const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "network namespace {name} already exists (a lab that was not torn down?); remove it \
         with `ip netns del {name}` or choose another prefix"
    )]
    Exists { name: String },
    #[error(
        "cgroup {} already exists (a lab that was not torn down?); remove it with `rmdir {}` \
         or choose another prefix",
        path.display(),
        path.display()
    )]
    CgroupExists { path: PathBuf },
    #[error("creating the lab's cgroup {}: {source}", path.display())]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("could not start a tokio runtime: {0}")]
    Runtime(std::io::Error),
}

impl LabError {
    /// True when the lab was refused before anything was created (its namespaces
    /// exist: another lab with that prefix is running, or one was not torn down).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            LabError::Exists { .. } | LabError::CgroupExists { .. }
        )
    }
}

pub fn host_ns(prefix: &str) -> String {
    format!("{prefix}-host")
}

pub fn lan_ns(prefix: &str) -> String {
    format!("{prefix}-lan")
}

/// The seed's container namespaces: `<prefix>-netns1..3`.
pub fn container_ns(prefix: &str, n: u8) -> String {
    format!("{prefix}-netns{n}")
}

/// The lab's cgroup2 directory, `<cgroup2 mount>/netfast-<prefix>`, where the seed
/// config attaches the host-local programs; None when no cgroup2 is mounted.
pub fn lab_cgroup(prefix: &str) -> Option<PathBuf> {
    cgroup::cgroup2_mount()
        .ok()
        .map(|mount| mount.join(format!("netfast-{prefix}")))
}

/// The sandbox; see the module docs.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    /// The cgroup this lab created; removed on drop.
    cgroup: Option<PathBuf>,
}

impl Lab {
    /// Creates `<prefix>-host` and `<prefix>-lan` and the uplink veth between them.
    /// Refuses when either exists, so it never adopts (and later deletes) someone else's.
    pub fn create(prefix: &str) -> Result<Lab, LabError> {
        let (host, lan) = (host_ns(prefix), lan_ns(prefix));
        netns::validate_name(&host)?;
        for name in [&host, &lan] {
            if netns::path(name).exists() {
                return Err(LabError::Exists { name: name.clone() });
            }
        }
        let cgroup = lab_cgroup(prefix);
        if let Some(path) = &cgroup
            && path.exists()
        {
            return Err(LabError::CgroupExists { path: path.clone() });
        }
        // From here on, Drop cleans up whatever exists.
        let mut lab = Lab {
            prefix: prefix.to_string(),
            cgroup: None,
        };
        if let Some(path) = cgroup {
            std::fs::create_dir(&path).map_err(|source| LabError::Cgroup {
                path: path.clone(),
                source,
            })?;
            lab.cgroup = Some(path);
        }
        netns::create(&host)?;
        netns::create(&lan)?;
        let lan_file = netns::open(&lan)?;
        in_ns(&host, |h| async move {
            topology::create_veth(&h, UPLINK, UPLINK, &lan_file).await?;
            address_up(&h, UPLINK, Ipv4Net::new(HOST_ADDR, UPLINK_PREFIX).ok()).await
        })?;
        in_ns(&lan, |h| async move {
            address_up(&h, UPLINK, Ipv4Net::new(LAN_ADDR, UPLINK_PREFIX).ok()).await
        })?;
        Ok(lab)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn host_ns(&self) -> String {
        host_ns(&self.prefix)
    }

    pub fn lan_ns(&self) -> String {
        lan_ns(&self.prefix)
    }

    /// The lab's own cgroup2 directory ([`lab_cgroup`]), None without cgroup2.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }
}

/// Removes a cgroup the lab created: the processes still in it (the lab's own
/// clients; nothing else is ever put there) are killed first (`cgroup.kill`, Linux
/// 5.14), since a cgroup with members cannot be removed.
fn remove_cgroup(path: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..50 {
        last = match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
        };
        let _ = std::fs::write(path.join("cgroup.kill"), "1");
        std::thread::sleep(Duration::from_millis(20));
    }
    last
}

impl Drop for Lab {
    fn drop(&mut self) {
        let p = &self.prefix;
        if bpf::pins::pin_dir(p).exists()
            && let Err(e) = bpf::loader::detach(p)
        {
            eprintln!("netfast lab: could not remove the pins of instance {p}: {e}");
        }
        let names = [
            container_ns(p, 1),
            container_ns(p, 2),
            container_ns(p, 3),
            host_ns(p),
            lan_ns(p),
        ];
        for name in names {
            if let Err(e) = netns::delete(&name) {
                eprintln!("netfast lab: could not delete network namespace {name}: {e}");
            }
        }
        if let Some(path) = &self.cgroup
            && let Err(e) = remove_cgroup(path)
        {
            eprintln!(
                "netfast lab: could not remove cgroup {}: {e}",
                path.display()
            );
        }
    }
}

/// Sets lo up, and `link` up with `address`.
async fn address_up(
    h: &rtnetlink::Handle,
    link: &str,
    address: Option<Ipv4Net>,
) -> Result<(), TopologyError> {
    topology::set_up_by_name(h, "lo").await?;
    let index = topology::require_link(h, link).await?;
    if let Some(a) = address {
        topology::add_address(h, index, a).await?;
    }
    topology::set_up(h, index).await
}

/// Runs netlink work inside namespace `ns` (`netlink::netlink_blocking`).
fn in_ns<F, Fut>(ns: &str, f: F) -> Result<(), LabError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: std::future::Future<Output = Result<(), TopologyError>>,
{
    Ok(netlink::netlink_blocking(Some(ns), f)??)
}

/// The seed topology as a config file, for an instance named `prefix` whose host is
/// `<prefix>-host`.
pub fn seed_config_toml(prefix: &str, ingress: IngressMode) -> String {
    let ns1 = container_ns(prefix, 1);
    let ns2 = container_ns(prefix, 2);
    let ns3 = container_ns(prefix, 3);
    let ingress = ingress.as_str();
    let host_local = match lab_cgroup(prefix) {
        Some(path) => format!(
            "# Host-local access to published ports, for the processes in the lab's own\n\
             # cgroup (never the machine's root cgroup).\n\
             [host_local]\ncgroup = \"{}\"\n",
            path.display()
        ),
        None => "# No cgroup2 mount: no [host_local].\n".to_owned(),
    };
    format!(
        r#"# The seed topology (netfast lab).
instance = "{prefix}"
uplink = "{UPLINK}"
ingress = "{ingress}"

[bridge]
name = "br0"
address = "172.16.0.100/24"

# Point to point: veth1 {NETNS1_HOST_ADDR} <-> veth1-peer {NETNS1_ADDR}.
[[container]]
netns = "{ns1}"
address = "{NETNS1_ADDR}/24"
veth = "veth1"
peer = "veth1-peer"
host_address = "{NETNS1_HOST_ADDR}"

[[container]]
netns = "{ns2}"
address = "{NETNS2_ADDR}/24"
veth = "veth2"
peer = "veth2-peer"

[[container]]
netns = "{ns3}"
address = "{NETNS3_ADDR}/24"
veth = "veth3"
peer = "veth3-peer"

[masquerade]
subnet = "172.16.0.0/24"
ports = "61000-65535"

{host_local}
[[publish]]
spec = "{PUBLISHED_PORT}:{NETNS2_ADDR}:{BACKEND_PORT}/tcp"
"#
    )
}

/// The seed topology as a [`Config`] (parsed from [`seed_config_toml`], so the two agree).
pub fn seed_config(prefix: &str, ingress: IngressMode) -> Result<Config, ConfigError> {
    Config::from_toml_str(&seed_config_toml(prefix, ingress))
}

/// The outcome of one seed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, result: Result<String, String>) -> Check {
        let (passed, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        Check {
            name: name.into(),
            passed,
            detail,
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        write!(f, "{verdict}  {}: {}", self.name, self.detail)
    }
}

/// Every seed check, in order, against the lab `prefix` with the seed config up.
pub fn run_seed_checks(prefix: &str) -> Vec<Check> {
    let host = host_ns(prefix);
    let lan = lan_ns(prefix);
    let ns1 = container_ns(prefix, 1);
    let ns2 = container_ns(prefix, 2);
    let ns3 = container_ns(prefix, 3);
    vec![
        Check::new(
            format!("netns1 -> host ping {NETNS1_HOST_ADDR}"),
            ping(&ns1, NETNS1_HOST_ADDR),
        ),
        Check::new(
            format!("host -> netns1 ping {NETNS1_ADDR}"),
            ping(&host, NETNS1_ADDR),
        ),
        Check::new(
            format!("netns2 -> netns3 ping {NETNS3_ADDR} over br0"),
            ping(&ns2, NETNS3_ADDR),
        ),
        Check::new(
            format!("netns3 -> netns2 ping {NETNS2_ADDR} over br0"),
            ping(&ns3, NETNS2_ADDR),
        ),
        Check::new(
            format!("masquerade: netns2 -> {LAN_ADDR} ping (ICMP echo)"),
            ping(&ns2, LAN_ADDR),
        ),
        Check::new(
            format!("masquerade: netns2 -> {LAN_ADDR}:{LAN_PORT} tcp, far side sees {HOST_ADDR}"),
            tcp_exchange(
                &lan,
                SocketAddrV4::new(LAN_ADDR, LAN_PORT),
                &ns2,
                SocketAddrV4::new(LAN_ADDR, LAN_PORT),
                Some(HOST_ADDR),
            ),
        ),
        Check::new(
            format!(
                "published port: {LAN_ADDR} -> {HOST_ADDR}:{PUBLISHED_PORT} tcp reaches netns2:{BACKEND_PORT}"
            ),
            tcp_exchange(
                &ns2,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, BACKEND_PORT),
                &lan,
                SocketAddrV4::new(HOST_ADDR, PUBLISHED_PORT),
                Some(LAN_ADDR),
            ),
        ),
        Check::new(
            format!(
                "host-local: host -> {HOST_ADDR}:{PUBLISHED_PORT} tcp from the lab's cgroup reaches netns2:{BACKEND_PORT}"
            ),
            host_local_exchange(prefix, SocketAddrV4::new(HOST_ADDR, PUBLISHED_PORT)),
        ),
    ]
}

/// Sends the request and prints the reply, then the peer the socket reported once
/// connected (a closed socket has none).
const HOST_LOCAL_CLIENT: &str = "import socket,sys
s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3)
p=s.getpeername()
s.sendall(sys.argv[3].encode()+b'\\n'); s.shutdown(socket.SHUT_WR)
r=b''
while True:
    d=s.recv(4096)
    if not d: break
    r+=d
print(r.decode().strip()); print(p[0],p[1])";

/// A host process in the lab's cgroup connects to `connect` (a published port on an
/// address of the host): the host-local programs must take it to netns2's listener,
/// and the socket must report `connect` as its peer. The client is a python3 process
/// that puts itself in the cgroup before it connects; it enters the host namespace
/// with `nsenter --net` (`ip netns exec` remounts /sys, which hides the cgroup2 mount).
pub fn host_local_exchange(prefix: &str, connect: SocketAddrV4) -> Result<String, String> {
    let Some(cgroup) = lab_cgroup(prefix).filter(|c| c.is_dir()) else {
        return Err("the lab has no cgroup2 directory (no cgroup2 mount?)".to_owned());
    };
    let bind = SocketAddrV4::new(NETNS2_ADDR, BACKEND_PORT);
    let ns2 = container_ns(prefix, 2);
    let listener = netns::run_in(&ns2, || TcpListener::bind(bind))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("could not listen on {bind} in {ns2}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let request = String::from_utf8_lossy(REQUEST).trim().to_owned();
    std::thread::scope(|s| {
        let server = s.spawn(move || serve_once(&listener));
        let script = format!(
            "echo $$ > '{}/cgroup.procs' && exec python3 -c \"$0\" \"$@\"",
            cgroup.display()
        );
        let client = Command::new("nsenter")
            .arg(format!("--net={}", netns::path(&host_ns(prefix)).display()))
            .args(["sh", "-c", &script, HOST_LOCAL_CLIENT])
            .arg(connect.ip().to_string())
            .arg(connect.port().to_string())
            .arg(&request)
            .output()
            .map_err(|e| format!("could not run nsenter: {e} (install util-linux)"));
        let server = server
            .join()
            .map_err(|_| "the server thread panicked".to_string())
            .and_then(|r| r);
        let out = client?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "client: {} {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let peer = server?;
        let mut lines = stdout.lines();
        let reply = lines.next().unwrap_or_default();
        let reported = lines.next().unwrap_or_default();
        let want = format!("{} {}", connect.ip(), connect.port());
        if !reply.starts_with(REPLY_PREFIX.trim()) {
            return Err(format!("unexpected reply {reply:?}"));
        }
        if reported != want {
            return Err(format!(
                "reached the backend, but getpeername says {reported:?}, not {want:?}"
            ));
        }
        Ok(format!(
            "backend saw source {peer}; getpeername says {}",
            connect
        ))
    })
}

/// `ip netns exec NS ping` (a tool under `ip netns exec` is fine; netfast itself never
/// runs there). Passes when any of three echoes is answered.
pub fn ping(ns: &str, addr: Ipv4Addr) -> Result<String, String> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-w", "4",
        ])
        .arg(addr.to_string())
        .output()
        .map_err(|e| {
            format!(
                "could not run `ip netns exec {ns} ping`: {e} (install iproute2 and iputils-ping)"
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("")
        .trim()
        .to_string();
    if out.status.success() {
        Ok(summary)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("{summary} {}", stderr.trim()).trim().to_string())
    }
}

const REQUEST: &[u8] = b"netfast lab request\n";
const REPLY_PREFIX: &str = "netfast lab reply, you are ";

/// A TCP exchange with real sockets: a listener bound in `server_ns`, a client connecting
/// from `client_ns` (each socket created on a thread inside its namespace). The client
/// sends a request; the server checks it and replies with the peer address it saw; the
/// client checks the reply. `expect_peer` is the source address the server must see.
pub fn tcp_exchange(
    server_ns: &str,
    bind: SocketAddrV4,
    client_ns: &str,
    connect: SocketAddrV4,
    expect_peer: Option<Ipv4Addr>,
) -> Result<String, String> {
    let listener = netns::run_in(server_ns, || TcpListener::bind(bind))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("could not listen on {bind} in {server_ns}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    std::thread::scope(|s| {
        let server = s.spawn(move || serve_once(&listener));
        let client = netns::run_in(client_ns, || client_once(connect))
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let server = server
            .join()
            .map_err(|_| "the server thread panicked".to_string())
            .and_then(|r| r);
        match (client, server) {
            (Err(c), Err(s)) => Err(format!("client: {c}; server: {s}")),
            (Err(c), Ok(peer)) => Err(format!("client: {c} (server saw {peer})")),
            (Ok(_), Err(s)) => Err(format!("server: {s}")),
            (Ok(reply), Ok(peer)) => match expect_peer {
                Some(want) if peer.ip() != std::net::IpAddr::V4(want) => Err(format!(
                    "data went both ways, but the far side saw source {peer}, expected {want}"
                )),
                _ => Ok(format!(
                    "far side saw source {peer}; request and reply ({} bytes) intact",
                    reply.len()
                )),
            },
        }
    })
}

fn serve_once(listener: &TcpListener) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + TIMEOUT;
    let (mut stream, peer) = loop {
        match listener.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(format!("no connection within {}s", TIMEOUT.as_secs()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    let io = |e: std::io::Error| format!("from {peer}: {e}");
    stream.set_nonblocking(false).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut got = vec![0u8; REQUEST.len()];
    stream.read_exact(&mut got).map_err(io)?;
    if got != REQUEST {
        return Err(format!(
            "from {peer}: request arrived altered: {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    stream
        .write_all(format!("{REPLY_PREFIX}{peer}\n").as_bytes())
        .map_err(io)?;
    Ok(peer)
}

fn client_once(connect: SocketAddrV4) -> Result<String, String> {
    let io = |e: std::io::Error| format!("{connect}: {e}");
    let mut stream = TcpStream::connect_timeout(&connect.into(), TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.write_all(REQUEST).map_err(io)?;
    stream.shutdown(Shutdown::Write).map_err(io)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(io)?;
    if !reply.starts_with(REPLY_PREFIX) {
        return Err(format!("{connect}: unexpected reply {reply:?}"));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_config_parses_and_matches_the_seed() {
        let c = seed_config("nft", IngressMode::Xdp).unwrap();
        assert_eq!(c.instance, "nft");
        assert_eq!(c.ingress, IngressMode::Xdp);
        assert_eq!(c.containers.len(), 3);
        assert_eq!(c.containers[0].netns, "nft-netns1");
        assert_eq!(c.containers[0].host_address, Some(NETNS1_HOST_ADDR));
        assert_eq!(c.containers[1].veth, "veth2");
        assert_eq!(c.containers[2].peer, "veth3-peer");
        let m = c.masquerade.unwrap();
        assert_eq!(m.ports, 61000..=65535);
        assert_eq!(c.publish.len(), 1);
    }

    #[test]
    fn check_display() {
        let c = Check::new("x", Err("boom".into()));
        assert_eq!(c.to_string(), "FAIL  x: boom");
    }
}
