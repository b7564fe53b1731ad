//! The operator's TOML configuration, parsed into checked types.
//!
//! Parsing goes through private `Raw*` structs of plain strings, so every bad value
//! gets our own message (value, key, fix) rather than serde's. Then [`Config::validate`]
//! runs the cross-field checks; it is public so code that builds a `Config` by hand
//! (the lab) gets the same checks.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::Ipv4Net;
use netfast_common::{
    Backend, PublishKey,
    names::{CONNTRACK_CAPACITY, PIN_ROOT},
};
use serde::Deserialize;

/// The attach mode lives with the loader; re-exported where configs always found it.
pub use crate::bpf::loader::{IngressMode, TcAttachMode};
use crate::{
    bpf::pins::{INSTANCE_NAME_FIX, instance_name_problem},
    conntrack::Timeouts,
    host::cgroup,
    publish::{AllowedBackends, PortClash, PortMappings, PublishSpec},
};

/// Linux's IFNAMSIZ is 16, including the NUL.
pub const IFNAME_MAX: usize = 15;
/// The longest instance name, in bytes: it prefixes namespaces and names a bpffs
/// directory ([`crate::bpf::pins`] holds the rule).
pub use crate::bpf::pins::INSTANCE_MAX;
/// Default SNAT source ports: above Linux's default ip_local_port_range (32768-60999).
pub const DEFAULT_SNAT_PORTS: RangeInclusive<u16> = 61000..=65535;
/// The bridge's network and the masquerade subnet: shorter than /8 claims (or
/// masquerades) much of the Internet, which is a mistake, not a policy.
pub const BRIDGE_PREFIX_MIN: u8 = 8;
/// A bridge network longer than /30 has no room for a container next to the bridge.
pub const BRIDGE_PREFIX_MAX: u8 = 30;
/// Name of the container end of a veth when the config gives none.
pub const DEFAULT_PEER: &str = "eth0";

/// Everything `netfast up` builds and attaches for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Names the pin directory `/sys/fs/bpf/netfast/<instance>` and the state file.
    pub instance: String,
    /// An existing interface of the host namespace; the datapath attaches here.
    pub uplink: String,
    pub ingress: IngressMode,
    /// `tc_attach`: tcx links or netlink TC filters for the tc programs ("auto", the
    /// default: tcx where the kernel has it).
    pub tc_attach: TcAttachMode,
    /// `fast_path`: true (the default) sends translated packets straight between the
    /// uplink and the containers' veths (`bpf_redirect_peer`, `bpf_redirect`), past
    /// the bridge and the host's routing; false keeps them on that normal path.
    pub fast_path: bool,
    pub bridge: BridgeConfig,
    pub containers: Vec<ContainerConfig>,
    pub masquerade: Option<MasqueradeConfig>,
    pub publish: Vec<PublishSpec>,
    /// `[conntrack]`: table size, GC timeouts and interval. Defaults when absent.
    pub conntrack: ConntrackConfig,
    /// `[host_local]`: host-local access to published ports. None (the section is
    /// absent) leaves it off: the programs would act on every process of the cgroup,
    /// so attaching them is the operator's choice, never a default.
    pub host_local: Option<HostLocalConfig>,
    /// Where the file came from, for error messages; None when parsed from a string.
    pub source: Option<PathBuf>,
}

/// The `[conntrack]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// `CONNTRACK` entries (two per flow). Changing it on a running instance is a
    /// layout change: `up` refuses it until the instance is taken down.
    pub capacity: u32,
    /// How often `netfast run` garbage-collects conntrack.
    pub gc_interval: Duration,
    /// Idle time after which a flow is removed, per protocol and TCP state.
    pub timeouts: Timeouts,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            capacity: CONNTRACK_CAPACITY,
            gc_interval: DEFAULT_GC_INTERVAL,
            timeouts: Timeouts::default(),
        }
    }
}

pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(5);
/// Below this a table fills with a handful of busy clients.
pub const CONNTRACK_CAPACITY_MIN: u32 = 1024;
/// 4 Mi entries take about half a GiB of kernel memory, preallocated.
pub const CONNTRACK_CAPACITY_MAX: u32 = 1 << 22;
/// 30 days: longer idle times are a configuration mistake, not a policy.
pub const TIMEOUT_MAX_SECS: u64 = 30 * 24 * 3600;

/// The `[host_local]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLocalConfig {
    /// The cgroup2 directory the host-local programs attach to; they act on the
    /// processes in it and below it.
    pub cgroup: CgroupSetting,
}

/// `[host_local] cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupSetting {
    /// `"auto"`: the root of the cgroup2 mount (found in `/proc/mounts` at `up`), so
    /// every process of the host. The production choice.
    Auto,
    /// An absolute path to a cgroup2 directory; `up` refuses anything else.
    Path(PathBuf),
}

impl std::fmt::Display for CgroupSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CgroupSetting::Auto => f.write_str("auto"),
            CgroupSetting::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    /// The bridge's own address; bridged containers use it as their default gateway.
    pub address: Ipv4Net,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Named network namespace (`/run/netns/<netns>`); created if missing.
    pub netns: String,
    /// The container's address, with its prefix length.
    pub address: Ipv4Net,
    /// Host end of the veth pair.
    pub veth: String,
    /// Container end of the veth pair, inside `netns`.
    pub peer: String,
    /// When set, the container is joined point to point: the host end gets this
    /// address, both ends get /32 peer routes, and the veth is not on the bridge.
    pub host_address: Option<Ipv4Addr>,
}

impl ContainerConfig {
    /// True when the host end of the veth is plugged into the bridge.
    pub fn is_bridged(&self) -> bool {
        self.host_address.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasqueradeConfig {
    /// Sources in this subnet leaving through the uplink take the uplink's address.
    pub subnet: Ipv4Net,
    /// SNAT source ports; must not overlap the host's `net.ipv4.ip_local_port_range`.
    pub ports: RangeInclusive<u16>,
    /// `allow_direct_routing`: when false (the default), a packet from the uplink
    /// routed straight to an address in `subnet` (not the host's own) that belongs to
    /// no flow and no published port is dropped, so unpublished container ports are
    /// not reachable from outside; true lets routed setups reach the containers.
    pub allow_direct_routing: bool,
}

impl MasqueradeConfig {
    /// Refuses a SNAT range that overlaps the host's ephemeral ports (`local`, as read
    /// by [`read_local_port_range`]): the host's own connections would collide with
    /// translated ones.
    pub fn check_local_port_range(&self, local: &RangeInclusive<u16>) -> Result<(), ConfigError> {
        let p = &self.ports;
        if p.start() <= local.end() && local.start() <= p.end() {
            return Err(ConfigError::Invalid(format!(
                "masquerade ports \"{}-{}\" (masquerade.ports): overlap the host's \
                 ip_local_port_range {}-{}; pick a range outside it, such as \"61000-65535\", \
                 or narrow net.ipv4.ip_local_port_range",
                p.start(),
                p.end(),
                local.start(),
                local.end()
            )));
        }
        Ok(())
    }
}

/// Reads `net.ipv4.ip_local_port_range` of the calling thread's network namespace.
pub fn read_local_port_range() -> std::io::Result<RangeInclusive<u16>> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = std::fs::read_to_string(PATH)?;
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Ok(lo..=hi),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{PATH} holds {text:?}, not two ports"),
        )),
    }
}

/// Why a configuration was refused. Every message is one sentence that names the
/// value, where it is, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// TOML syntax, an unknown key, a missing key or a wrong type.
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    /// A value that parsed but makes no sense; the message carries the details.
    #[error("{0}")]
    Invalid(String),
}

// Raw TOML shapes. Strings, not parsed types, so the messages are ours.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    instance: String,
    uplink: String,
    ingress: Option<String>,
    tc_attach: Option<String>,
    fast_path: Option<toml::Value>,
    bridge: RawBridge,
    #[serde(default)]
    container: Vec<RawContainer>,
    masquerade: Option<RawMasquerade>,
    #[serde(default)]
    publish: Vec<RawPublish>,
    conntrack: Option<RawConntrack>,
    host_local: Option<RawHostLocal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostLocal {
    cgroup: String,
}

/// Any TOML value, so a negative, huge or mistyped value (`capacity = "x"`) gets our
/// message, with the key and the allowed range, rather than serde's "expected i64".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConntrack {
    capacity: Option<toml::Value>,
    gc_interval: Option<toml::Value>,
    tcp_established: Option<toml::Value>,
    /// Both SYN states at once; `tcp_syn_sent` and `tcp_syn_recv` override it.
    tcp_syn: Option<toml::Value>,
    /// Every closing state at once; the per-state keys override it.
    tcp_closing: Option<toml::Value>,
    tcp_syn_sent: Option<toml::Value>,
    tcp_syn_recv: Option<toml::Value>,
    tcp_fin_wait: Option<toml::Value>,
    tcp_close_wait: Option<toml::Value>,
    tcp_last_ack: Option<toml::Value>,
    tcp_time_wait: Option<toml::Value>,
    tcp_close: Option<toml::Value>,
    udp: Option<toml::Value>,
    icmp: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    name: String,
    address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    netns: String,
    address: String,
    veth: Option<String>,
    peer: Option<String>,
    host_address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMasquerade {
    subnet: String,
    ports: Option<String>,
    /// Any TOML value, so a mistyped one gets our message with the key.
    allow_direct_routing: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    spec: String,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text, Some(path))
    }

    /// Parses and validates a config held in memory.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, None)
    }

    fn parse(text: &str, source: Option<&Path>) -> Result<Config, ConfigError> {
        let origin = origin(source);
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            message: toml_message(text, &e),
            origin: origin.clone(),
        })?;
        let in_file = |msg: String| ConfigError::Invalid(format!("{origin}: {msg}"));

        let ingress = match raw.ingress.as_deref() {
            None => IngressMode::default(),
            Some(s) => s.parse().map_err(|_| {
                in_file(format!(
                    "ingress mode \"{s}\" (ingress) is unknown; use \"tc\" or \"xdp\""
                ))
            })?,
        };
        let tc_attach = match raw.tc_attach.as_deref() {
            None => TcAttachMode::default(),
            Some(s) => s.parse().map_err(in_file)?,
        };
        let fast_path = match &raw.fast_path {
            None => true,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                return Err(in_file(format!(
                    "fast path {other} (fast_path): not a boolean; write true (the default: \
                     translated packets go straight between the uplink and the containers) \
                     or false (they cross the bridge and the host's routing)"
                )));
            }
        };
        let bridge = BridgeConfig {
            address: parse_net(&raw.bridge.address, "bridge address", "bridge.address")
                .map_err(in_file)?,
            name: raw.bridge.name,
        };
        let mut containers = Vec::with_capacity(raw.container.len());
        for (i, c) in raw.container.into_iter().enumerate() {
            let address = parse_net(
                &c.address,
                "container address",
                &format!("container[{i}].address"),
            )
            .map_err(in_file)?;
            let host_address = c
                .host_address
                .as_deref()
                .map(|a| parse_addr(a, "host address", &format!("container[{i}].host_address")))
                .transpose()
                .map_err(in_file)?;
            containers.push(ContainerConfig {
                veth: c.veth.unwrap_or_else(|| default_veth(&c.netns)),
                peer: c.peer.unwrap_or_else(|| DEFAULT_PEER.to_owned()),
                netns: c.netns,
                address,
                host_address,
            });
        }
        let masquerade = match raw.masquerade {
            None => None,
            Some(m) => Some(MasqueradeConfig {
                // Host bits in a subnet ("172.16.0.5/24") are unambiguous: drop them.
                subnet: parse_net(&m.subnet, "masquerade subnet", "masquerade.subnet")
                    .map_err(in_file)?
                    .trunc(),
                ports: match m.ports.as_deref() {
                    None => DEFAULT_SNAT_PORTS,
                    Some(p) => parse_port_range(p).map_err(in_file)?,
                },
                allow_direct_routing: match &m.allow_direct_routing {
                    None => false,
                    Some(toml::Value::Boolean(b)) => *b,
                    Some(other) => {
                        return Err(in_file(format!(
                            "allow direct routing {other} (masquerade.allow_direct_routing): \
                             not a boolean; write true (routed peers reach the containers) or \
                             false (the default: only flows and published ports do)"
                        )));
                    }
                },
            }),
        };
        let mut publish = Vec::with_capacity(raw.publish.len());
        for (i, p) in raw.publish.iter().enumerate() {
            let spec: PublishSpec =
                p.spec
                    .parse()
                    .map_err(|e: crate::publish::PublishSpecError| {
                        in_file(format!(
                            "publish spec \"{}\" (publish[{i}]): {}",
                            p.spec, e.reason
                        ))
                    })?;
            publish.push(spec);
        }

        let conntrack = match raw.conntrack {
            None => ConntrackConfig::default(),
            Some(c) => parse_conntrack(&c).map_err(in_file)?,
        };

        let host_local = raw
            .host_local
            .map(|h| {
                parse_cgroup(&h.cgroup, "host_local.cgroup")
                    .map(|cgroup| HostLocalConfig { cgroup })
            })
            .transpose()
            .map_err(in_file)?;

        let config = Config {
            instance: raw.instance,
            uplink: raw.uplink,
            ingress,
            tc_attach,
            fast_path,
            bridge,
            containers,
            masquerade,
            publish,
            conntrack,
            host_local,
            source: source.map(Path::to_owned),
        };
        config.validate()?;
        Ok(config)
    }

    /// The cross-field checks. Returns the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|msg| {
            ConfigError::Invalid(format!("{}: {msg}", origin(self.source.as_deref())))
        })
    }

    fn check(&self) -> Result<(), String> {
        check_instance(&self.instance)?;

        // Host-namespace interface names: each must be valid and unique.
        let mut ifnames: HashMap<String, String> = HashMap::new();
        let mut claim = |name: &str, key: String| -> Result<(), String> {
            check_ifname(name, &key)?;
            if let Some(prev) = ifnames.insert(name.to_owned(), key.clone()) {
                return Err(format!(
                    "interface name \"{name}\" ({key}) is already used by {prev}; \
                     give each interface of the host namespace its own name"
                ));
            }
            Ok(())
        };
        claim(&self.uplink, "uplink".into())?;
        claim(&self.bridge.name, "bridge.name".into())?;
        for (i, c) in self.containers.iter().enumerate() {
            claim(&c.veth, format!("container[{i}].veth"))?;
        }

        let bridge_net = self.bridge.address.trunc();
        check_host_in_net(&self.bridge.address, "bridge address", "bridge.address")?;
        let len = self.bridge.address.prefix_len();
        if !(BRIDGE_PREFIX_MIN..=BRIDGE_PREFIX_MAX).contains(&len) {
            return Err(format!(
                "bridge address \"{}\" (bridge.address): a /{len} network {}; \
                 use a prefix from /{BRIDGE_PREFIX_MIN} to /{BRIDGE_PREFIX_MAX}, like \"172.16.0.100/24\"",
                self.bridge.address,
                if len < BRIDGE_PREFIX_MIN {
                    "claims much of the Internet as on-link"
                } else {
                    "has no room for a container next to the bridge"
                }
            ));
        }

        let mut netns: HashMap<&str, usize> = HashMap::new();
        // Every address a host or container owns; none may repeat.
        let mut owners: HashMap<Ipv4Addr, String> = HashMap::new();
        owners.insert(self.bridge.address.addr(), "bridge.address".into());
        let mut own = |addr: Ipv4Addr, key: String| -> Result<(), String> {
            if let Some(prev) = owners.insert(addr, key.clone()) {
                return Err(format!(
                    "address {addr} ({key}) is already used by {prev}; give each one its own address"
                ));
            }
            Ok(())
        };
        for (i, c) in self.containers.iter().enumerate() {
            check_netns(&c.netns, &format!("container[{i}].netns"))?;
            if let Some(prev) = netns.insert(&c.netns, i) {
                return Err(format!(
                    "network namespace \"{}\" (container[{i}].netns) is already used by container[{prev}]; \
                     give each container its own namespace",
                    c.netns
                ));
            }
            check_ifname(&c.peer, &format!("container[{i}].peer"))?;
            let key = format!("container[{i}].address");
            match c.host_address {
                None => {
                    if bridge_net.contains(&c.address.addr())
                        && c.address.prefix_len() != bridge_net.prefix_len()
                    {
                        return Err(format!(
                            "container address \"{}\" ({key}) has prefix /{} but the bridge's network {bridge_net} is /{}; \
                             write \"{}/{}\"",
                            c.address,
                            c.address.prefix_len(),
                            bridge_net.prefix_len(),
                            c.address.addr(),
                            bridge_net.prefix_len()
                        ));
                    }
                    if !bridge_net.contains(&c.address.addr()) {
                        return Err(format!(
                            "container address \"{}\" ({key}) is outside the bridge's network {bridge_net}; \
                             use an address in {bridge_net}, or set host_address for a point-to-point link",
                            c.address
                        ));
                    }
                    check_host_in_net(&c.address, "container address", &key)?;
                }
                Some(host) => {
                    if host == c.address.addr() {
                        return Err(format!(
                            "host address {host} (container[{i}].host_address) equals the container's own address; \
                             give the host end a different address"
                        ));
                    }
                    check_unicast(
                        host,
                        "host address",
                        &format!("container[{i}].host_address"),
                    )?;
                    check_unicast(c.address.addr(), "container address", &key)?;
                    own(host, format!("container[{i}].host_address"))?;
                }
            }
            own(c.address.addr(), key)?;
        }

        if let Some(m) = &self.masquerade {
            if m.subnet.prefix_len() < BRIDGE_PREFIX_MIN {
                return Err(format!(
                    "masquerade subnet \"{}\" (masquerade.subnet): a /{} masquerades far more than \
                     containers (the host's own traffic too); give the containers' subnet, like \"{bridge_net}\"",
                    m.subnet,
                    m.subnet.prefix_len()
                ));
            }
            let (lo, hi) = (*m.ports.start(), *m.ports.end());
            if lo == 0 || lo > hi {
                return Err(format!(
                    "masquerade ports \"{lo}-{hi}\" (masquerade.ports): {}; use a range like \"61000-65535\"",
                    if lo == 0 {
                        "port 0 is not a port"
                    } else {
                        "the range is inverted"
                    }
                ));
            }
        }

        // The rules `publish add` applies too (crate::publish); the host IPs are
        // checked against the host's addresses by `up` (instance::address_problems).
        let containers: Vec<Ipv4Addr> = self.containers.iter().map(|c| c.address.addr()).collect();
        // The host's addresses this config gives it; `up` checks the namespace's.
        let host: Vec<Ipv4Addr> = std::iter::once(self.bridge.address.addr())
            .chain(self.containers.iter().filter_map(|c| c.host_address))
            .collect();
        let backends = AllowedBackends {
            subnet: self.masquerade.as_ref().map(|m| m.subnet),
            containers: Some(&containers),
            host: &host,
        };
        let mut published = PortMappings::default();
        for (i, p) in self.publish.iter().enumerate() {
            let refused = |why: String| format!("publish spec \"{p}\" (publish[{i}]): {why}");
            backends.check(p).map_err(refused)?;
            published.add(p).map_err(|clash| {
                refused(match clash {
                    // Name the earlier publish as the file has it.
                    PortClash::Taken { port, protocol, by } => {
                        match self.publish.iter().position(|q| q.entries().any(|e| e == by)) {
                            Some(j) => format!(
                                "host port {port}/{protocol} is already published by \"{}\" (publish[{j}]); pick another host port",
                                self.publish[j]
                            ),
                            None => format!("{clash}; pick another host port"),
                        }
                    }
                    PortClash::Full { .. } => clash.to_string(),
                })
            })?;
        }
        Ok(())
    }

    /// `/sys/fs/bpf/netfast/<instance>`.
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(PIN_ROOT).join(&self.instance)
    }

    /// Every PUBLISHED_PORTS entry of every publish spec.
    pub fn publish_entries(&self) -> impl Iterator<Item = (PublishKey, Backend)> + '_ {
        self.publish.iter().flat_map(PublishSpec::entries)
    }
}

fn origin(source: Option<&Path>) -> String {
    source.map_or_else(|| "config".to_owned(), |p| p.display().to_string())
}

/// One line, `line L, column C: message`, instead of toml's multi-line snippet.
///
/// serde's messages about a key (a wrong type, an unknown key, a missing key) name
/// the field but not where it sits, and a wrong type names no key at all ("invalid
/// type: integer `5`, expected a string"). So the key is found again in the document
/// by the error's position, and the message names it by its whole path
/// (`host_local.cgroup`, `container[1].veth`), with what goes there and an example.
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let serde_msg = e.message().trim().replace('\n', " ");
    let msg = e
        .span()
        .and_then(|span| keyed_message(text, &serde_msg, span.start))
        .or_else(|| top_level_message(&serde_msg))
        .unwrap_or_else(|| {
            let mut msg = serde_msg.clone();
            if msg.starts_with("unknown field") {
                msg.push_str("; remove the key or fix its spelling");
            } else if msg.starts_with("missing field") {
                msg.push_str("; add it");
            }
            msg
        });
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

/// The field serde's message is about: `unknown field `x`` and `missing field `x``.
fn quoted_field<'a>(serde_msg: &'a str, prefix: &str) -> Option<&'a str> {
    serde_msg.strip_prefix(prefix)?.split('`').next()
}

/// [`toml_message`] for an error at byte `at` of `text`, when a key is there.
fn keyed_message(text: &str, serde_msg: &str, at: usize) -> Option<String> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let (path, value, on_key) = key_at(doc.get_ref(), at, "")?;
    if serde_msg.starts_with("invalid type:") && !on_key {
        let snippet = text
            .get(value.span())
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        let snippet = if snippet.chars().count() > 40 {
            format!("{}...", snippet.chars().take(37).collect::<String>())
        } else {
            snippet
        };
        let actual = value.get_ref().type_str();
        let (expected, fix) = match key_expectation(&path) {
            Some((expected, example)) => (expected.to_owned(), format!("write {example}")),
            // serde's own words for what goes there ("expected a string").
            None => (
                serde_msg
                    .rsplit_once("expected ")
                    .map_or("another type", |(_, e)| e)
                    .to_owned(),
                "see the Configuration section of the README".to_owned(),
            ),
        };
        return Some(format!(
            "{path} = {snippet} is {} {actual}, not {expected}; {fix}",
            article(actual)
        ));
    }
    if let Some(field) = quoted_field(serde_msg, "unknown field `") {
        let key = join_key(&path_parent(&path), field);
        let expected = serde_msg
            .split_once(", expected ")
            .map(|(_, e)| format!(", expected {e}"))
            .unwrap_or_default();
        return Some(format!(
            "unknown key `{key}`{expected}; remove the key or fix its spelling"
        ));
    }
    if let Some(field) = quoted_field(serde_msg, "missing field `") {
        // The error points at the table's header: the key is missing from it.
        return Some(missing_key(&join_key(&path, field)));
    }
    None
}

/// [`toml_message`] for an error with no position: a key missing at the top level.
fn top_level_message(serde_msg: &str) -> Option<String> {
    quoted_field(serde_msg, "missing field `").map(missing_key)
}

fn missing_key(key: &str) -> String {
    match key_expectation(key) {
        Some((_, example)) => format!("missing key `{key}`; add it, like {example}"),
        None => format!("missing key `{key}`; add it"),
    }
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `container[1]` of `container[1].veth`, `` of `uplink`.
fn path_parent(path: &str) -> String {
    path.rsplit_once('.')
        .map_or_else(String::new, |(parent, _)| parent.to_owned())
}

/// The key whose value (or, `true` in the result, whose name) covers byte `at`, by
/// its whole path, with its value. A table's own span is its header, so the tables
/// and arrays below are searched first: a hit on a header is the table itself.
fn key_at<'a, 'i>(
    table: &'a toml::de::DeTable<'i>,
    at: usize,
    prefix: &str,
) -> Option<(String, &'a toml::Spanned<toml::de::DeValue<'i>>, bool)> {
    let covers = |span: std::ops::Range<usize>| span.contains(&at) || span.start == at;
    for (key, value) in table {
        let path = join_key(prefix, key.get_ref());
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => {
                if let Some(hit) = key_at(inner, at, &path) {
                    return Some(hit);
                }
            }
            toml::de::DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    if let toml::de::DeValue::Table(inner) = item.get_ref()
                        && let Some(hit) = key_at(inner, at, &item_path)
                    {
                        return Some(hit);
                    }
                    if covers(item.span()) {
                        return Some((item_path, item, false));
                    }
                }
            }
            _ => {}
        }
        if covers(value.span()) {
            return Some((path, value, false));
        }
        if covers(key.span()) {
            return Some((path, value, true));
        }
    }
    None
}

/// What goes at a key of the file, and an example to write there (for a key that
/// is missing or of the wrong type). Keys of `[conntrack]` and `allow_direct_routing`
/// take any TOML value and get their own messages.
fn key_expectation(path: &str) -> Option<(&'static str, String)> {
    // container[3].veth -> container[].veth
    let mut pattern = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                pattern.push('[');
            }
            ']' => {
                in_index = false;
                pattern.push(']');
            }
            _ if in_index => {}
            _ => pattern.push(c),
        }
    }
    let string = |example: &str| Some(("a string", example.to_owned()));
    match pattern.as_str() {
        "instance" => string("instance = \"demo\""),
        "uplink" => string("uplink = \"eth0\""),
        "ingress" => string("ingress = \"tc\" (or \"xdp\")"),
        "tc_attach" => string("tc_attach = \"auto\" (or \"tcx\", \"netlink\")"),
        "bridge" => Some((
            "a table",
            "a [bridge] section with name = \"br0\" and address = \"172.16.0.100/24\"".into(),
        )),
        "bridge.name" => string("name = \"br0\""),
        "bridge.address" => string("address = \"172.16.0.100/24\""),
        "container" => Some((
            "an array of tables",
            "one [[container]] section per container".into(),
        )),
        "container[]" => Some((
            "a table",
            "a [[container]] section with netns = \"netns2\" and address = \"172.16.0.102/24\""
                .into(),
        )),
        "container[].netns" => string("netns = \"netns2\""),
        "container[].address" => string("address = \"172.16.0.102/24\""),
        "container[].veth" => string("veth = \"veth2\""),
        "container[].peer" => string("peer = \"eth0\""),
        "container[].host_address" => string("host_address = \"172.16.0.1\""),
        "masquerade" => Some((
            "a table",
            "a [masquerade] section with subnet = \"172.16.0.0/24\"".into(),
        )),
        "masquerade.subnet" => string("subnet = \"172.16.0.0/24\""),
        "masquerade.ports" => string("ports = \"61000-65535\""),
        "publish" => Some((
            "an array of tables",
            "one [[publish]] section per published port".into(),
        )),
        "publish[]" => Some((
            "a table",
            "a [[publish]] section with spec = \"8088:172.16.0.102:80/tcp\"".into(),
        )),
        "publish[].spec" => string("spec = \"8088:172.16.0.102:80/tcp\""),
        "conntrack" => Some((
            "a table",
            "a [conntrack] section, such as capacity = 262144".into(),
        )),
        "host_local" => Some((
            "a table",
            "a [host_local] section with cgroup = \"auto\"".into(),
        )),
        "host_local.cgroup" => Some((
            "a string",
            format!(
                "cgroup = \"auto\" (the root of the cgroup2 mount), or a path in quotes: {}",
                cgroup_path_hint(cgroup_example().as_deref())
            ),
        )),
        _ => None,
    }
}

/// A `[host_local] cgroup` path to offer in messages: `netfast` under this machine's
/// cgroup2 mount (`/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` in
/// hybrid mode), read from `/proc/mounts`, never guessed. None without cgroup2.
fn cgroup_example() -> Option<String> {
    cgroup_example_under(cgroup::cgroup2_mount().ok().as_deref())
}

fn cgroup_example_under(mount: Option<&Path>) -> Option<String> {
    mount.map(|m| m.join("netfast").display().to_string())
}

/// What a `[host_local] cgroup` path must be, with [`cgroup_example`].
fn cgroup_path_hint(example: Option<&str>) -> String {
    match example {
        Some(e) => format!("a cgroup2 directory such as \"{e}\""),
        None => "the absolute path of a cgroup2 directory (no cgroup2 is mounted here: \
                 /proc/mounts lists none)"
            .to_owned(),
    }
}

/// Short, unique-enough host-side veth name: `vh-<netns>` when it fits, else a
/// readable prefix plus a hash of the whole name so long prefixes don't collide.
pub fn default_veth(netns: &str) -> String {
    let plain = format!("vh-{netns}");
    if plain.len() <= IFNAME_MAX && check_ifname(&plain, "").is_ok() {
        return plain;
    }
    // FNV-1a: stable across runs and Rust versions, unlike DefaultHasher.
    let hash = netns.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let head: String = netns
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(4)
        .collect();
    format!("vh{head}-{:08x}", hash)
        .chars()
        .take(IFNAME_MAX)
        .collect()
}

/// The instance-name rule of the pins ([`crate::bpf::pins::instance_name_problem`]),
/// with the key named.
fn check_instance(name: &str) -> Result<(), String> {
    match instance_name_problem(name) {
        None => Ok(()),
        Some(why) => Err(format!(
            "instance name \"{name}\" (instance): {why}; {INSTANCE_NAME_FIX}"
        )),
    }
}

/// The kernel's dev_valid_name(), which rtnetlink enforces.
fn check_ifname(name: &str, key: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        Some("is empty".to_owned())
    } else if name.len() > IFNAME_MAX {
        Some(format!(
            "is {} bytes long, the kernel allows at most {IFNAME_MAX}",
            name.len()
        ))
    } else if name == "." || name == ".." {
        Some("is reserved".to_owned())
    } else {
        name.chars()
            .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
            .map(|c| format!("contains {c:?}, which the kernel refuses"))
    };
    match why {
        Some(why) => Err(format!(
            "interface name \"{name}\" ({key}) {why}; pick a name of 1 to {IFNAME_MAX} characters \
             without '/', ':' or spaces"
        )),
        None => Ok(()),
    }
}

/// A namespace name becomes a file under /run/netns.
fn check_netns(name: &str, key: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        Some("is empty".to_owned())
    } else if name.len() > 64 {
        Some(format!("is {} bytes long", name.len()))
    } else if name == "." || name == ".." {
        Some("is reserved".to_owned())
    } else {
        name.chars()
            .find(|c| *c == '/' || c.is_whitespace() || c.is_control())
            .map(|c| format!("contains {c:?}"))
    };
    match why {
        Some(why) => Err(format!(
            "network namespace \"{name}\" ({key}) {why}; use 1 to 64 characters without '/' or spaces, like \"netns2\""
        )),
        None => Ok(()),
    }
}

fn parse_net(s: &str, what: &str, key: &str) -> Result<Ipv4Net, String> {
    s.trim().parse().map_err(|_| {
        let hint = if s.parse::<Ipv4Addr>().is_ok() {
            format!("add the prefix length, like \"{s}/24\"")
        } else {
            "write an IPv4 address with its prefix length, like \"172.16.0.100/24\"".to_owned()
        };
        format!("{what} \"{s}\" ({key}) is not an IPv4 address with a prefix length; {hint}")
    })
}

fn parse_addr(s: &str, what: &str, key: &str) -> Result<Ipv4Addr, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "{what} \"{s}\" ({key}) is not an IPv4 address; write one without a prefix length, like \"172.16.0.1\""
        )
    })
}

fn check_unicast(addr: Ipv4Addr, what: &str, key: &str) -> Result<(), String> {
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() || addr.is_loopback() {
        return Err(format!(
            "{what} {addr} ({key}) is not a usable unicast address; pick a private address such as 172.16.0.2"
        ));
    }
    Ok(())
}

/// An interface address may not be its network's own address or its broadcast.
fn check_host_in_net(net: &Ipv4Net, what: &str, key: &str) -> Result<(), String> {
    check_unicast(net.addr(), what, key)?;
    // /31 and /32 have no network or broadcast address (RFC 3021).
    if net.prefix_len() < 31 && (net.addr() == net.network() || net.addr() == net.broadcast()) {
        return Err(format!(
            "{what} \"{net}\" ({key}) is the network's {} address; pick a host address inside {}",
            if net.addr() == net.network() {
                "own"
            } else {
                "broadcast"
            },
            net.trunc()
        ));
    }
    Ok(())
}

/// `[conntrack]` with every value checked to be a whole number.
struct ConntrackInts {
    capacity: Option<i64>,
    gc_interval: Option<i64>,
    tcp_established: Option<i64>,
    tcp_syn: Option<i64>,
    tcp_closing: Option<i64>,
    tcp_syn_sent: Option<i64>,
    tcp_syn_recv: Option<i64>,
    tcp_fin_wait: Option<i64>,
    tcp_close_wait: Option<i64>,
    tcp_last_ack: Option<i64>,
    tcp_time_wait: Option<i64>,
    tcp_close: Option<i64>,
    udp: Option<i64>,
    icmp: Option<i64>,
}

/// The whole number at `conntrack.<key>`; anything else is refused naming the key,
/// the value and `range` (which says what to write).
fn conntrack_int(
    value: &Option<toml::Value>,
    key: &str,
    range: &str,
) -> Result<Option<i64>, String> {
    match value {
        None => Ok(None),
        Some(toml::Value::Integer(n)) => Ok(Some(*n)),
        Some(v) => Err(format!(
            "conntrack {key} {v} (conntrack.{key}): is {} {}, not a whole number; {range}",
            if v.type_str().starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            },
            v.type_str()
        )),
    }
}

impl RawConntrack {
    fn ints(&self) -> Result<ConntrackInts, String> {
        let t = Timeouts::default();
        let secs = |value: &Option<toml::Value>, key: &str, like: Duration| {
            conntrack_int(
                value,
                key,
                &format!(
                    "give whole seconds from 1 to {TIMEOUT_MAX_SECS} (30 days), like {}",
                    like.as_secs()
                ),
            )
        };
        Ok(ConntrackInts {
            capacity: conntrack_int(
                &self.capacity,
                "capacity",
                &format!(
                    "use {CONNTRACK_CAPACITY_MIN} to {CONNTRACK_CAPACITY_MAX} entries (two per flow), \
                     like {CONNTRACK_CAPACITY}"
                ),
            )?,
            gc_interval: secs(&self.gc_interval, "gc_interval", DEFAULT_GC_INTERVAL)?,
            tcp_established: secs(&self.tcp_established, "tcp_established", t.tcp_established)?,
            tcp_syn: secs(&self.tcp_syn, "tcp_syn", t.tcp_syn_sent)?,
            tcp_closing: secs(&self.tcp_closing, "tcp_closing", t.tcp_fin_wait)?,
            tcp_syn_sent: secs(&self.tcp_syn_sent, "tcp_syn_sent", t.tcp_syn_sent)?,
            tcp_syn_recv: secs(&self.tcp_syn_recv, "tcp_syn_recv", t.tcp_syn_recv)?,
            tcp_fin_wait: secs(&self.tcp_fin_wait, "tcp_fin_wait", t.tcp_fin_wait)?,
            tcp_close_wait: secs(&self.tcp_close_wait, "tcp_close_wait", t.tcp_close_wait)?,
            tcp_last_ack: secs(&self.tcp_last_ack, "tcp_last_ack", t.tcp_last_ack)?,
            tcp_time_wait: secs(&self.tcp_time_wait, "tcp_time_wait", t.tcp_time_wait)?,
            tcp_close: secs(&self.tcp_close, "tcp_close", t.tcp_close)?,
            udp: secs(&self.udp, "udp", t.udp)?,
            icmp: secs(&self.icmp, "icmp", t.icmp)?,
        })
    }
}

fn parse_conntrack(raw: &RawConntrack) -> Result<ConntrackConfig, String> {
    let raw = &raw.ints()?;
    let defaults = ConntrackConfig::default();
    let capacity = match raw.capacity {
        None => defaults.capacity,
        Some(n) => {
            let (min, max) = (
                i64::from(CONNTRACK_CAPACITY_MIN),
                i64::from(CONNTRACK_CAPACITY_MAX),
            );
            if !(min..=max).contains(&n) {
                return Err(format!(
                    "conntrack capacity {n} (conntrack.capacity): {}; use {min} to {max} entries \
                     (two per flow), like {CONNTRACK_CAPACITY}",
                    if n < min {
                        "is too small"
                    } else {
                        "is too large"
                    }
                ));
            }
            n as u32
        }
    };
    let seconds = |value: Option<i64>, key: &str, default: Duration| -> Result<Duration, String> {
        match value {
            None => Ok(default),
            Some(n) if n >= 1 && n as u64 <= TIMEOUT_MAX_SECS => Ok(Duration::from_secs(n as u64)),
            Some(n) => Err(format!(
                "conntrack {key} {n} (conntrack.{key}): {}; give whole seconds from 1 to \
                 {TIMEOUT_MAX_SECS} (30 days), like {}",
                if n < 1 {
                    "must be at least 1 second"
                } else {
                    "is longer than 30 days"
                },
                default.as_secs()
            )),
        }
    };
    let t = defaults.timeouts;
    // The group keys of earlier releases set every state of their group; a
    // per-state key wins over its group's. Suggested values are the group's longest.
    let syn = seconds(raw.tcp_syn, "tcp_syn", t.tcp_syn_sent)?;
    let closing = seconds(raw.tcp_closing, "tcp_closing", t.tcp_fin_wait)?;
    let state = |value, key, group: Option<i64>, group_value: Duration, default: Duration| {
        let fallback = if group.is_some() {
            group_value
        } else {
            default
        };
        seconds(value, key, fallback)
    };
    Ok(ConntrackConfig {
        capacity,
        gc_interval: seconds(raw.gc_interval, "gc_interval", defaults.gc_interval)?,
        timeouts: Timeouts {
            tcp_syn_sent: state(
                raw.tcp_syn_sent,
                "tcp_syn_sent",
                raw.tcp_syn,
                syn,
                t.tcp_syn_sent,
            )?,
            tcp_syn_recv: state(
                raw.tcp_syn_recv,
                "tcp_syn_recv",
                raw.tcp_syn,
                syn,
                t.tcp_syn_recv,
            )?,
            tcp_established: seconds(raw.tcp_established, "tcp_established", t.tcp_established)?,
            tcp_fin_wait: state(
                raw.tcp_fin_wait,
                "tcp_fin_wait",
                raw.tcp_closing,
                closing,
                t.tcp_fin_wait,
            )?,
            tcp_close_wait: state(
                raw.tcp_close_wait,
                "tcp_close_wait",
                raw.tcp_closing,
                closing,
                t.tcp_close_wait,
            )?,
            tcp_last_ack: state(
                raw.tcp_last_ack,
                "tcp_last_ack",
                raw.tcp_closing,
                closing,
                t.tcp_last_ack,
            )?,
            tcp_time_wait: state(
                raw.tcp_time_wait,
                "tcp_time_wait",
                raw.tcp_closing,
                closing,
                t.tcp_time_wait,
            )?,
            tcp_close: state(
                raw.tcp_close,
                "tcp_close",
                raw.tcp_closing,
                closing,
                t.tcp_close,
            )?,
            udp: seconds(raw.udp, "udp", t.udp)?,
            icmp: seconds(raw.icmp, "icmp", t.icmp)?,
        },
    })
}

/// `[host_local] cgroup` (or netfast-cni's `hostLocal.cgroup`, named by `key`):
/// `"auto"` or an absolute path. Whether the path is a cgroup2 directory is `up`'s
/// to check, on the machine. Err is one sentence naming the value, `key` and the fix.
pub fn parse_cgroup(text: &str, key: &str) -> Result<CgroupSetting, String> {
    if text == "auto" {
        return Ok(CgroupSetting::Auto);
    }
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!(
            "host-local cgroup \"{text}\" ({key}): not an absolute path; give {}, \
             or \"auto\" for the root of the cgroup2 mount",
            cgroup_path_hint(cgroup_example().as_deref())
        ));
    }
    Ok(CgroupSetting::Path(path.to_path_buf()))
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = |why: &str| {
        format!(
            "masquerade ports \"{s}\" (masquerade.ports): {why}; use a range like \"61000-65535\" \
             outside the host's ip_local_port_range"
        )
    };
    let port = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u32>() {
            Ok(0) => Err(bad("port 0 is not a port")),
            Ok(n) => u16::try_from(n).map_err(|_| bad(&format!("{n} is above 65535"))),
            Err(_) => Err(bad(&format!("\"{}\" is not a port number", p.trim()))),
        }
    };
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(bad("the range is inverted, write the lower port first"));
    }
    Ok(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Protocol;

    const SEED: &str = r#"
instance = "demo"
uplink = "eth0"
ingress = "tc"
[bridge]
name = "br0"
address = "172.16.0.100/24"
[[container]]
netns = "netns1"
address = "172.16.0.2/24"
veth = "veth1"
peer = "veth1-peer"
host_address = "172.16.0.1"
[[container]]
netns = "netns2"
address = "172.16.0.102/24"
veth = "veth2"
[[container]]
netns = "netns3"
address = "172.16.0.103/24"
[masquerade]
subnet = "172.16.0.0/24"
[[publish]]
spec = "8088:172.16.0.102:80/tcp"
"#;

    #[test]
    fn parses_the_seed() {
        let c = Config::from_toml_str(SEED).unwrap();
        assert_eq!(c.instance, "demo");
        assert_eq!(c.uplink, "eth0");
        assert_eq!(c.ingress, IngressMode::Tc);
        assert_eq!(c.bridge.name, "br0");
        assert_eq!(c.bridge.address.to_string(), "172.16.0.100/24");
        assert_eq!(c.containers.len(), 3);
        assert_eq!(c.containers[0].veth, "veth1");
        assert_eq!(c.containers[0].peer, "veth1-peer");
        assert_eq!(
            c.containers[0].host_address,
            Some(Ipv4Addr::new(172, 16, 0, 1))
        );
        assert!(!c.containers[0].is_bridged());
        assert_eq!(c.containers[1].veth, "veth2");
        assert_eq!(c.containers[1].peer, "eth0");
        assert_eq!(c.containers[2].veth, "vh-netns3");
        assert!(c.containers[2].is_bridged());
        let m = c.masquerade.as_ref().unwrap();
        assert_eq!(m.subnet.to_string(), "172.16.0.0/24");
        assert_eq!(m.ports, 61000..=65535);
        assert_eq!(c.publish.len(), 1);
        assert_eq!(c.publish[0].protocol, Protocol::Tcp);
        assert_eq!(c.publish_entries().count(), 1);
        assert_eq!(c.pin_dir(), Path::new("/sys/fs/bpf/netfast/demo"));
        assert_eq!(c.source, None);
    }

    #[test]
    fn parses_minimal_and_optional_keys() {
        let c = Config::from_toml_str(
            r#"
instance = "x_1-a"
uplink = "up0"
ingress = "xdp"
[bridge]
name = "br-x"
address = "10.9.0.1/16"
[masquerade]
subnet = "10.9.3.4/16"
ports = "40000-40100"
"#,
        )
        .unwrap();
        assert_eq!(c.ingress, IngressMode::Xdp);
        assert!(c.containers.is_empty());
        assert!(c.publish.is_empty());
        let m = c.masquerade.unwrap();
        assert_eq!(m.subnet.to_string(), "10.9.0.0/16", "host bits are dropped");
        assert_eq!(m.ports, 40000..=40100);

        let c = Config::from_toml_str(
            "instance = \"a\"\nuplink = \"u\"\n[bridge]\nname = \"b\"\naddress = \"10.0.0.1/24\"\n",
        )
        .unwrap();
        assert_eq!(c.ingress, IngressMode::Tc, "tc is the default");
        assert!(c.masquerade.is_none());
    }

    /// `tc_attach`: "auto" unless set, and each value as written.
    #[test]
    fn tc_attach_defaults_to_auto() {
        let c = Config::from_toml_str(SEED).unwrap();
        assert_eq!(c.tc_attach, TcAttachMode::Auto);
        for (text, mode) in [
            ("auto", TcAttachMode::Auto),
            ("tcx", TcAttachMode::Tcx),
            ("netlink", TcAttachMode::Netlink),
        ] {
            let toml = SEED.replace(
                "ingress = \"tc\"",
                &format!("ingress = \"tc\"\ntc_attach = \"{text}\""),
            );
            let c = Config::from_toml_str(&toml).unwrap();
            assert_eq!(c.tc_attach, mode);
            assert_eq!(mode.to_string(), text);
        }
    }

    /// `[masquerade] allow_direct_routing`: false unless set, and what is set.
    #[test]
    fn allow_direct_routing_defaults_to_false() {
        let c = Config::from_toml_str(SEED).unwrap();
        assert!(!c.masquerade.unwrap().allow_direct_routing);
        for allow in [true, false] {
            let text = SEED.replace(
                "subnet = \"172.16.0.0/24\"",
                &format!("subnet = \"172.16.0.0/24\"\nallow_direct_routing = {allow}"),
            );
            let c = Config::from_toml_str(&text).unwrap();
            assert_eq!(c.masquerade.unwrap().allow_direct_routing, allow);
        }
    }

    #[test]
    fn backend_may_be_a_container_without_masquerade() {
        let text = SEED.replace("[masquerade]\nsubnet = \"172.16.0.0/24\"\n", "");
        let c = Config::from_toml_str(&text).unwrap();
        assert!(c.masquerade.is_none());
    }

    #[test]
    fn default_veth_names_fit_and_differ() {
        assert_eq!(default_veth("netns2"), "vh-netns2");
        let a = default_veth("nft-test-12345-netns2");
        let b = default_veth("nft-test-12345-netns3");
        assert!(a.len() <= IFNAME_MAX && b.len() <= IFNAME_MAX, "{a} {b}");
        assert_ne!(a, b);
        assert!(check_ifname(&a, "").is_ok(), "{a}");
        assert!(check_ifname(&default_veth("a b/c:d"), "").is_ok());
    }

    /// Replace `from` by `to` in the seed; the result must be refused with a message
    /// containing every needle.
    #[test]
    fn refuses_bad_values_naming_them() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &[&str])] = &[
            ("instance = \"demo\"", "instance = \"de/mo\"", &["\"de/mo\"", "(instance)", "'/'", "like \"demo\""]),
            ("instance = \"demo\"", "instance = \"\"", &["(instance)", "is empty"]),
            ("instance = \"demo\"", "instance = \"-demo\"", &["\"-demo\"", "start with a letter"]),
            ("instance = \"demo\"", "instance = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", &["33 bytes"]),
            ("uplink = \"eth0\"", "uplink = \"an-interface-name-too-long\"", &["\"an-interface-name-too-long\"", "(uplink)", "at most 15"]),
            ("uplink = \"eth0\"", "uplink = \"eth 0\"", &["\"eth 0\"", "(uplink)", "' '"]),
            ("uplink = \"eth0\"", "uplink = \"br0\"", &["\"br0\"", "(bridge.name)", "already used by uplink"]),
            ("veth = \"veth2\"", "veth = \"veth1\"", &["\"veth1\"", "(container[1].veth)", "container[0].veth"]),
            ("veth = \"veth2\"", "veth = \"a/b\"", &["\"a/b\"", "container[1].veth", "'/'"]),
            ("peer = \"veth1-peer\"", "peer = \"peer-name-is-too-long\"", &["container[0].peer", "at most 15"]),
            ("ingress = \"tc\"", "ingress = \"ebpf\"", &["\"ebpf\"", "(ingress)", "\"tc\" or \"xdp\""]),
            ("ingress = \"tc\"", "ingress = \"tc\"\ntc_attach = \"legacy\"", &["tc attach mode \"legacy\" (tc_attach) is unknown", "use \"auto\"", "\"tcx\" or \"netlink\""]),
            ("ingress = \"tc\"", "ingress = \"tc\"\ntc_attach = 1", &["tc_attach = 1 is an integer, not a string", "write tc_attach = \"auto\" (or \"tcx\", \"netlink\")"]),
            ("address = \"172.16.0.100/24\"", "address = \"172.16.0.100\"", &["\"172.16.0.100\"", "bridge.address", "\"172.16.0.100/24\""]),
            ("address = \"172.16.0.100/24\"", "address = \"br0\"", &["\"br0\"", "bridge.address"]),
            ("address = \"172.16.0.100/24\"", "address = \"172.16.0.0/24\"", &["bridge.address", "network's own address"]),
            ("address = \"172.16.0.102/24\"", "address = \"172.16.1.102/24\"", &["\"172.16.1.102/24\"", "container[1].address", "outside the bridge's network 172.16.0.0/24"]),
            ("address = \"172.16.0.102/24\"", "address = \"172.16.0.102/16\"", &["\"172.16.0.102/16\"", "prefix /16", "write \"172.16.0.102/24\""]),
            ("address = \"172.16.0.102/24\"", "address = \"172.16.0.255/24\"", &["container[1].address", "broadcast"]),
            ("address = \"172.16.0.103/24\"", "address = \"172.16.0.102/24\"", &["172.16.0.102", "container[2].address", "already used by container[1].address"]),
            ("address = \"172.16.0.103/24\"", "address = \"172.16.0.100/24\"", &["172.16.0.100", "already used by bridge.address"]),
            ("host_address = \"172.16.0.1\"", "host_address = \"172.16.0.2\"", &["172.16.0.2", "container[0].host_address", "equals"]),
            ("host_address = \"172.16.0.1\"", "host_address = \"172.16.0.1/24\"", &["\"172.16.0.1/24\"", "container[0].host_address", "without a prefix"]),
            ("host_address = \"172.16.0.1\"", "host_address = \"172.16.0.102\"", &["172.16.0.102", "container[1].address", "already used by container[0].host_address"]),
            ("netns = \"netns3\"", "netns = \"netns2\"", &["\"netns2\"", "container[2].netns", "container[1]"]),
            ("netns = \"netns3\"", "netns = \"a/b\"", &["\"a/b\"", "container[2].netns"]),
            ("subnet = \"172.16.0.0/24\"", "subnet = \"172.16.0.0\"", &["masquerade.subnet", "/24"]),
            ("subnet = \"172.16.0.0/24\"", "subnet = \"0.0.0.0/0\"", &["masquerade subnet \"0.0.0.0/0\" (masquerade.subnet)", "a /0", "like \"172.16.0.0/24\""]),
            ("subnet = \"172.16.0.0/24\"", "subnet = \"172.0.0.0/7\"", &["\"172.0.0.0/7\"", "a /7"]),
            ("subnet = \"172.16.0.0/24\"", "subnet = \"172.16.0.0/24\"\nallow_direct_routing = \"yes\"", &["allow direct routing \"yes\" (masquerade.allow_direct_routing)", "not a boolean", "write true"]),
            ("subnet = \"172.16.0.0/24\"", "subnet = \"172.16.0.0/24\"\nallow_direct_routing = 1", &["allow direct routing 1 (masquerade.allow_direct_routing)", "not a boolean"]),
            ("address = \"172.16.0.100/24\"", "address = \"172.16.0.100/4\"", &["bridge address \"172.16.0.100/4\" (bridge.address)", "/8 to /30"]),
            ("address = \"172.16.0.100/24\"", "address = \"172.16.0.100/31\"", &["\"172.16.0.100/31\"", "no room for a container"]),
            ("subnet = \"172.16.0.0/24\"", "subnet = \"172.16.0.0/24\"\nports = \"0-100\"", &["\"0-100\"", "masquerade.ports", "port 0"]),
            ("subnet = \"172.16.0.0/24\"", "subnet = \"172.16.0.0/24\"\nports = \"65000-61000\"", &["\"65000-61000\"", "inverted"]),
            ("subnet = \"172.16.0.0/24\"", "subnet = \"172.16.0.0/24\"\nports = \"61000-70000\"", &["70000", "above 65535"]),
            ("subnet = \"172.16.0.0/24\"", "subnet = \"172.16.0.0/24\"\nports = \"high\"", &["\"high\"", "not a port"]),
            ("spec = \"8088:172.16.0.102:80/tcp\"", "spec = \"8088:172.16.9.9:80\"", &["publish spec \"8088:172.16.9.9:80/tcp\" (publish[0]): backend 172.16.9.9 is outside masquerade subnet 172.16.0.0/24; use a container address"]),
            ("spec = \"8088:172.16.0.102:80/tcp\"", "spec = \"8088:172.16.0.102:0\"", &["publish spec \"8088:172.16.0.102:0\" (publish[0])", "container port 0"]),
            ("spec = \"8088:172.16.0.102:80/tcp\"", "spec = \"8088:172.16.0.102:80/tcp\"\n[[publish]]\nspec = \"8088:172.16.0.103:81\"", &["\"8088:172.16.0.103:81/tcp\" (publish[1])", "host port 8088/tcp", "publish[0]", "pick another host port"]),
            ("spec = \"8088:172.16.0.102:80/tcp\"", "spec = \"8080-8090:172.16.0.102:80/tcp\"\n[[publish]]\nspec = \"8090-8095:172.16.0.103:80\"", &["publish[1]", "host port 8090/tcp", "\"8080-8090:172.16.0.102:80/tcp\" (publish[0])"]),
            ("spec = \"8088:172.16.0.102:80/tcp\"", "spec = \"1-20000:172.16.0.102:80\"", &["20000 published ports", "16384"]),
            // Unknown keys, wrong types and missing keys come from serde; they must
            // still name the key and the line.
            ("uplink = \"eth0\"", "uplink = \"eth0\"\nuplnk = \"eth1\"", &["config: line 4", "uplnk"]),
            ("veth = \"veth2\"", "veth = \"veth2\"\nmac = \"x\"", &["`container[1].mac`", "line 18"]),
            ("uplink = \"eth0\"", "uplink = 3", &["config: line 3", "string"]),
            ("uplink = \"eth0\"", "", &["missing key `uplink`", "add it, like uplink = \"eth0\""]),
            ("[bridge]", "[bridge\n", &["config: line"]),
        ];
        for (from, to, needles) in cases {
            assert!(SEED.contains(from), "{from:?} not in SEED");
            let text = SEED.replacen(from, to, 1);
            let err = Config::from_toml_str(&text)
                .expect_err(&format!("{to:?} should be refused"))
                .to_string();
            assert!(!err.contains('\n'), "{to:?}: one line please: {err}");
            for n in *needles {
                assert!(err.contains(n), "{to:?}: {err:?} lacks {n:?}");
            }
        }
    }

    /// A value of the wrong type, an unknown key and a missing key, in every section:
    /// serde's message names the field at most, so ours names the key by its whole
    /// path, what goes there and an example, on one line with the position.
    #[test]
    fn type_errors_name_the_key_and_the_fix() {
        let example = cgroup_example().expect("this machine has cgroup2");
        let host_local = format!("{SEED}[host_local]\ncgroup = \"auto\"\n");
        let mut failures = Vec::new();
        #[rustfmt::skip]
        let cases: &[(&str, &str, &[&str])] = &[
            ("cgroup = \"auto\"", "cgroup = 5", &["line 26, column 10", "host_local.cgroup = 5 is an integer, not a string", "write cgroup = \"auto\"", &example]),
            ("cgroup = \"auto\"", "cgroup = true", &["host_local.cgroup = true is a boolean, not a string"]),
            ("cgroup = \"auto\"", "cgroup = [\"/a\", \"/b\"]", &["host_local.cgroup = [\"/a\", \"/b\"] is an array, not a string"]),
            ("cgroup = \"auto\"", "cgroups = \"auto\"", &["unknown key `host_local.cgroups`", "expected `cgroup`", "fix its spelling"]),
            ("cgroup = \"auto\"", "", &["missing key `host_local.cgroup`", "add it, like cgroup = \"auto\""]),
            ("instance = \"demo\"", "instance = 7", &["line 2, column 12", "instance = 7 is an integer, not a string; write instance = \"demo\""]),
            ("instance = \"demo\"", "instance = {x = 1}", &["instance = {x = 1} is a table, not a string"]),
            ("ingress = \"tc\"", "ingress = 1.5", &["ingress = 1.5 is a float, not a string", "\"xdp\""]),
            ("name = \"br0\"", "name = 0", &["bridge.name = 0 is an integer", "write name = \"br0\""]),
            ("address = \"172.16.0.100/24\"", "address = 172", &["bridge.address = 172 is an integer", "address = \"172.16.0.100/24\""]),
            ("veth = \"veth2\"", "veth = 2", &["container[1].veth = 2 is an integer, not a string; write veth = \"veth2\""]),
            ("host_address = \"172.16.0.1\"", "host_address = 1", &["container[0].host_address = 1 is an integer"]),
            ("netns = \"netns3\"", "netns = false", &["container[2].netns = false is a boolean"]),
            ("peer = \"veth1-peer\"", "peer = 1", &["container[0].peer = 1"]),
            ("address = \"172.16.0.103/24\"", "address = 1979-05-27", &["container[2].address = 1979-05-27 is a datetime"]),
            ("veth = \"veth2\"", "veth = \"veth2\"\nmac = \"x\"", &["unknown key `container[1].mac`", "line 18, column 1"]),
            ("netns = \"netns3\"\n", "", &["missing key `container[2].netns`", "netns = \"netns2\""]),
            ("subnet = \"172.16.0.0/24\"", "subnet = 24", &["masquerade.subnet = 24 is an integer", "subnet = \"172.16.0.0/24\""]),
            ("subnet = \"172.16.0.0/24\"", "subnet = \"172.16.0.0/24\"\nports = 61000", &["masquerade.ports = 61000 is an integer", "ports = \"61000-65535\""]),
            ("spec = \"8088:172.16.0.102:80/tcp\"", "spec = 8088", &["publish[0].spec = 8088 is an integer", "spec = \"8088:172.16.0.102:80/tcp\""]),
            ("[bridge]\nname = \"br0\"\naddress = \"172.16.0.100/24\"", "bridge = {name = 1, address = \"172.16.0.100/24\"}", &["bridge.name = 1 is an integer"]),
            ("uplink = \"eth0\"", "", &["missing key `uplink`", "uplink = \"eth0\""]),
            ("cgroup = \"auto\"", "cgroup = \"auto\"\n[conntrack]\nudp = [1]", &["(conntrack.udp)", "is an array"]),
            ("cgroup = \"auto\"", "cgroup = \"auto\"\n[conntrack]\nudp = 1\nudp_x = 2", &["unknown key `conntrack.udp_x`"]),
        ];
        for (from, to, needles) in cases {
            assert!(host_local.contains(from), "{from:?} not in the config");
            let text = host_local.replacen(from, to, 1);
            let err = Config::from_toml_str(&text)
                .expect_err(&format!("{to:?} should be refused"))
                .to_string();
            assert!(!err.contains('\n'), "{to:?}: one line please: {err}");
            assert!(!err.contains("Raw"), "{to:?}: our struct names leak: {err}");
            for n in *needles {
                if !err.contains(n) {
                    failures.push(format!("{to:?}: {err:?} lacks {n:?}"));
                }
            }
        }
        // A section given as a top-level value: the section goes, the key comes first.
        #[rustfmt::skip]
        let moved: &[(&str, &str, &[&str])] = &[
            ("[host_local]\ncgroup = \"auto\"\n", "host_local = \"auto\"", &["line 1, column 14", "host_local = \"auto\" is a string, not a table", "a [host_local] section with cgroup = \"auto\""]),
            ("[[publish]]\nspec = \"8088:172.16.0.102:80/tcp\"\n", "publish = [\"8088:172.16.0.102:80/tcp\"]", &["publish[0] = \"8088:172.16.0.102:80/tcp\" is a string, not a table", "[[publish]] section with spec"]),
            ("[[publish]]\nspec = \"8088:172.16.0.102:80/tcp\"\n", "publish = 8088", &["publish = 8088 is an integer, not an array of tables"]),
            ("[masquerade]\nsubnet = \"172.16.0.0/24\"\n", "masquerade = true", &["masquerade = true is a boolean, not a table"]),
            ("[bridge]\nname = \"br0\"\naddress = \"172.16.0.100/24\"\n", "bridge = \"br0\"", &["bridge = \"br0\" is a string, not a table", "a [bridge] section"]),
            ("", "conntrack = 5", &["conntrack = 5 is an integer, not a table"]),
        ];
        for (section, top, needles) in moved {
            assert!(
                host_local.contains(section),
                "{section:?} not in the config"
            );
            let text = format!("{top}\n{}", host_local.replacen(section, "", 1));
            let err = Config::from_toml_str(&text)
                .expect_err(&format!("{top:?} should be refused"))
                .to_string();
            assert!(!err.contains('\n'), "{top:?}: one line please: {err}");
            for n in *needles {
                if !err.contains(n) {
                    failures.push(format!("{top:?}: {err:?} lacks {n:?}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The path offered for `[host_local] cgroup` is under the cgroup2 mount that
    /// `/proc/mounts` names (hybrid machines: `/sys/fs/cgroup/unified`).
    #[test]
    fn cgroup_hints_use_the_detected_cgroup2_mount() {
        assert_eq!(
            cgroup_example_under(Some(Path::new("/sys/fs/cgroup/unified"))).as_deref(),
            Some("/sys/fs/cgroup/unified/netfast")
        );
        assert_eq!(
            cgroup_example_under(Some(Path::new("/sys/fs/cgroup"))).as_deref(),
            Some("/sys/fs/cgroup/netfast")
        );
        assert!(cgroup_path_hint(None).contains("no cgroup2 is mounted"));
        let mount = cgroup::cgroup2_mount().expect("this machine has cgroup2");
        let err = Config::from_toml_str(&format!("{SEED}[host_local]\ncgroup = \"netfast\"\n"))
            .unwrap_err()
            .to_string();
        let want = format!("such as \"{}\"", mount.join("netfast").display());
        assert!(err.contains(&want), "{err:?} lacks {want:?}");
    }

    #[test]
    fn accepts_non_overlapping_publishes() {
        let text = SEED.replace(
            "spec = \"8088:172.16.0.102:80/tcp\"",
            r#"spec = "8088:172.16.0.102:80/tcp"
[[publish]]
spec = "8088:172.16.0.102:80/udp"
[[publish]]
spec = "8089-8090:172.16.0.103:80"
[[publish]]
spec = "10.0.1.48:9000:172.16.0.103:80"
[[publish]]
spec = "10.0.1.49:9000:172.16.0.103:80"
[[publish]]
spec = "9001:172.16.0.50:80""#,
        );
        let c = Config::from_toml_str(&text).unwrap();
        assert_eq!(c.publish.len(), 6);
        assert_eq!(c.publish_entries().count(), 7);
    }

    #[test]
    fn file_errors_name_the_path() {
        let missing = Path::new("/nonexistent/netfast.toml");
        let err = Config::from_file(missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/netfast.toml"), "{err}");

        let dir = std::env::temp_dir().join(format!("netfast-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, SEED.replace("\"tc\"", "\"tcx\"")).unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        std::fs::write(&path, SEED).unwrap();
        let ok = Config::from_file(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains("\"tcx\""), "{err}");
        assert_eq!(ok.unwrap().source.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn local_port_range_overlap() {
        let m = MasqueradeConfig {
            subnet: "172.16.0.0/24".parse().unwrap(),
            allow_direct_routing: false,
            ports: DEFAULT_SNAT_PORTS,
        };
        assert!(m.check_local_port_range(&(32768..=60999)).is_ok());
        let err = m
            .check_local_port_range(&(32768..=61000))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("61000-65535") && err.contains("32768-61000"),
            "{err}"
        );
        let r = read_local_port_range().unwrap();
        assert!(r.start() <= r.end());
    }

    /// Every timeout in seconds, SYN_SENT to CLOSE, then UDP and ICMP.
    fn all_secs(t: &Timeouts) -> [u64; 10] {
        [
            t.tcp_syn_sent,
            t.tcp_syn_recv,
            t.tcp_established,
            t.tcp_fin_wait,
            t.tcp_close_wait,
            t.tcp_last_ack,
            t.tcp_time_wait,
            t.tcp_close,
            t.udp,
            t.icmp,
        ]
        .map(|d| d.as_secs())
    }

    #[test]
    fn conntrack_defaults_and_overrides() {
        let c = Config::from_toml_str(SEED).unwrap();
        assert_eq!(c.conntrack, ConntrackConfig::default());
        assert_eq!(c.conntrack.capacity, 262_144);
        assert_eq!(c.conntrack.gc_interval, Duration::from_secs(5));
        let t = c.conntrack.timeouts;
        assert_eq!(
            all_secs(&t),
            [120, 60, 432_000, 120, 60, 30, 120, 10, 60, 30]
        );

        let c = Config::from_toml_str(&format!(
            "{SEED}[conntrack]\ncapacity = 4096\ngc_interval = 1\ntcp_established = 300\n\
             tcp_syn = 5\ntcp_closing = 2\nudp = 3\nicmp = 4\n"
        ))
        .unwrap();
        assert_eq!(c.conntrack.capacity, 4096);
        assert_eq!(c.conntrack.gc_interval, Duration::from_secs(1));
        let t = c.conntrack.timeouts;
        assert_eq!(all_secs(&t), [5, 5, 300, 2, 2, 2, 2, 2, 3, 4]);

        // A per-state key wins over its group's.
        let c = Config::from_toml_str(&format!(
            "{SEED}[conntrack]\ntcp_closing = 2\ntcp_close_wait = 70\ntcp_syn_recv = 9\n"
        ))
        .unwrap();
        let t = c.conntrack.timeouts;
        assert_eq!(all_secs(&t), [120, 9, 432_000, 2, 70, 2, 2, 2, 60, 30]);

        // A partial table keeps the other defaults.
        let c = Config::from_toml_str(&format!("{SEED}[conntrack]\nudp = 7\n")).unwrap();
        assert_eq!(c.conntrack.timeouts.udp, Duration::from_secs(7));
        assert_eq!(c.conntrack.timeouts.icmp, Duration::from_secs(30));
        assert_eq!(c.conntrack.capacity, 262_144);
    }

    #[test]
    fn conntrack_refuses_bad_values_naming_the_key() {
        #[rustfmt::skip]
        let cases: &[(&str, &[&str])] = &[
            ("capacity = 100", &["conntrack capacity 100", "(conntrack.capacity)", "too small", "1024 to 4194304", "like 262144"]),
            ("capacity = 99999999", &["(conntrack.capacity)", "too large"]),
            ("capacity = -1", &["(conntrack.capacity)"]),
            ("tcp_established = 0", &["conntrack tcp_established 0", "(conntrack.tcp_established)", "at least 1 second", "like 432000"]),
            ("tcp_syn = -5", &["(conntrack.tcp_syn)", "at least 1 second", "like 120"]),
            ("tcp_closing = 9999999999", &["(conntrack.tcp_closing)", "longer than 30 days", "like 120"]),
            ("tcp_close_wait = 0", &["(conntrack.tcp_close_wait)", "at least 1 second", "like 60"]),
            ("tcp_time_wait = -1", &["(conntrack.tcp_time_wait)", "like 120"]),
            ("udp = 0", &["(conntrack.udp)", "like 60"]),
            ("icmp = 0", &["(conntrack.icmp)", "like 30"]),
            ("gc_interval = 0", &["(conntrack.gc_interval)", "like 5"]),
            ("udp = \"60s\"", &["conntrack udp \"60s\" (conntrack.udp)", "is a string, not a whole number", "1 to 2592000", "like 60"]),
            ("capacity = \"x\"", &["conntrack capacity \"x\" (conntrack.capacity)", "not a whole number", "1024 to 4194304", "like 262144"]),
            ("capacity = 2048.5", &["2048.5", "(conntrack.capacity)", "is a float", "1024 to 4194304"]),
            ("tcp_syn = true", &["(conntrack.tcp_syn)", "is a boolean", "like 120"]),
            ("gc_interval = [1]", &["(conntrack.gc_interval)", "is an array", "like 5"]),
            ("tcp = 5", &["`conntrack.tcp`", "remove the key or fix its spelling"]),
        ];
        for (line, needles) in cases {
            let text = format!("{SEED}[conntrack]\n{line}\n");
            let err = Config::from_toml_str(&text)
                .expect_err(&format!("{line:?} should be refused"))
                .to_string();
            assert!(!err.contains('\n'), "{line:?}: one line please: {err}");
            for n in *needles {
                assert!(err.contains(n), "{line:?}: {err:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn validate_checks_hand_built_configs() {
        let mut c = Config::from_toml_str(SEED).unwrap();
        c.containers[1].veth = "x".repeat(16);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("config: interface name"), "{err}");
    }

    /// `[host_local]`: absent is off; "auto" and absolute paths parse; a relative
    /// path or an unknown key is refused with the key and the fix.
    #[test]
    fn host_local_section() {
        assert_eq!(Config::from_toml_str(SEED).unwrap().host_local, None);
        let with = |body: &str| Config::from_toml_str(&format!("{SEED}\n[host_local]\n{body}\n"));
        assert_eq!(
            with("cgroup = \"auto\"").unwrap().host_local,
            Some(HostLocalConfig {
                cgroup: CgroupSetting::Auto
            })
        );
        assert_eq!(
            with("cgroup = \"/sys/fs/cgroup/unified/netfast\"")
                .unwrap()
                .host_local
                .map(|h| h.cgroup.to_string()),
            Some("/sys/fs/cgroup/unified/netfast".to_owned())
        );
        let err = with("cgroup = \"netfast\"").unwrap_err().to_string();
        assert!(
            err.contains("\"netfast\" (host_local.cgroup): not an absolute path")
                && err.contains("\"auto\""),
            "{err}"
        );
        assert!(with("cgroups = \"auto\"").is_err());
        assert!(with("").is_err(), "cgroup is required in [host_local]");
    }
}
