//! CNI networks as netfast instances: what the `netfast-cni` plugin does for ADD, DEL,
//! CHECK and GC, kept here so the operator CLI reads the same records.
//!
//! A CNI network is one instance (named after the network unless the config says
//! otherwise). There is no netfast-built topology: the interface plugin before
//! netfast-cni in the chain (bridge, ptp) made the bridge and the veths, and netfast
//! only attaches its datapath:
//! - the first ADD attaches and pins the uplink's programs, with the first
//!   container's subnet as the masquerade subnet, and records the instance in
//!   `/run/netfast/<instance>/manifest.json` so `netfast down --instance NAME` removes it;
//! - every ADD writes the container's `ENDPOINTS` entry, attaches
//!   `container_ingress_tc` to its host-side veth and publishes its port mappings, then
//!   writes an owner record `/run/netfast/<instance>/cni/<container id>:<ifname>.json`;
//! - DEL undoes one container's part (mappings, flows, endpoint, link) and keeps the
//!   datapath pinned after the last one, as a daemon-less portmap would;
//! - CHECK compares a record with the maps and pins; GC removes the records (and
//!   state) of attachments the runtime no longer knows.
//!
//! Runtimes call plugins in parallel, so all of it runs under [`crate::lock::cni`],
//! per instance.

use std::{
    io,
    net::Ipv4Addr,
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use netfast_common::{DatapathConfig, Endpoint, names::MAP_ENDPOINTS};
use serde::{Deserialize, Serialize};

use crate::{
    bpf::{
        self, DatapathError, DatapathSpec, EndpointSpec, IngressMode, PinnedError, PinnedInstance,
        loader::HostLocalSpec,
        maps::EndpointsMap,
        pins::{INSTANCE_NAME_FIX, container_link_name, instance_name_problem, pin_dir},
    },
    config::CgroupSetting,
    conntrack::FlowFilter,
    host::{
        cgroup, netlink,
        netns::{self, NetnsError},
        topology::{self, TopologyError},
    },
    instance::{self, Created, InstanceError, Manifest, Owner},
    lock::{self, LockError},
    publish::{Protocol, PublishSpec},
};

/// The manifest's topology key that marks an instance as a CNI network's, with the
/// network's name as its value. `up --config` refuses such an instance (another
/// topology), and ADD refuses an instance made by `up --config`.
pub const TOPOLOGY_KEY: &str = "cni network";

/// The CNI-specific settings of one network (the plugin's keys), resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniNetwork {
    /// The instance (`instance`, default: the network's name).
    pub instance: String,
    /// The CNI network's `name`.
    pub network: String,
    /// `uplink`; None: the interface of the host namespace's default route.
    pub uplink: Option<String>,
    /// `masquerade`: masquerade the container subnet found in prevResult.
    pub masquerade: bool,
    /// `snatPorts`: the masquerade's source ports.
    pub snat_ports: RangeInclusive<u16>,
    /// `conntrack.capacity`: CONNTRACK's entries.
    pub conntrack_capacity: u32,
    /// `fastPath`.
    pub fast_path: bool,
    /// `hostLocal.cgroup`: host-local access for the processes in that cgroup2
    /// directory (`[host_local]` of a config file); None: off.
    pub host_local: Option<CgroupSetting>,
}

/// One `runtimeConfig.portMappings` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// None (absent, "" or 0.0.0.0): every address of the host.
    pub host_ip: Option<Ipv4Addr>,
}

impl PortMapping {
    /// The publish spec that puts this mapping in PUBLISHED_PORTS for `container`.
    pub fn spec(&self, container: Ipv4Addr) -> PublishSpec {
        PublishSpec {
            host_addr: self.host_ip,
            host_ports: self.host_port..=self.host_port,
            backend_addr: container,
            backend_ports: self.container_port..=self.container_port,
            protocol: self.protocol,
        }
    }
}

/// What an ADD learned about one container from the runtime and prevResult.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: the container's namespace path.
    pub netns: String,
    /// `CNI_IFNAME`: the interface inside the container.
    pub ifname: String,
    /// The container's host-side veth (prevResult's interface without `sandbox`
    /// that is not the bridge).
    pub host_veth: String,
    /// The container's address with its prefix (prevResult's IPv4 on the container
    /// interface).
    pub address: Ipv4Net,
    /// The container interface's MAC (prevResult's `mac`), in wire order.
    pub mac: [u8; 6],
    /// prevResult's gateway of that address, if it gives one.
    pub gateway: Option<Ipv4Addr>,
    pub mappings: Vec<PortMapping>,
}

/// The owner record of one attachment: what DEL, CHECK, GC and `publish list` know
/// about a container. `/run/netfast/<instance>/cni/<container id>:<ifname>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub host_veth: String,
    pub address: Ipv4Addr,
    /// The port mappings as publish specs (`8088:10.88.0.2:80/tcp`).
    pub mappings: Vec<String>,
    /// The container's MAC, when ADD gave it a static entry on the bridge port
    /// `host_veth` (DEL removes it). Absent in records of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_fdb_mac: Option<[u8; 6]>,
}

impl ContainerRecord {
    /// The mappings, parsed back. A record netfast wrote always parses; one edited by
    /// hand that does not is reported.
    pub fn specs(&self) -> Result<Vec<PublishSpec>> {
        self.mappings
            .iter()
            .map(|m| {
                m.parse()
                    .map_err(|e: crate::publish::PublishSpecError| CniError::BadRecord {
                        path: PathBuf::from(format!(
                            "the record of container {}",
                            self.container_id
                        )),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The network config or the runtime's input cannot work here; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// A host port another container (or `publish add`) holds; nothing changed.
    #[error("{0}")]
    PortTaken(String),
    /// CHECK found the container's state incomplete.
    #[error("{0}")]
    Missing(String),
    #[error(transparent)]
    Datapath(Box<DatapathError>),
    #[error(transparent)]
    Pinned(Box<PinnedError>),
    #[error(transparent)]
    Instance(Box<InstanceError>),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{action} {}: {error}", path.display())]
    State {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("{} holds something netfast cannot read ({reason}); remove it by hand", path.display())]
    BadRecord { path: PathBuf, reason: String },
}

// Boxed: they are large, and every call returns this error type.
impl From<DatapathError> for CniError {
    fn from(e: DatapathError) -> Self {
        CniError::Datapath(Box::new(e))
    }
}

impl From<PinnedError> for CniError {
    fn from(e: PinnedError) -> Self {
        CniError::Pinned(Box::new(e))
    }
}

impl From<InstanceError> for CniError {
    fn from(e: InstanceError) -> Self {
        CniError::Instance(Box::new(e))
    }
}

type Result<T> = std::result::Result<T, CniError>;

/// What an ADD did, for the plugin's log and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddReport {
    /// This ADD attached the uplink's programs (the instance was not up).
    pub brought_up: bool,
    pub uplink: String,
    pub uplink_addr: Option<Ipv4Addr>,
    /// Attach report lines.
    pub attachments: Vec<String>,
    /// What did not work but does not stop the container, for the runtime's log.
    pub warnings: Vec<String>,
}

/// `/run/netfast/<instance>/cni`.
pub fn records_dir(instance: &str) -> PathBuf {
    instance::state_dir(instance).join("cni")
}

fn record_path(instance: &str, container_id: &str, ifname: &str) -> PathBuf {
    // ':' is in neither: CNI container ids are [A-Za-z0-9_.-], and the kernel refuses
    // it in interface names.
    records_dir(instance).join(format!("{container_id}:{ifname}.json"))
}

/// Refuses an instance name netfast cannot use, naming the key and the fix.
pub fn check_instance_name(name: &str, key: &str) -> Result<()> {
    match instance_name_problem(name) {
        None => Ok(()),
        Some(why) => Err(CniError::Invalid(format!(
            "instance name \"{name}\" ({key}) {why}; {INSTANCE_NAME_FIX}"
        ))),
    }
}

/// Every owner record of `instance`, sorted by container id; none when the instance
/// has no records directory.
pub fn records(instance: &str) -> Result<Vec<ContainerRecord>> {
    let dir = records_dir(instance);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(CniError::State {
                action: "could not list",
                path: dir,
                error,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        if let Some(r) = read_record(&path)? {
            out.push(r);
        }
    }
    out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
    Ok(out)
}

fn read_record(path: &Path) -> Result<Option<ContainerRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(CniError::State {
                action: "could not read",
                path: path.to_owned(),
                error,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| CniError::BadRecord {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

fn write_record(instance: &str, r: &ContainerRecord) -> Result<()> {
    let path = record_path(instance, &r.container_id, &r.ifname);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(r).map_err(|e| CniError::BadRecord {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&tmp, text + "\n").map_err(|error| CniError::State {
        action: "could not write",
        path: tmp.clone(),
        error,
    })?;
    std::fs::rename(&tmp, &path).map_err(|error| CniError::State {
        action: "could not replace",
        path,
        error,
    })
}

fn remove_record(instance: &str, container_id: &str, ifname: &str) -> Result<()> {
    let path = record_path(instance, container_id, ifname);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(CniError::State {
            action: "could not remove",
            path,
            error,
        }),
    }
}

/// Creates the records directory and waits for the instance's CNI lock. A refused
/// first ADD removes the directory it made ([`remove_if_unused`]) while others may
/// wait on it; a turn taken on a directory that is gone is taken again.
fn take_turn(instance: &str) -> Result<lock::DirLock> {
    let dir = records_dir(instance);
    loop {
        std::fs::create_dir_all(&dir).map_err(|error| CniError::State {
            action: "could not create",
            path: dir.clone(),
            error,
        })?;
        let turn = lock::cni(&dir)?;
        if dir.exists() {
            return Ok(turn);
        }
    }
}

/// After a refused ADD: the records and state directories of an instance that is not
/// up, if nothing is in them, so a refusal leaves nothing behind. Called with the turn
/// held; `remove_dir` removes only empty directories, so a record another ADD wrote
/// meanwhile, or a manifest, keeps them.
fn remove_if_unused(instance: &str) {
    if pin_dir(instance).exists() {
        return;
    }
    let _ = std::fs::remove_dir(records_dir(instance));
    let _ = std::fs::remove_dir(instance::state_dir(instance));
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CniError::State {
            action: "could not start a tokio runtime for",
            path: PathBuf::from("netlink"),
            error,
        })
}

/// The interface of the main table's IPv4 default route, if there is one.
async fn default_route_interface(h: &rtnetlink::Handle) -> Result<Option<u32>> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader};
    let msgs: Vec<_> = h
        .route()
        .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|error| TopologyError::Netlink {
            action: "list IPv4 routes".to_owned(),
            error,
        })?;
    for msg in msgs {
        if msg.header.destination_prefix_length != 0
            || msg.header.table != RouteHeader::RT_TABLE_MAIN
        {
            continue;
        }
        for attr in &msg.attributes {
            if let RouteAttribute::Oif(index) = attr {
                return Ok(Some(*index));
            }
        }
    }
    Ok(None)
}

/// The manifest topology of a CNI instance: the network, the uplink and the
/// masquerade subnet the first ADD decided.
fn cni_topology(
    net: &CniNetwork,
    uplink: &str,
    subnet: Option<Ipv4Net>,
    host_local: Option<&Path>,
) -> Vec<(String, String)> {
    vec![
        (TOPOLOGY_KEY.to_owned(), net.network.clone()),
        ("uplink".to_owned(), uplink.to_owned()),
        (
            "masquerade.subnet".to_owned(),
            subnet.map_or_else(|| "none".to_owned(), |s| s.to_string()),
        ),
        (
            HOST_LOCAL_KEY.to_owned(),
            host_local.map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
        ),
    ]
}

/// The topology key of `hostLocal.cgroup` as the first ADD set it ("none": off).
const HOST_LOCAL_KEY: &str = "hostLocal.cgroup";

fn topology_value<'a>(t: &'a [(String, String)], key: &str) -> Option<&'a str> {
    t.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `hostLocal.cgroup` as the first ADD applies it: the cgroup2 directory and the
/// addresses that count as the host (HOST_ADDRS: every IPv4 address of the host
/// namespace now, the bridge's included, as the bridge plugin made it before this
/// plugin runs), with the host namespace's cookie for CONFIG. Err names the key and
/// the fix: a kernel without the cgroup sock_addr hooks, a path that is no cgroup2
/// directory.
async fn host_local_spec(
    setting: &CgroupSetting,
    cgroup: &Path,
    features: &bpf::features::Features,
    host: &rtnetlink::Handle,
) -> Result<(HostLocalSpec, u64)> {
    const KEY: &str = HOST_LOCAL_KEY;
    if !features.sock_addr.on {
        return Err(CniError::Invalid(format!(
            "host-local cgroup \"{setting}\" ({KEY}): host-local access needs the cgroup \
             sock_addr hooks, and {}; remove hostLocal from the network config, or run a \
             kernel that has them (Linux 5.14 or later)",
            features
                .sock_addr
                .why
                .as_deref()
                .unwrap_or("they are missing")
        )));
    }
    let cookie = cgroup::netns_cookie().map_err(|e| {
        CniError::Invalid(format!(
            "host-local cgroup \"{setting}\" ({KEY}): {e}; remove hostLocal from the network \
             config"
        ))
    })?;
    let host_addrs = topology::host_ipv4_addresses(host).await?;
    let addrs = instance::host_addrs(host_addrs.iter().map(|a| (a.local.addr(), a.index)));
    let cgroup = cgroup.to_path_buf();
    Ok((HostLocalSpec { cgroup, addrs }, cookie))
}

/// `hostLocal.cgroup` as a directory: "auto" the cgroup2 mount's root, a path checked
/// to be a cgroup2 directory and made canonical, so that `/a/b/`, `/a/./b` and a
/// symlink to it are the same setting. Err names the key, the value and the fix.
fn resolve_host_local(setting: &CgroupSetting) -> Result<PathBuf> {
    let cgroup = instance::resolve_cgroup(setting, HOST_LOCAL_KEY).map_err(CniError::Invalid)?;
    std::fs::canonicalize(&cgroup).map_err(|e| {
        CniError::Invalid(format!(
            "host-local cgroup \"{setting}\" ({HOST_LOCAL_KEY}): {e}; give the path of an \
             existing cgroup2 directory"
        ))
    })
}

/// Whether `instance`'s host-local programs run for `cgroup` now: their pinned links
/// are on the cgroup that has `cgroup`'s id. The kernel detaches cgroup links when
/// their cgroup is removed, and a directory made again at the same path is another
/// cgroup (another id), so the path alone does not tell. Err (code 7) names the
/// cgroup, what happened and the fix.
fn host_local_in_force(instance: &str, cgroup: &Path) -> Result<()> {
    let links = PinnedInstance::open(instance)?.links()?;
    let on = links.iter().find_map(|l| l.cgroup_id);
    let here = cgroup::cgroup_id(cgroup).ok();
    if on.is_some() && on == here {
        return Ok(());
    }
    let why = match on {
        None => "has no host-local links any more".to_owned(),
        Some(_) => format!(
            "has its host-local programs on a cgroup that is gone (removed since its first \
             ADD; {} is another cgroup now, or none), so they run for no process",
            cgroup.display()
        ),
    };
    Err(CniError::Invalid(format!(
        "{HOST_LOCAL_KEY}: instance \"{instance}\" {why}; take the \
         instance down (`netfast down --instance {instance}`) once no container uses it, and \
         ADD again to attach them to {}",
        cgroup.display()
    )))
}

/// `hostLocal.cgroup` as a topology value says it, for messages.
fn host_local_words(value: &str) -> String {
    match value {
        "none" => "no host-local access".to_owned(),
        cgroup => format!("host-local access on cgroup {cgroup}"),
    }
}

/// True when the manifest's owner marks a CNI instance.
pub fn is_cni_owner(owner: &Owner) -> bool {
    cni_network(owner).is_some()
}

/// The CNI network of an instance a netfast-cni ADD brought up (the manifest's
/// owner); None for any other instance.
pub fn cni_network(owner: &Owner) -> Option<String> {
    topology_value(&owner.topology, TOPOLOGY_KEY).map(str::to_owned)
}

/// Whether `a` and `b` claim the same host port: same protocol and port, and the
/// same host address or either on every address.
fn same_host_port(a: &PublishSpec, b: &PublishSpec) -> Option<u16> {
    if a.protocol != b.protocol {
        return None;
    }
    let addrs_meet = match (a.host_addr, b.host_addr) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    if !addrs_meet {
        return None;
    }
    a.host_ports.clone().find(|p| b.host_ports.contains(p))
}

/// The refusal of `spec` when another container's record claims its host port: one
/// sentence naming the port, the owner (container id, netns, interface) and the fix.
pub fn port_owner_clash(spec: &PublishSpec, others: &[ContainerRecord]) -> Option<String> {
    for r in others {
        for theirs in r.specs().ok()? {
            if let Some(port) = same_host_port(spec, &theirs) {
                return Some(format!(
                    "host port {port}/{} (runtimeConfig.portMappings hostPort {port}) is already \
                     published by container {} (netns {}, interface {}) as \"{theirs}\"; pick \
                     another host port, or remove that container first",
                    spec.protocol, r.container_id, r.netns, r.ifname
                ));
            }
        }
    }
    None
}

/// ADD: brings the instance up if it is not, then adds the container. See the
/// module docs. The calling thread's namespace is the host. A failure leaves no part
/// of this container behind (and no datapath this call attached).
pub fn add(net: &CniNetwork, att: &Attachment) -> Result<AddReport> {
    check_instance_name(&net.instance, "instance")?;
    let _turn = take_turn(&net.instance)?;
    let was_up =
        pin_dir(&net.instance).exists() || instance::load_manifest(&net.instance)?.is_some();
    let rt = runtime()?;
    let host = netlink::netlink_here(rt.handle())?;
    let added = rt.block_on(add_locked(net, att, &host));
    if added.is_err() {
        if !was_up {
            // This ADD brought the instance up (a refused mapping comes after that):
            // a refusal leaves no datapath and no host-local links either. The ADD's
            // own error is what the runtime must see; what this could not remove,
            // `netfast down --instance` names.
            let _ = instance::down_instance(&net.instance);
        }
        remove_if_unused(&net.instance);
    }
    added
}

async fn add_locked(
    net: &CniNetwork,
    att: &Attachment,
    host: &rtnetlink::Handle,
) -> Result<AddReport> {
    let here = netns::current()?;
    let manifest = instance::load_manifest(&net.instance)?;
    let owner = manifest.as_ref().and_then(|m| m.owner.clone());
    if let Some(owner) = &owner {
        if !is_cni_owner(owner) {
            return Err(CniError::Invalid(format!(
                "instance \"{}\" (instance) was brought up with `netfast up --config {}`, not by \
                 this CNI network; set \"instance\" to another name in the network config",
                net.instance,
                owner
                    .config
                    .as_deref()
                    .map_or_else(|| "FILE".to_owned(), |p| p.display().to_string())
            )));
        }
        if !owner.netns.same(&here) {
            return Err(CniError::Invalid(format!(
                "instance \"{}\" (instance) belongs to {}, not to {here}, where this plugin runs; \
                 give each host namespace its own instance name",
                net.instance, owner.netns
            )));
        }
    }

    // The uplink and its address.
    let links = topology::links(host).await?;
    let uplink = match &net.uplink {
        Some(u) => match links.iter().find(|l| &l.name == u) {
            Some(l) => l.clone(),
            None => {
                let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
                return Err(CniError::Invalid(format!(
                    "uplink \"{u}\" (uplink): no such interface in this network namespace; set \
                     uplink to one of: {}",
                    names.join(", ")
                )));
            }
        },
        None => {
            let index = default_route_interface(host).await?;
            match index.and_then(|i| links.iter().find(|l| l.index == i)) {
                Some(l) => l.clone(),
                None => {
                    return Err(CniError::Invalid(
                        "uplink (uplink): this network namespace has no IPv4 default route to \
                         take the uplink from; set \"uplink\" to the interface that leads out"
                            .to_owned(),
                    ));
                }
            }
        }
    };
    let uplink_addr = match topology::ipv4_addresses(host, uplink.index).await?.first() {
        Some(a) => a.local.addr(),
        None => {
            return Err(CniError::Invalid(format!(
                "uplink \"{}\" (uplink) has no IPv4 address, so there is nothing to masquerade \
                 to or publish on; add one, or set \"uplink\" to another interface",
                uplink.name
            )));
        }
    };

    let subnet = att.address.trunc();
    if net.masquerade && subnet.contains(&uplink_addr) {
        return Err(CniError::Invalid(format!(
            "masquerade (masquerade): the container subnet {subnet} contains {uplink_addr}, the \
             uplink {}'s own address, so the host's own traffic would be masqueraded; set \
             \"uplink\" to the interface that leads out, or \"masquerade\": false",
            uplink.name
        )));
    }
    let ephemeral = topology::ip_local_port_range()?;
    let ports = &net.snat_ports;
    if net.masquerade && ports.start() <= ephemeral.end() && ephemeral.start() <= ports.end() {
        return Err(CniError::Invalid(format!(
            "snatPorts \"{}-{}\" (snatPorts): overlap the host's ip_local_port_range {}-{}; pick \
             a range outside it, such as \"61000-65535\", or narrow net.ipv4.ip_local_port_range",
            ports.start(),
            ports.end(),
            ephemeral.start(),
            ephemeral.end()
        )));
    }
    let wanted_subnet = net.masquerade.then_some(subnet);
    let host_local = net
        .host_local
        .as_ref()
        .map(resolve_host_local)
        .transpose()?;
    let topology = cni_topology(net, &uplink.name, wanted_subnet, host_local.as_deref());
    if let Some(owner) = &owner {
        for key in ["uplink", "masquerade.subnet", HOST_LOCAL_KEY] {
            // A manifest from before a key existed had that setting off.
            let (theirs, mine) = (
                topology_value(&owner.topology, key).unwrap_or("none"),
                topology_value(&topology, key).unwrap_or("none"),
            );
            if theirs == mine {
                continue;
            }
            let instance = &net.instance;
            let what = match key {
                "uplink" => format!(
                    "uplink (uplink): instance \"{instance}\" is attached to {theirs}, this ADD \
                     asks for {mine}; set \"uplink\" to {theirs}, or take the instance down \
                     first (`netfast down --instance {instance}`) once no container uses it"
                ),
                HOST_LOCAL_KEY => format!(
                    "hostLocal.cgroup: instance \"{instance}\" has {} (its first ADD decided), \
                     this ADD asks for {}; write the same hostLocal in the network config, or \
                     take the instance down (`netfast down --instance {instance}`) once no \
                     container uses it",
                    host_local_words(theirs),
                    host_local_words(mine)
                ),
                _ => format!(
                    "masquerade (masquerade): instance \"{instance}\" masquerades {theirs} (its \
                     first ADD decided), but container {} has address {} ({mine}); one \
                     instance serves one container subnet: give this network its own \
                     \"instance\"",
                    att.container_id, att.address
                ),
            };
            return Err(CniError::Invalid(what));
        }
    }
    if let Some(cgroup) = &host_local
        && pin_dir(&net.instance).exists()
    {
        host_local_in_force(&net.instance, cgroup)?;
    }

    let mut report = AddReport {
        uplink: uplink.name.clone(),
        uplink_addr: Some(uplink_addr),
        ..AddReport::default()
    };
    let pins = pin_dir(&net.instance);
    if !pins.join(MAP_ENDPOINTS).exists()
        && let Some(other) = instance::uplink_holder(&net.instance, &uplink.name, &here)
    {
        return Err(CniError::Invalid(format!(
            "uplink \"{}\" (uplink): netfast instance \"{other}\" is attached to it already, \
             and the first instance's programs end the tc chain, so instance \"{}\" would \
             translate nothing; one uplink serves one instance, and one instance one container \
             subnet: put this network's containers on network \"{other}\", or set \"uplink\" to \
             another interface",
            uplink.name, net.instance
        )));
    }
    if !pins.join(MAP_ENDPOINTS).exists() {
        // Kernels that distributions ship: tcx where the kernel has it, else netlink
        // TC filters; the fast path off where bpf_redirect_peer is missing.
        let features = bpf::features::Features::probe(Some(&uplink.name));
        let tc_attach = features
            .tc_attach(bpf::TcAttachMode::Auto)
            .unwrap_or(bpf::TcAttach::Netlink);
        let mut config = datapath_config(net, uplink_addr, wanted_subnet, &ephemeral);
        config.fast_path = u8::from(features.fast_path(config.fast_path != 0).0);
        let host_local = match (&net.host_local, &host_local) {
            (Some(setting), Some(cgroup)) => {
                Some(host_local_spec(setting, cgroup, &features, host).await?)
            }
            _ => None,
        };
        if let Some((_, cookie)) = &host_local {
            config.host_netns_cookie = *cookie;
        }
        let spec = DatapathSpec {
            instance: net.instance.clone(),
            uplink: uplink.name.clone(),
            ingress: IngressMode::Tc,
            tc_attach,
            config,
            publishes: Vec::new(),
            endpoints: Vec::new(),
            conntrack_capacity: net.conntrack_capacity,
            config_path: None,
            host_local: host_local.as_ref().map(|(spec, _)| spec.clone()),
        };
        let pins_existed = pins.exists();
        match bpf::attach(&spec) {
            Ok(a) => report.attachments = a.attachments,
            Err(e) => {
                if !pins_existed {
                    let _ = bpf::detach(&net.instance);
                }
                return Err(e.into());
            }
        }
        let mut m = manifest.unwrap_or_else(|| Manifest {
            instance: net.instance.clone(),
            ..Manifest::default()
        });
        m.merge(&[Created::Datapath {
            instance: net.instance.clone(),
        }]);
        if let Some((spec, _)) = &host_local {
            m.merge(&[Created::HostLocal {
                instance: net.instance.clone(),
                cgroup: spec.cgroup.display().to_string(),
            }]);
        }
        m.owner = Some(Owner {
            netns: here,
            config: None,
            topology,
            publishes: Vec::new(),
        });
        if let Err(e) = instance::store_manifest(&m) {
            let _ = bpf::detach(&net.instance);
            return Err(e.into());
        }
        report.brought_up = true;
    }

    // The same container and interface again: its old state goes first.
    if let Some(old) = read_record(&record_path(&net.instance, &att.container_id, &att.ifname))? {
        remove_container(&net.instance, &old)?;
    }

    let addr = att.address.addr();
    let specs: Vec<PublishSpec> = att.mappings.iter().map(|m| m.spec(addr)).collect();
    let others: Vec<ContainerRecord> = records(&net.instance)?
        .into_iter()
        .filter(|r| !(r.container_id == att.container_id && r.ifname == att.ifname))
        .collect();
    for (i, spec) in specs.iter().enumerate() {
        if let Some(clash) = port_owner_clash(spec, &others) {
            return Err(CniError::PortTaken(clash));
        }
        if let Some(earlier) = specs[..i]
            .iter()
            .find(|s| same_host_port(spec, s).is_some())
        {
            return Err(CniError::Invalid(format!(
                "runtimeConfig.portMappings: \"{spec}\" and \"{earlier}\" claim the same host \
                 port; give each mapping its own host port"
            )));
        }
    }
    if let Some(r) = others.iter().find(|r| r.address == addr) {
        return Err(CniError::Invalid(format!(
            "container {} has address {addr}, which container {} (netns {}) holds in instance \
             \"{}\"; check the IPAM configuration of the network",
            att.container_id, r.container_id, r.netns, net.instance
        )));
    }

    let record = ContainerRecord {
        container_id: att.container_id.clone(),
        netns: att.netns.clone(),
        ifname: att.ifname.clone(),
        host_veth: att.host_veth.clone(),
        address: addr,
        mappings: Vec::new(),
        static_fdb_mac: None,
    };
    // From here on every step is undone on failure.
    let mut done = record.clone();
    let result = add_container(net, att, &specs, host, &mut done, &mut report).await;
    if let Err(e) = result {
        let _ = remove_container(&net.instance, &done);
        return Err(e);
    }
    write_record(&net.instance, &done).inspect_err(|_| {
        let _ = remove_container(&net.instance, &done);
    })?;
    Ok(report)
}

/// The container's endpoint, its link and its mappings; `done` collects what was made.
async fn add_container(
    net: &CniNetwork,
    att: &Attachment,
    specs: &[PublishSpec],
    host: &rtnetlink::Handle,
    done: &mut ContainerRecord,
    report: &mut AddReport,
) -> Result<()> {
    let veth = match topology::link(host, &att.host_veth).await? {
        Some(l) => l,
        None => {
            return Err(CniError::Invalid(format!(
                "prevResult: the container's host-side interface \"{}\" does not exist in this \
                 network namespace; chain netfast-cni after an interface plugin (bridge, ptp) \
                 that creates it",
                att.host_veth
            )));
        }
    };
    // Bridged: the container's gateway MAC is the bridge's; point to point: the veth's.
    let (host_mac, gateway) = match veth.master {
        Some(master) => {
            let links = topology::links(host).await?;
            let bridge = links.iter().find(|l| l.index == master);
            let addrs = topology::ipv4_addresses(host, master).await?;
            let in_subnet = addrs
                .iter()
                .map(|a| a.local.addr())
                .find(|a| att.address.contains(a));
            match topology::add_static_fdb(host, veth.index, att.mac).await {
                Ok(()) => done.static_fdb_mac = Some(att.mac),
                Err(e) => report.warnings.push(format!(
                    "{e}: the fast path works, but the bridge may flood the container's \
                     frames after its ageing time"
                )),
            }
            (bridge.and_then(|b| b.mac), att.gateway.or(in_subnet))
        }
        None => {
            let addrs = topology::ipv4_addresses(host, veth.index).await?;
            (
                veth.mac,
                att.gateway.or(addrs.first().map(|a| a.local.addr())),
            )
        }
    };
    let Some(host_mac) = host_mac else {
        return Err(CniError::Invalid(format!(
            "prevResult: the host side of container {}'s link ({}) has no Ethernet address; \
             netfast-cni needs a veth pair (bridge or ptp plugin)",
            att.container_id, att.host_veth
        )));
    };
    let ep = EndpointSpec {
        veth: att.host_veth.clone(),
        addr: att.address.addr(),
        endpoint: Endpoint {
            ifindex: veth.index,
            gateway: gateway.map_or(0, |g| u32::from_ne_bytes(g.octets())),
            mac: att.mac,
            host_mac,
        },
    };
    report
        .attachments
        .push(bpf::loader::attach_container(&net.instance, &ep)?);

    let inst = PinnedInstance::open(&net.instance)?;
    let host_addrs: Vec<Ipv4Addr> = topology::host_ipv4_addresses(host)
        .await?
        .iter()
        .map(|a| a.local.addr())
        .collect();
    let existing = inst.publishes()?;
    for spec in specs {
        // A port published with `publish add` (no container's record) is taken too.
        for (key, backend) in &existing {
            let theirs: PublishSpec = match crate::publish::entry_spec(key, backend).parse() {
                Ok(s) => s,
                Err(_) => continue,
            };
            if let Some(port) = same_host_port(spec, &theirs) {
                return Err(CniError::PortTaken(format!(
                    "host port {port}/{} (runtimeConfig.portMappings hostPort {port}) is already \
                     published as \"{theirs}\" by no container of this network (with `netfast \
                     publish add`); pick another host port, or remove it (`netfast publish del \
                     --instance {} {theirs}`)",
                    spec.protocol, net.instance
                )));
            }
        }
        match inst.add_publish(spec, &host_addrs, Some(&[att.address.addr()])) {
            Ok(_) => done.mappings.push(spec.to_string()),
            Err(PinnedError::Refused(why)) => {
                return Err(CniError::Invalid(format!(
                    "runtimeConfig.portMappings: {why}"
                )));
            }
            Err(PinnedError::HostPortTaken(why)) => {
                return Err(CniError::PortTaken(format!(
                    "runtimeConfig.portMappings: {why}"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The container's host-side veth among prevResult's host-side interfaces (the
/// bridge plugin lists the bridge and the veth, ptp the veth): the one that is a veth
/// in the calling thread's namespace.
pub fn pick_host_veth(candidates: &[String]) -> Result<String> {
    let wanted = candidates.to_vec();
    let links = netlink::netlink_blocking(None, |h| async move { topology::links(&h).await })??;
    wanted
        .iter()
        .find(|name| {
            links
                .iter()
                .any(|l| &l.name == *name && l.kind.as_deref() == Some("veth"))
        })
        .cloned()
        .ok_or_else(|| {
            CniError::Invalid(format!(
                "prevResult: none of the host-side interfaces ({}) is a veth in this network \
                 namespace; chain netfast-cni after the bridge or ptp plugin, which create one",
                if wanted.is_empty() {
                    "none listed".to_owned()
                } else {
                    wanted.join(", ")
                }
            ))
        })
}

/// The CONFIG entry of a CNI instance.
fn datapath_config(
    net: &CniNetwork,
    uplink_addr: Ipv4Addr,
    subnet: Option<Ipv4Net>,
    ephemeral: &RangeInclusive<u16>,
) -> DatapathConfig {
    let ne = |a: Ipv4Addr| u32::from_ne_bytes(a.octets());
    DatapathConfig {
        uplink_addr: ne(uplink_addr),
        subnet_addr: subnet.map_or(0, |s| ne(s.network())),
        subnet_mask: subnet.map_or(0, |s| ne(s.netmask())),
        snat_port_min: *net.snat_ports.start(),
        snat_port_max: *net.snat_ports.end(),
        enabled: 1,
        masquerade: u8::from(subnet.is_some()),
        ephemeral_min: *ephemeral.start(),
        ephemeral_max: *ephemeral.end(),
        // Like portmap: only mappings and flows reach the containers from outside.
        allow_direct_routing: 0,
        fast_path: u8::from(net.fast_path),
        host_netns_cookie: 0,
        uplink_ifindex: 0,
        _pad: [0; 4],
    }
}

/// Removes a container's mappings (with their flows), the flows of its address, its
/// endpoint and its link, then its record. What is gone already is fine.
fn remove_container(instance: &str, r: &ContainerRecord) -> Result<()> {
    if pin_dir(instance).exists() {
        let inst = PinnedInstance::open(instance)?;
        for spec in r.specs()? {
            match inst.remove_publish(&spec, true) {
                // Not published (any more): removed by hand, or a DEL before.
                Ok(_) | Err(PinnedError::Refused(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        inst.flush_flows(&FlowFilter {
            addr: Some(r.address),
            ..FlowFilter::default()
        })?;
        bpf::loader::detach_container(instance, &r.host_veth, r.address)?;
    }
    // The bridge entry ADD made; the bridge plugin's DEL, which runs after this one,
    // would take it with the veth, but a DEL of netfast-cni alone must not leave it.
    if let Some(mac) = r.static_fdb_mac {
        let veth = r.host_veth.clone();
        netlink::netlink_blocking(None, move |h| async move {
            match topology::link_index(&h, &veth).await? {
                Some(port) => topology::delete_static_fdb(&h, port, mac).await,
                None => Ok(false),
            }
        })??;
    }
    remove_record(instance, &r.container_id, &r.ifname)
}

/// What DEL did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DelReport {
    /// The record that was removed; None when there was none (nothing to do).
    pub removed: Option<ContainerRecord>,
}

/// DEL: removes container `container_id`'s attachment `ifname` from `instance`.
/// Idempotent: a missing record, instance or pin is success, as the CNI spec
/// requires. The datapath stays pinned after the last container.
pub fn del(instance: &str, container_id: &str, ifname: &str) -> Result<DelReport> {
    check_instance_name(instance, "instance")?;
    if !instance::state_dir(instance).exists() {
        return Ok(DelReport::default());
    }
    let _turn = take_turn(instance)?;
    let Some(r) = read_record(&record_path(instance, container_id, ifname))? else {
        return Ok(DelReport::default());
    };
    remove_container(instance, &r)?;
    Ok(DelReport { removed: Some(r) })
}

/// CHECK: the container's record exists, its mappings are in PUBLISHED_PORTS with
/// it as backend, its endpoint is in ENDPOINTS and its link is pinned; `host_local`
/// (the config's `hostLocal.cgroup`) is the instance's and in force. Err names what
/// is missing or different.
pub fn check(
    instance: &str,
    container_id: &str,
    ifname: &str,
    host_local: Option<&CgroupSetting>,
) -> Result<ContainerRecord> {
    check_instance_name(instance, "instance")?;
    // Without state there is nothing to check, and nothing to create for it.
    if !records_dir(instance).exists() {
        return Err(CniError::Missing(format!(
            "instance \"{instance}\" has no container records ({} is missing): container \
             {container_id} was never added, or the instance was taken down; ADD it again",
            records_dir(instance).display()
        )));
    }
    let _turn = take_turn(instance)?;
    let r = read_record(&record_path(instance, container_id, ifname))?.ok_or_else(|| {
        CniError::Missing(format!(
            "instance \"{instance}\" has no record of container {container_id} interface \
             {ifname} ({} is missing); ADD it again",
            record_path(instance, container_id, ifname).display()
        ))
    })?;
    let inst = PinnedInstance::open(instance).map_err(|e| {
        CniError::Missing(format!(
            "instance \"{instance}\" of container {container_id}: {e}"
        ))
    })?;
    let published = inst.publishes()?;
    let mut missing = Vec::new();
    for spec in r.specs()? {
        for entry in spec.entries() {
            if !published.contains(&entry) {
                missing.push(format!("port mapping \"{spec}\" is not in PUBLISHED_PORTS"));
                break;
            }
        }
    }
    let endpoints = EndpointsMap::open(instance, MAP_ENDPOINTS)?.entries()?;
    let key = u32::from_ne_bytes(r.address.octets());
    if !endpoints.iter().any(|(k, _)| *k == key) {
        missing.push(format!("endpoint {} is not in ENDPOINTS", r.address));
    }
    let link = inst.dir().join(container_link_name(&r.host_veth));
    if !link.exists() {
        missing.push(format!(
            "container_ingress_tc on {} is not attached ({} is missing)",
            r.host_veth,
            link.display()
        ));
    }
    if !missing.is_empty() {
        return Err(CniError::Missing(format!(
            "container {container_id} interface {ifname} in instance \"{instance}\": {}; DEL and \
             ADD it again",
            missing.join(", ")
        )));
    }
    check_host_local(instance, host_local)?;
    Ok(r)
}

/// CHECK of `hostLocal`: the config's setting against the instance's (its first
/// ADD's), and, when on, its programs still on that cgroup. Err is code 102 naming
/// what differs and the fix.
fn check_host_local(instance: &str, wanted: Option<&CgroupSetting>) -> Result<()> {
    let owner = instance::load_manifest(instance)?.and_then(|m| m.owner);
    let theirs = owner
        .as_ref()
        .and_then(|o| topology_value(&o.topology, HOST_LOCAL_KEY))
        .unwrap_or("none");
    let missing = |e: CniError| CniError::Missing(e.to_string());
    let cgroup = wanted
        .map(resolve_host_local)
        .transpose()
        .map_err(missing)?;
    let mine = cgroup
        .as_deref()
        .map_or_else(|| "none".to_owned(), |p| p.display().to_string());
    if theirs != mine {
        return Err(CniError::Missing(format!(
            "hostLocal.cgroup: instance \"{instance}\" has {} (its first ADD decided), the \
             config CHECK was given asks for {}; write the same hostLocal in the network \
             config, or take the instance down (`netfast down --instance {instance}`) once no \
             container uses it",
            host_local_words(theirs),
            host_local_words(&mine)
        )));
    }
    match cgroup {
        Some(cgroup) => host_local_in_force(instance, &cgroup).map_err(missing),
        None => Ok(()),
    }
}

/// GC: removes the state of every attachment of `instance` that is not in `valid`
/// (container id, ifname), as a DEL would. Returns the records removed.
pub fn gc(instance: &str, valid: &[(String, String)]) -> Result<Vec<ContainerRecord>> {
    check_instance_name(instance, "instance")?;
    if !instance::state_dir(instance).exists() {
        return Ok(Vec::new());
    }
    let _turn = take_turn(instance)?;
    let mut removed = Vec::new();
    for r in records(instance)? {
        let known = valid
            .iter()
            .any(|(id, ifname)| *id == r.container_id && *ifname == r.ifname);
        if !known {
            remove_container(instance, &r)?;
            removed.push(r);
        }
    }
    Ok(removed)
}

/// STATUS: why the plugin could not serve an ADD here, or None when it can: bpffs
/// (mounted, or mountable), BTF and the rights to load programs.
pub fn not_ready() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "netfast-cni runs without root, so it cannot load eBPF programs; the runtime must \
             run it as root"
                .to_owned(),
        );
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some(
            "the kernel has no BTF (/sys/kernel/btf/vmlinux is missing); netfast needs a \
             kernel built with CONFIG_DEBUG_INFO_BTF"
                .to_owned(),
        );
    }
    let bpffs = Path::new("/sys/fs/bpf");
    if !bpffs.is_dir() {
        return Some(
            "/sys/fs/bpf does not exist, so the datapath cannot be pinned; mount bpffs \
             (mount -t bpf bpf /sys/fs/bpf)"
                .to_owned(),
        );
    }
    if let Err(e) = bpf::pins::ensure_bpffs(bpffs) {
        return Some(format!("bpffs: {e}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, mappings: &[&str]) -> ContainerRecord {
        ContainerRecord {
            container_id: id.into(),
            netns: format!("/run/netns/{id}"),
            ifname: "eth0".into(),
            host_veth: format!("veth{id}"),
            address: Ipv4Addr::new(10, 88, 0, 2),
            mappings: mappings.iter().map(|m| (*m).to_owned()).collect(),
            static_fdb_mac: None,
        }
    }

    /// A host port held by another container is refused with the port, the owner and
    /// the fix; another protocol or another host address is no clash.
    #[test]
    fn port_clash_names_port_and_owner() {
        let others = [record("c1", &["8088:10.88.0.2:80/tcp"])];
        let want = |host_ip, protocol| PortMapping {
            host_port: 8088,
            container_port: 8080,
            protocol,
            host_ip,
        };
        let clash = port_owner_clash(
            &want(None, Protocol::Tcp).spec(Ipv4Addr::new(10, 88, 0, 3)),
            &others,
        )
        .expect("clash");
        for needle in [
            "8088/tcp",
            "c1",
            "/run/netns/c1",
            "eth0",
            "another host port",
        ] {
            assert!(clash.contains(needle), "{clash:?} lacks {needle:?}");
        }
        assert!(
            port_owner_clash(
                &want(None, Protocol::Udp).spec(Ipv4Addr::new(10, 88, 0, 3)),
                &others
            )
            .is_none()
        );
        let on_one = [record("c2", &["10.0.0.1:8088:10.88.0.2:80/tcp"])];
        assert!(
            port_owner_clash(
                &want(Some(Ipv4Addr::new(10, 0, 0, 2)), Protocol::Tcp)
                    .spec(Ipv4Addr::new(10, 88, 0, 3)),
                &on_one
            )
            .is_none()
        );
        // Every address meets one address.
        assert!(
            port_owner_clash(
                &want(None, Protocol::Tcp).spec(Ipv4Addr::new(10, 88, 0, 3)),
                &on_one
            )
            .is_some()
        );
    }

    #[test]
    fn record_round_trips_and_parses_its_mappings() {
        let r = record("abc", &["8088:10.88.0.2:80/tcp", "9000:10.88.0.2:53/udp"]);
        let text = serde_json::to_string(&r).expect("json");
        let back: ContainerRecord = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, r);
        let specs = back.specs().expect("specs");
        assert_eq!(specs[1].protocol, Protocol::Udp);
        assert_eq!(*specs[0].host_ports.start(), 8088);
    }

    #[test]
    fn bad_instance_names_name_the_key() {
        let err = check_instance_name("bad/name", "instance").unwrap_err();
        assert!(err.to_string().contains("(instance)"), "{err}");
        assert!(err.to_string().contains("bad/name"), "{err}");
        assert!(check_instance_name("mynet", "instance").is_ok());
    }
}
