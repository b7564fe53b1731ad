//! The lanes: one sandbox each (client ns → host ns with br0 → container ns), identical
//! addresses, links and MTU, differing only in how the host forwards and translates.
//!
//! Dropping a [`Lane`] runs `netfast down` for the netfast lanes and then removes all of
//! its namespaces (with them every link and every iptables/nftables rule, which only
//! ever live in the lane's own host namespace).

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use netfast::lab::{self, Lab};
use serde::Serialize;

use crate::{BenchError, sys};

pub const CLIENT_ADDR: Ipv4Addr = lab::LAN_ADDR;
pub const HOST_ADDR: Ipv4Addr = lab::HOST_ADDR;
pub const CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 102);
pub const BRIDGE_CIDR: &str = "172.16.0.100/24";
pub const BRIDGE_ADDR: &str = "172.16.0.100";
pub const SUBNET: &str = "172.16.0.0/24";

/// Published TCP port and the container's listener behind it (the seed's 8088 → 80).
pub const TCP_PUBLISHED: u16 = 8088;
pub const TCP_BACKEND: u16 = 80;
pub const UDP_PUBLISHED: u16 = 8089;
pub const UDP_BACKEND: u16 = 9000;
pub const IPERF_PORT: u16 = 5201;
/// Filler published ports for rule scaling start here (20000 + 9999 stays clear of
/// every port above and of netfast's SNAT range).
pub const FILLER_BASE: u16 = 20000;

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LaneKind {
    Base,
    NetfastTc,
    NetfastTcNoFastPath,
    NetfastXdp,
    IptablesNft,
    IptablesLegacy,
    NftMap,
}

impl LaneKind {
    pub const ALL: [LaneKind; 7] = [
        LaneKind::Base,
        LaneKind::NetfastTc,
        LaneKind::NetfastTcNoFastPath,
        LaneKind::NetfastXdp,
        LaneKind::IptablesNft,
        LaneKind::IptablesLegacy,
        LaneKind::NftMap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LaneKind::Base => "base",
            LaneKind::NetfastTc => "netfast-tc",
            LaneKind::NetfastTcNoFastPath => "netfast-tc-nofp",
            LaneKind::NetfastXdp => "netfast-xdp",
            LaneKind::IptablesNft => "iptables-nft",
            LaneKind::IptablesLegacy => "iptables-legacy",
            LaneKind::NftMap => "nft-map",
        }
    }

    /// A short tag for namespace names.
    fn tag(self) -> &'static str {
        match self {
            LaneKind::Base => "b",
            LaneKind::NetfastTc => "t",
            LaneKind::NetfastTcNoFastPath => "s",
            LaneKind::NetfastXdp => "x",
            LaneKind::IptablesNft => "n",
            LaneKind::IptablesLegacy => "l",
            LaneKind::NftMap => "m",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            LaneKind::Base => "plain routing, no NAT: the client routes 172.16.0.0/24 via the host",
            LaneKind::NetfastTc => {
                "netfast, tcx programs on uplink ingress and egress and on the container's veth, fast path on (the default)"
            }
            LaneKind::NetfastTcNoFastPath => {
                "netfast-tc with fast_path = false: translated packets cross the bridge and the host's routing"
            }
            LaneKind::NetfastXdp => {
                "netfast, XDP (native) on uplink ingress, tcx on egress and the container's veth, fast path on"
            }
            LaneKind::IptablesNft => {
                "iptables (nf_tables backend): the seed's DNAT in PREROUTING, MASQUERADE in POSTROUTING"
            }
            LaneKind::IptablesLegacy => "iptables-legacy (x_tables): the same rules",
            LaneKind::NftMap => {
                "nftables: one dnat rule over a verdict map (proto . port), masquerade"
            }
        }
    }

    pub fn is_netfast(self) -> bool {
        matches!(
            self,
            LaneKind::NetfastTc | LaneKind::NetfastTcNoFastPath | LaneKind::NetfastXdp
        )
    }

    /// Lanes whose figures change with the number of published ports.
    pub fn has_rules(self) -> bool {
        self != LaneKind::Base
    }
}

impl fmt::Display for LaneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the client sends each kind of traffic in this lane.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    pub tcp: SocketAddrV4,
    pub udp: SocketAddrV4,
    pub iperf: SocketAddrV4,
}

/// One lane; see the module docs.
pub struct Lane {
    pub kind: LaneKind,
    prefix: String,
    netfast_bin: PathBuf,
    config: PathBuf,
    /// Published ports currently configured (filler + the measured one).
    pub rules: usize,
    // Last: dropped after `Drop::drop` ran `netfast down`.
    _lab: Lab,
}

impl Lane {
    /// Builds the lane with one published port per protocol (`rules` = 1).
    pub fn build(
        kind: LaneKind,
        run_tag: &str,
        netfast_bin: &Path,
        work_dir: &Path,
    ) -> Result<Lane, BenchError> {
        let prefix = format!("nfb{run_tag}{}", kind.tag());
        let lab = Lab::create(&prefix)?;
        let lane = Lane {
            kind,
            config: work_dir.join(format!("{prefix}.toml")),
            prefix,
            netfast_bin: netfast_bin.to_path_buf(),
            rules: 0,
            _lab: lab,
        };
        let (host, client, ctr) = (lane.host(), lane.client(), lane.container());
        // The client side of every lane: wide port range and TIME_WAIT reuse, so the
        // connection-rate client never runs out of ports.
        sys::sysctl_in(
            &client,
            "/proc/sys/net/ipv4/ip_local_port_range",
            "1024 65000",
        )?;
        sys::sysctl_in(&client, "/proc/sys/net/ipv4/tcp_tw_reuse", "1")?;
        if kind.is_netfast() {
            // netfast builds the bridge and the container itself.
        } else {
            build_bridge_and_container(&host, &ctr)?;
            sys::sysctl_in(&host, "/proc/sys/net/ipv4/ip_forward", "1")?;
        }
        let mut lane = lane;
        lane.set_rules(1)?;
        if kind == LaneKind::Base {
            ip(&[
                "-n",
                &client,
                "route",
                "add",
                SUBNET,
                "via",
                &HOST_ADDR.to_string(),
            ])?;
        }
        Ok(lane)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn host(&self) -> String {
        lab::host_ns(&self.prefix)
    }

    pub fn client(&self) -> String {
        lab::lan_ns(&self.prefix)
    }

    pub fn container(&self) -> String {
        lab::container_ns(&self.prefix, 2)
    }

    pub fn targets(&self) -> Targets {
        if self.kind == LaneKind::Base {
            Targets {
                tcp: SocketAddrV4::new(CONTAINER_ADDR, TCP_BACKEND),
                udp: SocketAddrV4::new(CONTAINER_ADDR, UDP_BACKEND),
                iperf: SocketAddrV4::new(CONTAINER_ADDR, IPERF_PORT),
            }
        } else {
            Targets {
                tcp: SocketAddrV4::new(HOST_ADDR, TCP_PUBLISHED),
                udp: SocketAddrV4::new(HOST_ADDR, UDP_PUBLISHED),
                iperf: SocketAddrV4::new(HOST_ADDR, IPERF_PORT),
            }
        }
    }

    /// Configures `n` published TCP ports (`n - 1` fillers, then the measured 8088, so
    /// it is last in an iptables chain), plus the UDP and iperf3 ports after them.
    pub fn set_rules(&mut self, n: usize) -> Result<(), BenchError> {
        let n = n.max(1);
        let fillers = n - 1;
        match self.kind {
            LaneKind::Base => {}
            LaneKind::NetfastTc | LaneKind::NetfastTcNoFastPath | LaneKind::NetfastXdp => {
                self.netfast_up(fillers)?
            }
            LaneKind::IptablesNft => {
                sys::run_tool_input(
                    Some(&self.host()),
                    &["iptables-nft-restore"],
                    TOOL_TIMEOUT,
                    Some(&iptables_rules(fillers)),
                )?;
            }
            LaneKind::IptablesLegacy => {
                sys::run_tool_input(
                    Some(&self.host()),
                    &["iptables-legacy-restore"],
                    TOOL_TIMEOUT,
                    Some(&iptables_rules(fillers)),
                )?;
            }
            LaneKind::NftMap => {
                sys::run_tool_input(
                    Some(&self.host()),
                    &["nft", "-f", "-"],
                    TOOL_TIMEOUT,
                    Some(&nft_ruleset(fillers)),
                )?;
            }
        }
        self.rules = n;
        Ok(())
    }

    fn netfast_up(&self, fillers: usize) -> Result<(), BenchError> {
        let ingress = if self.kind == LaneKind::NetfastXdp {
            "xdp"
        } else {
            "tc"
        };
        let fast_path = self.kind != LaneKind::NetfastTcNoFastPath;
        let config = netfast_config(&self.prefix, ingress, fast_path, fillers);
        std::fs::write(&self.config, config).map_err(|source| BenchError::Io {
            what: format!("writing {}", self.config.display()),
            source,
        })?;
        self.netfast(&["up"])
    }

    fn netfast(&self, verb: &[&str]) -> Result<(), BenchError> {
        let host = self.host();
        let config = self.config.display().to_string();
        let mut argv = vec!["--netns", host.as_str()];
        argv.extend_from_slice(verb);
        argv.extend_from_slice(&["--config", config.as_str()]);
        let out = Command::new("timeout")
            .arg("120")
            .arg(&self.netfast_bin)
            .args(&argv)
            .output()
            .map_err(|source| BenchError::Spawn {
                what: format!("{} {}", self.netfast_bin.display(), argv.join(" ")),
                source,
            })?;
        if !out.status.success() {
            return Err(BenchError::Tool {
                what: format!("netfast {}", argv.join(" ")),
                status: out.status.to_string(),
                stderr: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(())
    }

    /// nf_conntrack entries in the lane's host namespace.
    pub fn conntrack_count(&self) -> Result<u64, BenchError> {
        let out = sys::run_tool(Some(&self.host()), &["conntrack", "-C"], TOOL_TIMEOUT)?;
        out.trim().parse().map_err(|_| BenchError::Check {
            what: format!(
                "`conntrack -C` in {} printed {:?}, not a count",
                self.host(),
                out.trim()
            ),
        })
    }

    /// Empties the lane's connection tracking: netfast's CONNTRACK map (`netfast ct
    /// flush`) or nf_conntrack in the host namespace. Base tracks nothing.
    pub fn flush_conntrack(&self) -> Result<(), BenchError> {
        match self.kind {
            LaneKind::Base => Ok(()),
            kind if kind.is_netfast() => self.netfast(&["ct", "flush"]),
            _ => sys::run_tool(Some(&self.host()), &["conntrack", "-F"], TOOL_TIMEOUT).map(|_| ()),
        }
    }

    /// MTU and offload settings of every link on the path, to prove the lanes alike.
    pub fn link_fingerprint(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (role, ns, link) in [
            ("client eth0", self.client(), "eth0"),
            ("host eth0", self.host(), "eth0"),
            ("host br0", self.host(), "br0"),
            ("host veth2", self.host(), "veth2"),
            ("container eth0", self.container(), "eth0"),
        ] {
            let mtu = sys::run_tool(
                None,
                &["ip", "-n", &ns, "-o", "link", "show", link],
                TOOL_TIMEOUT,
            )
            .ok()
            .and_then(|s| {
                let mut words = s.split_whitespace();
                words
                    .find(|w| *w == "mtu")
                    .and(words.next().map(str::to_string))
            })
            .unwrap_or_else(|| "?".into());
            out.insert(format!("{role} mtu"), mtu);
            let features = sys::run_tool(Some(&ns), &["ethtool", "-k", link], TOOL_TIMEOUT)
                .unwrap_or_default();
            for line in features.lines().skip(1) {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                // Only the switchable offloads that shape the traffic.
                let name = name.trim();
                if matches!(
                    name,
                    "tx-checksumming"
                        | "scatter-gather"
                        | "tcp-segmentation-offload"
                        | "generic-segmentation-offload"
                        | "generic-receive-offload"
                        | "rx-checksumming"
                ) {
                    out.insert(format!("{role} {name}"), value.trim().to_string());
                }
            }
        }
        out
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if self.kind.is_netfast()
            && self.config.exists()
            && let Err(e) = self.netfast(&["down"])
        {
            eprintln!("bench: netfast down in lane {}: {e}", self.kind);
        }
        let _ = std::fs::remove_file(&self.config);
        // The Lab removes the namespaces (and the container namespace netns2) next.
    }
}

fn ip(args: &[&str]) -> Result<(), BenchError> {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    sys::run_tool(None, &argv, TOOL_TIMEOUT).map(|_| ())
}

/// The same bridge and container that netfast builds, made with iproute2 for the lanes
/// netfast does not run in: br0 172.16.0.100/24, veth2 in br0 ↔ eth0 172.16.0.102/24.
fn build_bridge_and_container(host: &str, ctr: &str) -> Result<(), BenchError> {
    netfast::host::netns::create(ctr)?;
    ip(&["-n", host, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", host, "addr", "add", BRIDGE_CIDR, "dev", "br0"])?;
    ip(&["-n", host, "link", "set", "br0", "up"])?;
    ip(&[
        "-n", host, "link", "add", "veth2", "type", "veth", "peer", "name", "eth0", "netns", ctr,
    ])?;
    ip(&["-n", host, "link", "set", "veth2", "master", "br0"])?;
    ip(&["-n", host, "link", "set", "veth2", "up"])?;
    ip(&["-n", ctr, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        ctr,
        "addr",
        "add",
        &format!("{CONTAINER_ADDR}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", ctr, "link", "set", "eth0", "up"])?;
    ip(&["-n", ctr, "route", "add", "default", "via", BRIDGE_ADDR])
}

/// The seed's rules, with `fillers` DNAT rules for other ports first.
pub fn iptables_rules(fillers: usize) -> String {
    let mut s = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
    );
    for i in 0..fillers {
        let p = usize::from(FILLER_BASE) + i;
        s += &format!(
            "-A PREROUTING ! -i br0 -p tcp --dport {p} -j DNAT --to-destination {CONTAINER_ADDR}:{p}\n"
        );
    }
    s += &format!(
        "-A PREROUTING ! -i br0 -p tcp --dport {TCP_PUBLISHED} -j DNAT --to-destination {CONTAINER_ADDR}:{TCP_BACKEND}\n\
         -A PREROUTING ! -i br0 -p udp --dport {UDP_PUBLISHED} -j DNAT --to-destination {CONTAINER_ADDR}:{UDP_BACKEND}\n\
         -A PREROUTING ! -i br0 -p tcp --dport {IPERF_PORT} -j DNAT --to-destination {CONTAINER_ADDR}:{IPERF_PORT}\n\
         -A POSTROUTING -s {SUBNET} ! -o br0 -j MASQUERADE\nCOMMIT\n"
    );
    s
}

/// One dnat rule over a map keyed by (protocol . port); replaced atomically.
pub fn nft_ruleset(fillers: usize) -> String {
    let mut elements: Vec<String> = (0..fillers)
        .map(|i| {
            let p = usize::from(FILLER_BASE) + i;
            format!("tcp . {p} : {CONTAINER_ADDR} . {p}")
        })
        .collect();
    elements.push(format!(
        "tcp . {TCP_PUBLISHED} : {CONTAINER_ADDR} . {TCP_BACKEND}"
    ));
    elements.push(format!(
        "udp . {UDP_PUBLISHED} : {CONTAINER_ADDR} . {UDP_BACKEND}"
    ));
    elements.push(format!(
        "tcp . {IPERF_PORT} : {CONTAINER_ADDR} . {IPERF_PORT}"
    ));
    format!(
        "table ip nat\ndelete table ip nat\ntable ip nat {{\n\
         \tmap published {{\n\t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n\
         \t\telements = {{ {} }}\n\t}}\n\
         \tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tiifname != \"br0\" meta l4proto {{ tcp, udp }} dnat ip to meta l4proto . th dport map @published\n\t}}\n\
         \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {SUBNET} oifname != \"br0\" masquerade\n\t}}\n}}\n",
        elements.join(",\n\t\t\t")
    )
}

/// The lane's netfast config: the seed's bridge and container netns2, masquerade, and
/// the published ports (a filler range first, as one spec).
pub fn netfast_config(prefix: &str, ingress: &str, fast_path: bool, fillers: usize) -> String {
    let ctr = lab::container_ns(prefix, 2);
    let mut s = format!(
        "instance = \"{prefix}\"\nuplink = \"eth0\"\ningress = \"{ingress}\"\nfast_path = {fast_path}\n\n\
         [bridge]\nname = \"br0\"\naddress = \"{BRIDGE_CIDR}\"\n\n\
         [[container]]\nnetns = \"{ctr}\"\naddress = \"{CONTAINER_ADDR}/24\"\nveth = \"veth2\"\npeer = \"eth0\"\n\n\
         [masquerade]\nsubnet = \"{SUBNET}\"\n\n"
    );
    if fillers > 0 {
        let last = usize::from(FILLER_BASE) + fillers - 1;
        s += &format!(
            "[[publish]]\nspec = \"{FILLER_BASE}-{last}:{CONTAINER_ADDR}:{FILLER_BASE}-{last}/tcp\"\n\n"
        );
    }
    s += &format!(
        "[[publish]]\nspec = \"{TCP_PUBLISHED}:{CONTAINER_ADDR}:{TCP_BACKEND}/tcp\"\n\n\
         [[publish]]\nspec = \"{UDP_PUBLISHED}:{CONTAINER_ADDR}:{UDP_BACKEND}/udp\"\n\n\
         [[publish]]\nspec = \"{IPERF_PORT}:{CONTAINER_ADDR}:{IPERF_PORT}/tcp\"\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_rule_is_last_of_its_kind() {
        let r = iptables_rules(3);
        let dnat: Vec<&str> = r.lines().filter(|l| l.contains("DNAT")).collect();
        assert_eq!(dnat.len(), 6);
        assert!(dnat[3].contains("--dport 8088"));
        assert!(r.ends_with("COMMIT\n"));
    }

    #[test]
    fn netfast_config_parses() {
        for fillers in [0, 9999] {
            let c = netfast::config::Config::from_toml_str(&netfast_config(
                "nfbx",
                "xdp",
                fillers > 0,
                fillers,
            ))
            .unwrap();
            assert_eq!(c.publish.len(), if fillers > 0 { 4 } else { 3 });
        }
    }

    #[test]
    fn nft_map_has_every_port() {
        let s = nft_ruleset(2);
        assert!(s.contains("tcp . 20001 : 172.16.0.102 . 20001"));
        assert!(s.contains("udp . 8089 : 172.16.0.102 . 9000"));
    }
}
