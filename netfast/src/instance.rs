//! `up` and `down` for one instance: validate, build the topology, attach the datapath,
//! and remember what was made so `down` removes exactly that.
//!
//! The calling thread's network namespace is the "host". `up` checks everything against
//! the system before it changes anything. Every object it creates goes into an undo log;
//! a failure half-way (or a panic) removes exactly what this run created, in reverse
//! order. On success the log is merged into `/run/netfast/<instance>/manifest.json`, which
//! `down` replays backwards.

use std::{
    future::Future,
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use netfast_common::{Backend, DatapathConfig, PublishKey};
use serde::{Deserialize, Serialize};

use crate::{
    bpf::{
        self, AttachReport, DatapathError, DatapathSpec, PinnedInstance, features::Features,
        loader::HostLocalSpec,
    },
    config::{CgroupSetting, Config, ConfigError},
    host::{
        cgroup::{self, cgroup2_dir_problem},
        netlink,
        netns::{self, NetnsError, NetnsId},
        topology::{self, Ipv4Address, TopologyError},
    },
    publish::{PortMappings, entry_spec},
};

/// Per-instance state lives under here: `/run/netfast/<instance>/manifest.json` (and
/// the netlink TC record, `tc_filters.json`, which the loader keeps).
pub const STATE_ROOT: &str = bpf::tc_netlink::STATE_ROOT;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The configuration is inconsistent in itself.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration does not fit this system. Nothing was changed.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("the datapath: {0}")]
    Datapath(DatapathError),
    #[error("removing the UDP flows of changed publishes failed: {0}")]
    Pinned(Box<crate::bpf::pinned::PinnedError>),
    #[error("{action} {}: {error}", path.display())]
    State {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("{} holds something netfast cannot read ({reason}); remove it by hand once the instance is down", path.display())]
    BadManifest { path: PathBuf, reason: String },
    /// Waiting for the instance's PUBLISHED_PORTS lock failed.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error("could not start a tokio runtime: {0}")]
    Runtime(io::Error),
    #[error("a worker thread panicked: {0}")]
    Panicked(String),
    #[error("{error}{}", rollback_note(.rollback_failures))]
    UpFailed {
        error: Box<InstanceError>,
        /// What could not be undone; empty when the rollback was complete.
        rollback_failures: Vec<String>,
    },
    #[error("down could not remove: {}; run `down` again once the cause is fixed", .0.join("; "))]
    DownIncomplete(Vec<String>),
}

impl From<DatapathError> for InstanceError {
    fn from(e: DatapathError) -> Self {
        InstanceError::Datapath(e)
    }
}

fn rollback_note(failures: &[String]) -> String {
    if failures.is_empty() {
        " (everything this run created was removed again)".to_string()
    } else {
        format!(
            " (rollback could not remove: {}; remove these by hand)",
            failures.join("; ")
        )
    }
}

impl InstanceError {
    /// True when the operator's input was refused before anything was changed.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            InstanceError::Config(_) | InstanceError::Invalid(_) => true,
            InstanceError::UpFailed {
                error,
                rollback_failures,
            } => rollback_failures.is_empty() && error.is_invalid_input(),
            _ => false,
        }
    }
}

type Result<T> = std::result::Result<T, InstanceError>;

/// One thing `up` made, in the order it made it. This is both the undo log and the
/// manifest's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Created {
    /// A named network namespace (removed with everything in it).
    Namespace { name: String },
    /// A link of the host namespace; deleting a veth end deletes its peer too.
    Link { name: String },
    /// An address added to a link that existed before (links netfast created take their
    /// addresses with them). `netns` None is the host namespace.
    Address {
        netns: Option<String>,
        link: String,
        /// `local/prefix`.
        local: String,
        peer: Option<Ipv4Addr>,
    },
    /// ip_forward of the host namespace was switched on; `down` puts `previous` back.
    IpForward { previous: bool },
    /// The pinned datapath of the instance.
    Datapath { instance: String },
    /// The host-local programs' links on `cgroup` (pinned with the datapath, so
    /// removing the pins detaches them); recorded apart so `down` names the cgroup.
    HostLocal { instance: String, cgroup: String },
}

impl std::fmt::Display for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Created::Namespace { name } => write!(f, "network namespace {name}"),
            Created::Link { name } => write!(f, "interface {name}"),
            Created::Address {
                netns,
                link,
                local,
                peer,
            } => {
                write!(f, "address {local}")?;
                if let Some(p) = peer {
                    write!(f, " peer {p}")?;
                }
                write!(f, " on {link}")?;
                if let Some(ns) = netns {
                    write!(f, " in {ns}")?;
                }
                Ok(())
            }
            Created::IpForward { previous } => {
                write!(
                    f,
                    "net.ipv4.ip_forward change ({} -> 1)",
                    u8::from(*previous)
                )
            }
            Created::Datapath { instance } => {
                write!(
                    f,
                    "datapath pins {}",
                    bpf::pins::pin_dir(instance).display()
                )
            }
            Created::HostLocal { cgroup, .. } => {
                write!(
                    f,
                    "host-local links on cgroup {cgroup} (connect4, sendmsg4, recvmsg4, getpeername4)"
                )
            }
        }
    }
}

/// What `/run/netfast/<instance>/manifest.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub instance: String,
    pub created: Vec<Created>,
    /// Whose instance this is; None in manifests written before owners were recorded
    /// (the next `up` records one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// What an instance belongs to: the host namespace and the topology of the `up` that
/// made it. `up` refuses another namespace or another topology under the same name,
/// and `down` refuses another namespace, because both would act on the wrong links.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The host namespace.
    pub netns: NetnsId,
    /// The config file of the last `up`, for messages; None when it was not a file.
    pub config: Option<PathBuf>,
    /// `(key, value)` pairs of what the topology is made of (see [`topology_of`]).
    pub topology: Vec<(String, String)>,
    /// The PUBLISHED_PORTS entries the config of the last `up` wrote, as specs: whatever
    /// else PUBLISHED_PORTS holds was published live with `publish add`.
    pub publishes: Vec<String>,
}

/// The parts of `cfg` that make the instance's topology, as `(key, value)` pairs:
/// uplink, bridge, each container (by namespace) and the masquerade subnet. A re-`up`
/// may change anything else (publishes, ingress mode, SNAT ports, timeouts).
pub fn topology_of(cfg: &Config) -> Vec<(String, String)> {
    let mut t = vec![
        ("uplink".to_owned(), cfg.uplink.clone()),
        (
            "bridge".to_owned(),
            format!("{} {}", cfg.bridge.name, cfg.bridge.address),
        ),
        (
            "masquerade.subnet".to_owned(),
            cfg.masquerade
                .as_ref()
                .map_or_else(|| "none".to_owned(), |m| m.subnet.to_string()),
        ),
    ];
    let mut containers: Vec<(String, String)> = cfg
        .containers
        .iter()
        .map(|c| {
            let mut v = format!("{} on {}/{}", c.address, c.veth, c.peer);
            if let Some(h) = c.host_address {
                v += &format!(" point to point with {h}");
            }
            (format!("container {}", c.netns), v)
        })
        .collect();
    containers.sort();
    t.extend(containers);
    t
}

fn config_name(path: Option<&Path>) -> String {
    path.map_or_else(|| "FILE".to_owned(), |p| p.display().to_string())
}

/// The owner's namespace as it is known now (its current `/run/netns` name), falling
/// back to the name recorded at `up`.
fn owner_netns(owner: &Owner) -> NetnsId {
    let mut now = netns::identify(owner.netns.dev, owner.netns.ino);
    if now.name.is_none() && !now.root {
        now.name.clone_from(&owner.netns.name);
    }
    now
}

/// Refuses an `up` of an instance that belongs to another namespace, or to another
/// topology in this one. One sentence naming the instance, its namespace and config,
/// and the fix.
fn check_owner(cfg: &Config, owner: &Owner, here: &NetnsId) -> Result<()> {
    let theirs = owner_netns(owner);
    // Only a CNI network's instance has no config file.
    let config = owner.config.as_deref().map_or_else(
        || "none: a CNI network's instance".to_owned(),
        |p| p.display().to_string(),
    );
    // An instance with no config file (a CNI network's) is taken down by name.
    let down = match &owner.config {
        Some(_) => format!("netfast {}down --config {config}", theirs.netns_arg()),
        None => format!(
            "netfast {}down --instance {}",
            theirs.netns_arg(),
            cfg.instance
        ),
    };
    if !owner.netns.same(here) {
        let msg = if netns::alive(&owner.netns) {
            format!(
                "instance \"{}\" belongs to {theirs} (config {config}), not to {here}; \
                 take it down there first (`{down}`), or pick another instance name",
                cfg.instance
            )
        } else {
            let remove = match &owner.config {
                Some(_) => format!("netfast down --config {config}"),
                None => format!("netfast down --instance {}", cfg.instance),
            };
            format!(
                "instance \"{}\" was brought up in {theirs} (config {config}), which no \
                 longer exists; remove what is left of it with `{remove}`, or pick another \
                 instance name",
                cfg.instance
            )
        };
        return Err(InstanceError::Invalid(vec![msg]));
    }
    let mine = topology_of(cfg);
    let value = |t: &[(String, String)], key: &str| {
        t.iter()
            .find(|(k, _)| k == key)
            .map_or_else(|| "absent".to_owned(), |(_, v)| format!("\"{v}\""))
    };
    let mut keys: Vec<&String> = owner.topology.iter().chain(&mine).map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    let this = config_name(cfg.source.as_deref());
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| value(&owner.topology, k) != value(&mine, k))
        .map(|k| {
            format!(
                "{k} is {} there, {} in {this}",
                value(&owner.topology, k),
                value(&mine, k)
            )
        })
        .collect();
    if diffs.is_empty() {
        return Ok(());
    }
    Err(InstanceError::Invalid(vec![format!(
        "instance \"{}\" is up in {theirs} with another topology (config {config}): {}; \
         take it down first (`{down}`), or pick another instance name",
        cfg.instance,
        diffs.join(", ")
    )]))
}

/// The PUBLISHED_PORTS entries published live (with `publish add`) that a re-`up` keeps: what
/// PUBLISHED_PORTS holds beyond what the last `up`'s config wrote. A live entry that claims a
/// port the config publishes otherwise is refused, naming both and the fix. Before the
/// first `up`, or over a manifest without an owner, there are none.
fn live_publishes(
    cfg: &Config,
    owner: Option<&Owner>,
    here: &NetnsId,
) -> Result<Vec<(PublishKey, Backend)>> {
    let Some(owner) = owner else {
        return Ok(Vec::new());
    };
    if !bpf::pins::pin_dir(&cfg.instance).exists() {
        return Ok(Vec::new());
    }
    let pinned = PinnedInstance::open(&cfg.instance)
        .and_then(|inst| inst.publishes())
        .map_err(|e| InstanceError::Pinned(Box::new(e)))?;
    let wanted: Vec<(PublishKey, Backend)> = cfg.publish_entries().collect();
    let wanted_ports = PortMappings::new(wanted.iter().copied());
    let mut live = Vec::new();
    let mut conflicts = Vec::new();
    for (key, backend) in pinned {
        let spec = entry_spec(&key, &backend);
        if owner.publishes.contains(&spec) || wanted.contains(&(key, backend)) {
            continue;
        }
        match wanted_ports.claimant(&key) {
            None => live.push((key, backend)),
            Some((k, b)) => conflicts.push(format!(
                "live publish {spec} (added with `netfast publish add`) claims the host port \
                 that {} publishes as \"{}\"; remove it first (`netfast {}publish del \
                 --instance {} {spec}`), or drop that publish from the config",
                config_name(cfg.source.as_deref()),
                entry_spec(&k, &b),
                here.netns_arg(),
                cfg.instance
            )),
        }
    }
    if conflicts.is_empty() {
        Ok(live)
    } else {
        Err(InstanceError::Invalid(conflicts))
    }
}

impl Manifest {
    /// Appends what is not recorded yet. ip_forward keeps the first recorded value, which
    /// is the one from before netfast touched it.
    pub fn merge(&mut self, more: &[Created]) {
        for c in more {
            let known = match c {
                Created::IpForward { .. } => self
                    .created
                    .iter()
                    .any(|x| matches!(x, Created::IpForward { .. })),
                _ => self.created.contains(c),
            };
            if !known {
                self.created.push(c.clone());
            }
        }
    }
}

pub fn state_dir(instance: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(instance)
}

/// The other instance of namespace `here` whose datapath is on `uplink`, if any. Two
/// instances cannot share an uplink: the first one's tc programs end the chain (tcx
/// runs links in order, and each of netfast's answers TC_ACT_OK or redirects), so the
/// second one's would never see a packet and would translate nothing, silently.
/// Instances are found by their manifests (`/run/netfast/*/manifest.json`, the owner's
/// namespace and topology) and counted only while their pins exist; a manifest that
/// cannot be read is not an instance this check can name, and is skipped.
pub fn uplink_holder(instance: &str, uplink: &str, here: &NetnsId) -> Option<String> {
    let entries = std::fs::read_dir(STATE_ROOT).ok()?;
    entries.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        if name == instance || !bpf::pins::pin_dir(&name).exists() {
            return None;
        }
        let owner = load_manifest(&name).ok()??.owner?;
        let holds = owner.netns.same(here)
            && owner
                .topology
                .iter()
                .any(|(k, v)| k == "uplink" && v == uplink);
        holds.then_some(name)
    })
}

pub fn manifest_path(instance: &str) -> PathBuf {
    state_dir(instance).join("manifest.json")
}

/// Reads the manifest; None when there is none.
pub fn load_manifest(instance: &str) -> Result<Option<Manifest>> {
    let path = manifest_path(instance);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(InstanceError::State {
                action: "could not read",
                path,
                error,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| InstanceError::BadManifest {
            path,
            reason: e.to_string(),
        })
}

/// Writes the manifest (through a temporary file and a rename).
pub fn store_manifest(m: &Manifest) -> Result<()> {
    let dir = state_dir(&m.instance);
    let state = |action, path: &Path| {
        let path = path.to_path_buf();
        move |error| InstanceError::State {
            action,
            path,
            error,
        }
    };
    std::fs::create_dir_all(&dir).map_err(state("could not create", &dir))?;
    let path = manifest_path(&m.instance);
    let tmp = dir.join("manifest.json.tmp");
    let text = serde_json::to_string_pretty(m).map_err(|e| InstanceError::BadManifest {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&tmp, text + "\n").map_err(state("could not write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(state("could not replace", &path))
}

fn remove_state(instance: &str) -> Result<()> {
    let dir = state_dir(instance);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(InstanceError::State {
            action: "could not remove",
            path: dir,
            error,
        }),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(InstanceError::Runtime)
}

/// `netlink::netlink_blocking` with both errors in this module's terms.
fn netlink_blocking<F, Fut, T>(ns: Option<&str>, f: F) -> Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: Future<Output = std::result::Result<T, TopologyError>>,
    T: Send,
{
    Ok(netlink::netlink_blocking(ns, f)??)
}

/// Removes one thing `up` made, acting on the calling thread's namespace as host.
/// Returns false when it was already gone (deleted by hand, say).
pub fn remove(c: &Created) -> Result<bool> {
    match c {
        Created::Namespace { name } => Ok(netns::delete(name)?),
        Created::Link { name } => {
            let name = name.clone();
            netlink_blocking(None, |h| async move {
                topology::delete_link_by_name(&h, &name).await
            })
        }
        Created::Address {
            netns: ns,
            link,
            local,
            peer,
        } => {
            if let Some(ns) = ns
                && !netns::exists(ns)
            {
                return Ok(false);
            }
            let local: Ipv4Net = local.parse().map_err(|_| InstanceError::BadManifest {
                path: PathBuf::from("(manifest)"),
                reason: format!("address {local:?} is not ADDR/LEN"),
            })?;
            let address = Ipv4Address { local, peer: *peer };
            let link = link.clone();
            netlink_blocking(ns.as_deref(), |h| async move {
                match topology::link_index(&h, &link).await? {
                    Some(index) => topology::delete_address(&h, index, &address).await,
                    None => Ok(false),
                }
            })
        }
        Created::IpForward { previous } => {
            if topology::ip_forward()? == *previous {
                return Ok(false);
            }
            topology::set_ip_forward(*previous)?;
            Ok(true)
        }
        Created::Datapath { instance } => Ok(remove_datapath(instance)?.is_some()),
        Created::HostLocal { instance, .. } => Ok(bpf::loader::detach_host_local(instance)?),
    }
}

/// Removes the instance's datapath: its pins and its netlink TC filters, whose record
/// alone is something to remove (they keep their programs without any pin). None when
/// there was nothing; else the lines [`bpf::loader::detach`] returns.
fn remove_datapath(instance: &str) -> Result<Option<Vec<String>>> {
    if !bpf::pins::pin_dir(instance).exists() && !bpf::tc_netlink::record_path(instance).exists() {
        return Ok(None);
    }
    Ok(Some(bpf::loader::detach(instance)?))
}

/// Whether `c` lives in the host namespace (and died with it), rather than in a named
/// namespace or on bpffs, which outlive it.
fn in_host_netns(c: &Created) -> bool {
    match c {
        Created::Link { .. } | Created::IpForward { .. } => true,
        Created::Address { netns, .. } => netns.is_none(),
        Created::Namespace { .. } | Created::Datapath { .. } | Created::HostLocal { .. } => false,
    }
}

/// Everything created so far by one `up`. Dropping it without [`UndoLog::commit`]
/// removes it all, newest first, so a panic also leaves nothing behind.
#[derive(Debug, Default)]
pub struct UndoLog {
    entries: Vec<Created>,
    done: bool,
}

impl UndoLog {
    pub fn push(&mut self, c: Created) {
        self.entries.push(c);
    }

    pub fn entries(&self) -> &[Created] {
        &self.entries
    }

    /// Keeps everything: the run succeeded.
    pub fn commit(mut self) -> Vec<Created> {
        self.done = true;
        std::mem::take(&mut self.entries)
    }

    /// Removes everything, newest first. Returns what could not be removed.
    pub fn rollback(mut self) -> Vec<String> {
        self.done = true;
        undo_all(std::mem::take(&mut self.entries))
    }
}

fn undo_all(entries: Vec<Created>) -> Vec<String> {
    let mut failures = Vec::new();
    for c in entries.iter().rev() {
        if let Err(e) = remove(c) {
            failures.push(format!("{c}: {e}"));
        }
    }
    failures
}

impl Drop for UndoLog {
    fn drop(&mut self) {
        if !self.done && !self.entries.is_empty() {
            for f in undo_all(std::mem::take(&mut self.entries)) {
                eprintln!("netfast: rollback could not remove {f}");
            }
        }
    }
}

/// What `up` did.
#[derive(Clone, Debug)]
pub struct UpReport {
    pub instance: String,
    pub uplink_addr: Ipv4Addr,
    /// Made by this run.
    pub created: Vec<Created>,
    /// Found in place and kept, for the operator ("bridge br0", ...).
    pub kept: Vec<String>,
    pub attach: AttachReport,
    /// What the kernel offers, as probed at the start of this run (native XDP from
    /// the attach, in XDP mode).
    pub features: Features,
    /// For each feature that is off (or forced), what netfast does instead
    /// ([`Features::consequences`]).
    pub feature_notes: Vec<String>,
    /// The tc programs' attach mode this run used.
    pub tc_attach: bpf::TcAttach,
    /// Set when the config asks for the fast path and the kernel cannot give it:
    /// CONFIG has it off, for this reason.
    pub fast_path_off: Option<String>,
    /// A re-`up` that switched the fast path: (before, now).
    pub fast_path_switched: Option<(bool, bool)>,
    /// Publishes this run removed or pointed at another backend, with the UDP flows
    /// to the old backend it removed.
    pub unpinned_udp: Vec<UnpinnedUdp>,
    /// Publishes added live with `publish add`, not in the config, that this run kept
    /// (as specs).
    pub kept_live: Vec<String>,
    /// The host-local links of the last `up`, when this run removed them or moved
    /// them to another cgroup.
    pub host_local_change: Option<HostLocalChange>,
    /// Other links of the last `up` this run detached (switching the ingress mode
    /// between tc and XDP, say), as the attach lines name them.
    pub detached: Vec<String>,
    pub manifest: PathBuf,
}

/// A publish a re-`up` removed or pointed at another backend, and the UDP flows
/// still going to the old backend that it removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpinnedUdp {
    pub key: PublishKey,
    pub old: Backend,
    /// UDP DNAT flows through `key` to `old`.
    pub flows: usize,
    /// Hairpin SNAT flows chained to those (a container's connection to the
    /// published port through the host's address), removed with them.
    pub hairpin: usize,
}

/// What a re-`up` did to the host-local links of the `up` before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostLocalChange {
    /// The config has no `[host_local]` any more: the links on `cgroup` are gone.
    Removed { cgroup: OldCgroup },
    /// The config names another cgroup (or the directory there is a new cgroup):
    /// the links on `from` are gone, and new ones are on `to`.
    Moved { from: OldCgroup, to: String },
}

/// The cgroup the host-local links of the last `up` were on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldCgroup {
    /// Its directory: where it is now, else where the last `up` recorded it; None
    /// when neither is known.
    pub path: Option<String>,
    /// Removed since: no directory has the links' cgroup id (the kernel reports id 0
    /// once it detached them from a removed cgroup).
    pub gone: bool,
}

impl std::fmt::Display for HostLocalChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const HOOKS: &str = "(connect4, sendmsg4, recvmsg4, getpeername4)";
        let (verb, old, to) = match self {
            HostLocalChange::Removed { cgroup } => ("removed", cgroup, None),
            HostLocalChange::Moved { from, to } => ("moved", from, Some(to)),
        };
        write!(f, "{verb} host-local links")?;
        match (&old.path, to) {
            (Some(path), None) => write!(f, " on cgroup {path}")?,
            (Some(path), Some(to)) => write!(f, " from cgroup {path} to {to}")?,
            (None, Some(to)) => write!(f, " to cgroup {to}")?,
            (None, None) => {}
        }
        write!(f, " {HOOKS}")?;
        match (&old.path, old.gone) {
            (Some(_), true) => write!(f, "; that cgroup was removed since"),
            (None, _) => write!(f, "; the cgroup they were on was removed since"),
            (Some(_), false) => Ok(()),
        }
    }
}

/// The cgroup of the host-local links a re-`up` detached, which had id `cgroup_id`:
/// its directory now, else the last `up`'s record of it (`recorded`), removed since.
fn detached_cgroup(recorded: Option<&str>, cgroup_id: u64) -> OldCgroup {
    match cgroup::cgroup_dir(cgroup_id) {
        // The record, or where the directory is now (`mv` renames cgroups).
        Some(dir) => OldCgroup {
            path: Some(dir.display().to_string()),
            gone: false,
        },
        None => OldCgroup {
            path: recorded.map(str::to_owned),
            gone: true,
        },
    }
}

/// What `down` did.
#[derive(Clone, Debug, Default)]
pub struct DownReport {
    /// What this run removed.
    pub removed: Vec<Created>,
    /// Netlink TC filters removed, and clsact qdiscs removed or kept, with the datapath.
    pub tc_notes: Vec<String>,
    /// What the manifest recorded but was gone already (deleted by hand, or with the
    /// host namespace).
    pub already_gone: Vec<Created>,
}

/// What validation learned from the system.
#[derive(Clone, Debug)]
pub struct Plan {
    pub uplink_addr: Ipv4Addr,
    /// The host's `net.ipv4.ip_local_port_range`, for [`datapath_config`].
    pub ephemeral_ports: std::ops::RangeInclusive<u16>,
    /// `[host_local]`, resolved and checked; None when the config has none.
    pub host_local: Option<HostLocalPlan>,
    /// What the kernel offers, probed by `validate`.
    pub features: Features,
    /// `tc_attach` resolved against `features`.
    pub tc_attach: bpf::TcAttach,
    /// CONFIG's fast path: the config's, unless the kernel lacks what it needs
    /// ([`Features::fast_path`]); with the reason when it was turned off.
    pub fast_path: (bool, Option<String>),
}

/// `[host_local]` as `up` will apply it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLocalPlan {
    /// The cgroup2 directory (`auto` resolved to the cgroup2 mount's root).
    pub cgroup: PathBuf,
    /// The host namespace's cookie (`SO_NETNS_COOKIE`), for `CONFIG`.
    pub netns_cookie: u64,
    /// `HOST_ADDRS`: (address, ifindex; 0 for an address `up` adds).
    pub addrs: Vec<(Ipv4Addr, u32)>,
}

/// Resolves and checks `[host_local] cgroup` (or the setting `key` names): "auto" is
/// the cgroup2 mount's root; a path must be a cgroup2 directory. Err is one sentence
/// naming the value, `key` and the fix.
pub fn resolve_cgroup(setting: &CgroupSetting, key: &str) -> std::result::Result<PathBuf, String> {
    let mount = cgroup::cgroup2_mount();
    let path = match (setting, &mount) {
        (CgroupSetting::Auto, Ok(m)) => return Ok(m.clone()),
        (CgroupSetting::Auto, Err(e)) => {
            return Err(format!("host-local cgroup \"auto\" ({key}): {e}"));
        }
        (CgroupSetting::Path(p), _) => p,
    };
    let Some(why) = cgroup2_dir_problem(path) else {
        return Ok(path.clone());
    };
    let fix = match &mount {
        Ok(m) => format!(
            "give a directory under the cgroup2 mount {} (create one with `mkdir {}/netfast`), \
             or \"auto\" for its root",
            m.display(),
            m.display()
        ),
        Err(e) => e.to_string(),
    };
    Err(format!(
        "host-local cgroup \"{}\" ({key}) {why}, so the host-local programs \
         cannot attach there; {fix}",
        path.display()
    ))
}

/// The addresses that count as the host for the host-local programs: every
/// non-loopback IPv4 address of the host namespace now (with its interface), and
/// the ones `up` adds (the bridge's, point-to-point host addresses), with ifindex 0
/// until they exist. Loopback (127.0.0.0/8) the programs know themselves.
pub fn host_local_addrs(cfg: &Config, host: &[topology::HostAddress]) -> Vec<(Ipv4Addr, u32)> {
    let to_add = std::iter::once(cfg.bridge.address.addr())
        .chain(cfg.containers.iter().filter_map(|c| c.host_address))
        .map(|addr| (addr, 0));
    host_addrs(host.iter().map(|a| (a.local.addr(), a.index)).chain(to_add))
}

/// `HOST_ADDRS` from (address, ifindex) pairs: each address once (its first pair),
/// loopback left out.
pub fn host_addrs(pairs: impl Iterator<Item = (Ipv4Addr, u32)>) -> Vec<(Ipv4Addr, u32)> {
    let mut out: Vec<(Ipv4Addr, u32)> = Vec::new();
    for (addr, index) in pairs {
        if !addr.is_loopback() && !out.iter().any(|(a, _)| *a == addr) {
            out.push((addr, index));
        }
    }
    out
}

/// Checks `cfg` against the system (the calling thread's namespace is the host) without
/// changing anything. Every problem is reported, each naming the value and the fix.
pub async fn validate(cfg: &Config, host: &rtnetlink::Handle) -> Result<Plan> {
    cfg.validate()?;
    // Another namespace's instance: nothing here matters, its interfaces are not here.
    let owner = load_manifest(&cfg.instance)?.and_then(|m| m.owner);
    let here = netns::current()?;
    if let Some(owner) = &owner
        && !owner.netns.same(&here)
    {
        check_owner(cfg, owner, &here)?;
    }
    // Another topology in this namespace comes first, with whatever else is wrong with
    // the config here (an uplink that does not exist, say): every problem is named.
    let mut problems = Vec::new();
    if let Some(owner) = &owner
        && let Err(e) = check_owner(cfg, owner, &here)
    {
        problems.push(e.to_string());
    }
    if let Some(other) = uplink_holder(&cfg.instance, &cfg.uplink, &here) {
        problems.push(format!(
            "uplink \"{}\" (uplink): instance \"{other}\" of this namespace is attached to \
             it, and the first instance's programs end the tc chain, so this one's would never \
             see a packet; take \"{other}\" down first (`netfast down --instance {other}`), or \
             give this instance another uplink",
            cfg.uplink
        ));
    }
    // What the kernel offers decides the tc attach mode and the fast path; what the
    // config demands and the kernel lacks is refused here, before anything changes.
    // Native XDP is asked of the uplink's driver (read only), when there is an uplink.
    let uplink = nix::net::if_::if_nametoindex(cfg.uplink.as_str())
        .ok()
        .map(|_| cfg.uplink.as_str());
    let features = Features::probe(uplink);
    let tc_attach = features.tc_attach(cfg.tc_attach).unwrap_or_else(|e| {
        problems.push(e);
        bpf::TcAttach::Netlink
    });
    if let Some(h) = &cfg.host_local
        && !features.sock_addr.on
    {
        problems.push(format!(
            "host-local cgroup \"{}\" (host_local.cgroup): host-local access needs the cgroup \
             sock_addr hooks, and {}; remove [host_local] from the config, or run a kernel that \
             has them (Linux 5.14 or later)",
            h.cgroup,
            features
                .sock_addr
                .why
                .as_deref()
                .unwrap_or("they are missing")
        ));
    }
    let fast_path = features.fast_path(cfg.fast_path);

    let links = topology::links(host).await?;
    let find = |name: &str| links.iter().find(|l| l.name == name);

    let mut uplink_addr = None;
    match find(&cfg.uplink) {
        None => {
            let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
            problems.push(format!(
                "uplink \"{}\" (uplink): no such interface in this network namespace; \
                 set uplink to one of: {}",
                cfg.uplink,
                names.join(", ")
            ));
        }
        Some(l) => match topology::ipv4_addresses(host, l.index).await?.first() {
            Some(a) => uplink_addr = Some(a.local.addr()),
            None => problems.push(format!(
                "uplink \"{}\" (uplink): has no IPv4 address, so there is nothing to \
                 masquerade to or publish on; add one (ip addr add ADDR/LEN dev {}) or \
                 choose another uplink",
                cfg.uplink, cfg.uplink
            )),
        },
    }

    if let Some(l) = find(&cfg.bridge.name)
        && l.kind.as_deref() != Some("bridge")
    {
        problems.push(format!(
            "bridge \"{}\" (bridge.name): an interface of that name exists and is a {}, \
             not a bridge; choose another name",
            cfg.bridge.name,
            l.kind.as_deref().unwrap_or("device")
        ));
    }

    for (i, c) in cfg.containers.iter().enumerate() {
        if let Err(e) = netns::validate_name(&c.netns) {
            problems.push(format!("container[{i}].netns: {e}"));
        }
        if let Some(l) = find(&c.veth)
            && l.kind.as_deref() != Some("veth")
        {
            problems.push(format!(
                "veth \"{}\" (container[{i}].veth): an interface of that name exists and \
                 is a {}, not a veth; choose another name",
                c.veth,
                l.kind.as_deref().unwrap_or("device")
            ));
        }
        // A peer name already taken inside an existing namespace would make the veth
        // creation fail half-way; refuse it now.
        if find(&c.veth).is_none() && netns::exists(&c.netns) {
            let inside = netlink::netlink_in(&c.netns, &tokio::runtime::Handle::current())?;
            if topology::link_index(&inside, &c.peer).await?.is_some() {
                problems.push(format!(
                    "peer \"{}\" (container[{i}].peer): network namespace {} already has an \
                     interface of that name; choose another peer name or remove it \
                     (ip -n {} link del {})",
                    c.peer, c.netns, c.netns, c.peer
                ));
            }
        }
        if c.is_bridged() && !cfg.bridge.address.contains(&c.address.addr()) {
            problems.push(format!(
                "container address \"{}\" (container[{i}].address): outside the bridge \
                 subnet {}, so its gateway is unreachable; use an address in {} or set \
                 host_address for a point-to-point link",
                c.address,
                cfg.bridge.address.trunc(),
                cfg.bridge.address.trunc()
            ));
        }
    }

    let host_addrs = topology::host_ipv4_addresses(host).await?;
    let host_local = match &cfg.host_local {
        None => None,
        Some(h) => {
            let cookie = cgroup::netns_cookie().map_err(|e| e.to_string());
            match (resolve_cgroup(&h.cgroup, "host_local.cgroup"), cookie) {
                (Ok(cgroup), Ok(netns_cookie)) => Some(HostLocalPlan {
                    cgroup,
                    netns_cookie,
                    addrs: host_local_addrs(cfg, &host_addrs),
                }),
                (cgroup, cookie) => {
                    problems.extend(cgroup.err());
                    problems.extend(cookie.err());
                    None
                }
            }
        }
    };
    // Another instance's host-local programs on the same processes must not publish
    // a port this config does: the first program to run would take the connection.
    if let Some(h) = &host_local
        && let Some(clash) = bpf::pinned::host_local_port_holder(
            &cfg.instance,
            h.netns_cookie,
            &h.cgroup,
            cfg.publish_entries().map(|(k, _)| k),
        )
    {
        problems.push(format!("[host_local] with [[publish]]: {clash}"));
    }
    problems.extend(address_problems(
        cfg,
        &links,
        &host_addrs,
        &other_instances_links(&cfg.instance),
    ));

    // Pins from another build or another [conntrack] capacity: refuse before anything
    // changes, with the migration advice.
    match bpf::layout::check_layout(
        &cfg.instance,
        Some(cfg.conntrack.capacity),
        cfg.source.as_deref(),
    ) {
        Ok(()) => {}
        Err(e @ DatapathError::LayoutMismatch { .. }) => problems.push(e.to_string()),
        Err(e) => return Err(e.into()),
    }

    let ephemeral_ports = topology::ip_local_port_range()?;
    if let Some(m) = &cfg.masquerade
        && let Err(e) = m.check_local_port_range(&ephemeral_ports)
    {
        problems.push(e.to_string());
    }

    match (problems.is_empty(), uplink_addr) {
        (true, Some(uplink_addr)) => Ok(Plan {
            uplink_addr,
            ephemeral_ports,
            host_local,
            features,
            tc_attach,
            fast_path,
        }),
        _ => Err(InstanceError::Invalid(problems)),
    }
}

/// The interfaces each other running instance (a pin directory under
/// `/sys/fs/bpf/netfast/`) created, from its manifest: (instance, interface).
fn other_instances_links(instance: &str) -> Vec<(String, String)> {
    let Ok(dirs) = std::fs::read_dir(netfast_common::names::PIN_ROOT) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dir in dirs.flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if name == instance {
            continue;
        }
        // An unreadable manifest only costs the instance's name in a message.
        if let Ok(Some(m)) = load_manifest(&name) {
            for c in m.created {
                if let Created::Link { name: link } = c {
                    out.push((name.clone(), link));
                }
            }
        }
    }
    out
}

/// The address checks of `up` against the host namespace, pure so they are tested
/// without one (`links` and `host` are that namespace's interfaces and addresses;
/// `others` what [`other_instances_links`] found):
/// - a publish host IP must be an address of the host, or one `up` adds (the bridge's,
///   a point-to-point host address): the rule `publish add` applies too
///   ([`crate::publish::PublishSpec::check_host_addr`]);
/// - the bridge's network may not overlap the network of an address on an interface
///   that is not this instance's: the uplink's own subnet, or another instance's bridge
///   (named when its manifest says so); routes to it would be ambiguous;
/// - the masquerade subnet may not contain an address of the uplink: the host's own
///   traffic would be taken for a container's.
pub fn address_problems(
    cfg: &Config,
    links: &[topology::Link],
    host: &[topology::HostAddress],
    others: &[(String, String)],
) -> Vec<String> {
    let mut problems = Vec::new();
    let link_name = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .map_or_else(|| format!("ifindex {index}"), |l| l.name.clone())
    };
    let mut known: Vec<Ipv4Addr> = host.iter().map(|a| a.local.addr()).collect();
    known.push(cfg.bridge.address.addr());
    known.extend(cfg.containers.iter().filter_map(|c| c.host_address));
    for (i, p) in cfg.publish.iter().enumerate() {
        if let Err(why) = p.check_host_addr(&known) {
            problems.push(format!("publish spec \"{p}\" (publish[{i}]): {why}"));
        }
    }

    let ours: Vec<&str> = std::iter::once(cfg.bridge.name.as_str())
        .chain(cfg.containers.iter().map(|c| c.veth.as_str()))
        .collect();
    let bridge_net = cfg.bridge.address.trunc();
    for a in host {
        let name = link_name(a.index);
        if ours.contains(&name.as_str()) || a.local.addr().is_loopback() {
            continue;
        }
        let net = a.local.trunc();
        if !(bridge_net.contains(&net.network()) || net.contains(&bridge_net.network())) {
            continue;
        }
        let whose = if name == cfg.uplink {
            "the uplink's own subnet".to_owned()
        } else if let Some((inst, _)) = others.iter().find(|(_, l)| *l == name) {
            format!("{name} of running instance \"{inst}\"")
        } else {
            format!("interface {name}")
        };
        problems.push(format!(
            "bridge address \"{}\" (bridge.address): network {bridge_net} overlaps {net} of {whose} \
             ({} on {name}); pick a network of its own, like 172.31.0.1/24",
            cfg.bridge.address,
            a.local.addr()
        ));
    }

    if let Some(m) = &cfg.masquerade {
        let uplink = links.iter().find(|l| l.name == cfg.uplink).map(|l| l.index);
        for a in host.iter().filter(|a| Some(a.index) == uplink) {
            if m.subnet.contains(&a.local.addr()) {
                problems.push(format!(
                    "masquerade subnet \"{}\" (masquerade.subnet): contains {}, the uplink's own \
                     address, so the host's own traffic would be masqueraded; give the containers' \
                     subnet, like {bridge_net}",
                    m.subnet,
                    a.local.addr()
                ));
            }
        }
    }
    problems
}

/// The CONFIG map entry for `cfg`, with the host's ephemeral port range.
pub fn datapath_config(
    cfg: &Config,
    uplink_addr: Ipv4Addr,
    ephemeral_ports: &std::ops::RangeInclusive<u16>,
) -> DatapathConfig {
    let ne = |a: Ipv4Addr| u32::from_ne_bytes(a.octets());
    let (subnet_addr, subnet_mask, ports) = match &cfg.masquerade {
        Some(m) => (
            ne(m.subnet.network()),
            ne(m.subnet.netmask()),
            m.ports.clone(),
        ),
        None => (0, 0, crate::config::DEFAULT_SNAT_PORTS),
    };
    DatapathConfig {
        uplink_addr: ne(uplink_addr),
        subnet_addr,
        subnet_mask,
        snat_port_min: *ports.start(),
        snat_port_max: *ports.end(),
        enabled: 1,
        masquerade: u8::from(cfg.masquerade.is_some()),
        ephemeral_min: *ephemeral_ports.start(),
        ephemeral_max: *ephemeral_ports.end(),
        allow_direct_routing: u8::from(
            cfg.masquerade
                .as_ref()
                .is_some_and(|m| m.allow_direct_routing),
        ),
        fast_path: u8::from(cfg.fast_path),
        // `build` fills it in when `[host_local]` is on.
        host_netns_cookie: 0,
        // The loader fills it in: it resolves the uplink's name.
        uplink_ifindex: 0,
        _pad: [0; 4],
    }
}

/// `up` for sync callers: builds a runtime on the calling thread. Do not call it from
/// inside a tokio runtime; use [`up_async`] there.
pub fn up(cfg: &Config) -> Result<UpReport> {
    runtime()?.block_on(up_async(cfg))
}

/// Validates, builds and attaches; see the module docs. The host namespace is the one of
/// the thread that first polls this future (it opens the host netlink socket). Blocks
/// that thread briefly for namespace work and for `bpf::loader::attach`.
pub async fn up_async(cfg: &Config) -> Result<UpReport> {
    let rt = tokio::runtime::Handle::current();
    let here = netns::current()?;
    let host = netlink::netlink_here(&rt)?;
    let plan = validate(cfg, &host).await?;

    // PUBLISHED_PORTS takes turns with `publish add`/`del` from here on, so a publish added
    // live meanwhile is neither missed nor dropped.
    let pins = bpf::pins::pin_dir(&cfg.instance);
    let _turn = if pins.exists() {
        Some(crate::lock::publishes(&pins)?)
    } else {
        None
    };
    let owner = load_manifest(&cfg.instance)?.and_then(|m| m.owner);
    let live = live_publishes(cfg, owner.as_ref(), &here)?;
    // The fast path the running datapath has, to report a re-`up` that turns it on or
    // off: it changes where every translated packet goes.
    let fast_path_before = pins
        .exists()
        .then(|| PinnedInstance::open(&cfg.instance).and_then(|p| p.config()))
        .and_then(|config| config.ok())
        .filter(|config| config.enabled != 0)
        .map(|config| config.fast_path != 0);

    let mut undo = UndoLog::default();
    let mut kept = Vec::new();
    let built = build(cfg, &plan, &live, &host, &rt, &mut undo, &mut kept).await;
    let attach = match built {
        Ok(a) => a,
        Err(e) => {
            return Err(InstanceError::UpFailed {
                error: Box::new(e),
                rollback_failures: undo.rollback(),
            });
        }
    };
    let unpinned_udp = match remove_pinned_udp_flows(&cfg.instance, &attach.displaced) {
        Ok(u) => u,
        Err(e) => {
            return Err(InstanceError::UpFailed {
                error: Box::new(e),
                rollback_failures: undo.rollback(),
            });
        }
    };

    let mut manifest = match load_manifest(&cfg.instance) {
        Ok(m) => m.unwrap_or_else(|| Manifest {
            instance: cfg.instance.clone(),
            ..Manifest::default()
        }),
        Err(e) => {
            return Err(InstanceError::UpFailed {
                error: Box::new(e),
                rollback_failures: undo.rollback(),
            });
        }
    };
    manifest.merge(undo.entries());
    manifest.merge(&[Created::Datapath {
        instance: cfg.instance.clone(),
    }]);
    // The host-local links the last `up` recorded, before this run's record replaces it.
    let recorded_host_local = manifest.created.iter().find_map(|c| match c {
        Created::HostLocal { cgroup, .. } => Some(cgroup.clone()),
        _ => None,
    });
    let host_local_change = attach.detached.iter().find_map(|d| match d {
        bpf::loader::Detached::HostLocal { cgroup_id } => {
            let from = detached_cgroup(recorded_host_local.as_deref(), *cgroup_id);
            Some(match &plan.host_local {
                Some(h) => HostLocalChange::Moved {
                    from,
                    to: h.cgroup.display().to_string(),
                },
                None => HostLocalChange::Removed { cgroup: from },
            })
        }
        bpf::loader::Detached::Link(_) => None,
    });
    let detached = attach
        .detached
        .iter()
        .filter_map(|d| match d {
            bpf::loader::Detached::Link(line) => Some(line.clone()),
            bpf::loader::Detached::HostLocal { .. } => None,
        })
        .collect();
    // The host-local links as this run left them: on this run's cgroup, or none.
    let host_local = plan
        .host_local
        .as_ref()
        .map(|h| host_local_record(&cfg.instance, h));
    manifest
        .created
        .retain(|c| !matches!(c, Created::HostLocal { .. }) || Some(c) == host_local.as_ref());
    manifest.merge(host_local.as_slice());
    manifest.owner = Some(Owner {
        netns: here,
        config: cfg
            .source
            .as_ref()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
        topology: topology_of(cfg),
        publishes: cfg
            .publish_entries()
            .map(|(k, b)| entry_spec(&k, &b))
            .collect(),
    });
    if let Err(e) = store_manifest(&manifest) {
        return Err(InstanceError::UpFailed {
            error: Box::new(e),
            rollback_failures: undo.rollback(),
        });
    }
    let mut features = plan.features.clone();
    // XDP mode: the attach itself is the last word on native XDP.
    if let Some(native) = &attach.xdp_native {
        let name = bpf::features::XDP_NATIVE;
        features.xdp_native = Some(match native {
            Ok(()) => bpf::features::Feature {
                name,
                on: true,
                why: None,
            },
            Err(e) => bpf::features::Feature {
                name,
                on: false,
                why: Some(format!("{} refused it: {e}", cfg.uplink)),
            },
        });
    }
    let feature_notes = features.consequences(&bpf::features::Needs {
        tc_attach: cfg.tc_attach,
        fast_path: cfg.fast_path,
        host_local: cfg.host_local.is_some(),
        ingress: cfg.ingress,
    });
    Ok(UpReport {
        instance: cfg.instance.clone(),
        uplink_addr: plan.uplink_addr,
        created: undo.commit(),
        kept,
        features,
        feature_notes,
        tc_attach: plan.tc_attach,
        fast_path_off: plan.fast_path.1.clone(),
        fast_path_switched: fast_path_before
            .filter(|&before| before != plan.fast_path.0)
            .map(|before| (before, plan.fast_path.0)),
        attach,
        unpinned_udp,
        kept_live: live.iter().map(|(k, b)| entry_spec(k, b)).collect(),
        host_local_change,
        detached,
        manifest: manifest_path(&cfg.instance),
    })
}

/// A re-`up` that dropped a publish or pointed it at another backend removes the UDP
/// flows still pinned to the old backend, as `publish del` does (TCP flows are kept
/// until they close), with the hairpin SNAT flows chained to them. Returns, per
/// displaced publish, how many flows went.
///
/// Order: `attach` wrote the new PUBLISHED_PORTS before this runs, and that is what makes it
/// safe. From then on every lookup finds the new backend (or no publish), so no new
/// flow to the old backend can start after the flows are removed; removing them first
/// would let a datagram arriving before the PUBLISHED_PORTS write create one again, pinned
/// for as long as its sender sends. A packet that read the old entry just before the
/// write has long created its flow by now (programs run to completion in microseconds;
/// attaching took milliseconds), so this pass sees and removes it.
fn remove_pinned_udp_flows(
    instance: &str,
    displaced: &[(PublishKey, Backend)],
) -> Result<Vec<UnpinnedUdp>> {
    if displaced.is_empty() {
        return Ok(Vec::new());
    }
    let removed = PinnedInstance::open(instance)
        .and_then(|inst| inst.remove_pinned_udp_flows(displaced))
        .map_err(|e| InstanceError::Pinned(Box::new(e)))?;
    Ok(displaced
        .iter()
        .zip(removed)
        .map(|(&(key, old), (flows, hairpin))| UnpinnedUdp {
            key,
            old,
            flows,
            hairpin,
        })
        .collect())
}

async fn build(
    cfg: &Config,
    plan: &Plan,
    live: &[(PublishKey, Backend)],
    host: &rtnetlink::Handle,
    rt: &tokio::runtime::Handle,
    undo: &mut UndoLog,
    kept: &mut Vec<String>,
) -> Result<AttachReport> {
    // The bridge.
    let bridge = &cfg.bridge.name;
    let (br, br_created) = match topology::link_index(host, bridge).await? {
        Some(i) => {
            kept.push(format!("bridge {bridge}"));
            (i, false)
        }
        None => {
            let i = topology::create_bridge(host, bridge).await?;
            undo.push(Created::Link {
                name: bridge.clone(),
            });
            (i, true)
        }
    };
    if topology::add_address(host, br, cfg.bridge.address).await? && !br_created {
        undo.push(Created::Address {
            netns: None,
            link: bridge.clone(),
            local: cfg.bridge.address.to_string(),
            peer: None,
        });
    }
    topology::set_up(host, br).await?;
    let bridge_mac = topology::link(host, bridge).await?.and_then(|l| l.mac);

    let mut endpoints = Vec::new();
    for c in &cfg.containers {
        let ns_created = netns::create(&c.netns)?;
        if ns_created {
            undo.push(Created::Namespace {
                name: c.netns.clone(),
            });
        } else {
            kept.push(format!("network namespace {}", c.netns));
        }
        let ns_file = netns::open(&c.netns)?;
        let inside = netlink::netlink_in(&c.netns, rt)?;

        let (veth, veth_created) = match topology::link_index(host, &c.veth).await? {
            Some(i) => {
                if topology::link_index(&inside, &c.peer).await?.is_none() {
                    return Err(InstanceError::Invalid(vec![format!(
                        "veth \"{}\" exists but its peer \"{}\" is not in network namespace \
                         {}; delete it (ip link del {}) and run up again",
                        c.veth, c.peer, c.netns, c.veth
                    )]));
                }
                kept.push(format!("veth {} <-> {}/{}", c.veth, c.netns, c.peer));
                (i, false)
            }
            None => {
                let i = topology::create_veth(host, &c.veth, &c.peer, &ns_file).await?;
                undo.push(Created::Link {
                    name: c.veth.clone(),
                });
                (i, true)
            }
        };
        // Addresses on links this run created go away with them; only record the others.
        let record_inside = !veth_created && !ns_created;

        let gateway = match c.host_address {
            None => {
                let master = topology::link(host, &c.veth).await?.and_then(|l| l.master);
                if master != Some(br) {
                    topology::set_master(host, veth, br).await?;
                }
                cfg.bridge.address.addr()
            }
            Some(host_addr) => {
                if topology::add_p2p_address(host, veth, host_addr, c.address.addr()).await?
                    && !veth_created
                {
                    undo.push(Created::Address {
                        netns: None,
                        link: c.veth.clone(),
                        local: Ipv4Net::from(host_addr).to_string(),
                        peer: Some(c.address.addr()),
                    });
                }
                host_addr
            }
        };
        topology::set_up(host, veth).await?;

        // Inside the container namespace: addresses only after the peer is there, since
        // the kernel drops addresses when a link changes namespace.
        topology::set_up_by_name(&inside, "lo").await?;
        let peer = topology::require_link(&inside, &c.peer).await?;
        let added = match c.host_address {
            None => topology::add_address(&inside, peer, c.address).await?,
            Some(host_addr) => {
                topology::add_p2p_address(&inside, peer, c.address.addr(), host_addr).await?
            }
        };
        if added && record_inside {
            undo.push(Created::Address {
                netns: Some(c.netns.clone()),
                link: c.peer.clone(),
                local: match c.host_address {
                    None => c.address.to_string(),
                    Some(_) => Ipv4Net::from(c.address.addr()).to_string(),
                },
                peer: c.host_address,
            });
        }
        topology::set_up(&inside, peer).await?;
        topology::add_default_route(&inside, gateway, peer).await?;

        // ENDPOINTS: where hairpin frames to this container go, and with which MACs
        // (the host's MAC is the one the container's ARP entry for its gateway holds).
        let host_mac = match c.host_address {
            None => bridge_mac,
            Some(_) => topology::link(host, &c.veth).await?.and_then(|l| l.mac),
        };
        let mac = topology::link(&inside, &c.peer).await?.and_then(|l| l.mac);
        let (Some(mac), Some(host_mac)) = (mac, host_mac) else {
            return Err(InstanceError::Invalid(vec![format!(
                "container {} ({}): its interface {} or the host's side has no Ethernet \
                 address; netfast needs veth pairs",
                c.netns, c.address, c.peer
            )]));
        };
        if c.host_address.is_none() {
            topology::add_static_fdb(host, veth, mac).await?;
        }
        endpoints.push(bpf::EndpointSpec {
            veth: c.veth.clone(),
            addr: c.address.addr(),
            endpoint: netfast_common::Endpoint {
                ifindex: veth,
                gateway: u32::from_ne_bytes(gateway.octets()),
                mac,
                host_mac,
            },
        });
    }
    // A bridge whose address was never set (one netfast did not create) takes the
    // lowest MAC of its ports: read it again now that every veth is enslaved.
    if let Some(mac) = topology::link(host, bridge).await?.and_then(|l| l.mac) {
        for (ep, c) in endpoints.iter_mut().zip(&cfg.containers) {
            if c.host_address.is_none() {
                ep.endpoint.host_mac = mac;
            }
        }
    }

    if !topology::ip_forward()? {
        topology::set_ip_forward(true)?;
        undo.push(Created::IpForward { previous: false });
    }

    let spec = DatapathSpec {
        instance: cfg.instance.clone(),
        uplink: cfg.uplink.clone(),
        ingress: cfg.ingress,
        tc_attach: plan.tc_attach,
        config: DatapathConfig {
            host_netns_cookie: plan.host_local.as_ref().map_or(0, |h| h.netns_cookie),
            fast_path: u8::from(plan.fast_path.0),
            ..datapath_config(cfg, plan.uplink_addr, &plan.ephemeral_ports)
        },
        // The config's publishes, and those added live that it does not contradict.
        publishes: cfg.publish_entries().chain(live.iter().copied()).collect(),
        endpoints,
        conntrack_capacity: cfg.conntrack.capacity,
        config_path: cfg.source.clone(),
        host_local: plan.host_local.as_ref().map(|h| HostLocalSpec {
            cgroup: h.cgroup.clone(),
            addrs: h.addrs.clone(),
        }),
    };
    let pins_existed = bpf::pins::pin_dir(&cfg.instance).exists();
    let host_local_existed = bpf::loader::host_local_attached(&cfg.instance);
    let attached = bpf::loader::attach(&spec);
    if !pins_existed && (attached.is_ok() || bpf::pins::pin_dir(&cfg.instance).exists()) {
        undo.push(Created::Datapath {
            instance: cfg.instance.clone(),
        });
    }
    let attached = attached?;
    if let Some(h) = &plan.host_local
        && !host_local_existed
    {
        undo.push(host_local_record(&cfg.instance, h));
    }
    Ok(attached)
}

/// The manifest's record of the host-local links of `plan`.
fn host_local_record(instance: &str, plan: &HostLocalPlan) -> Created {
    Created::HostLocal {
        instance: instance.to_owned(),
        cgroup: plan.cgroup.display().to_string(),
    }
}

/// `down` for sync callers: removes what the manifest records, newest first, acting on
/// the calling thread's namespace as host. Nothing to remove is a success.
///
/// An instance of another namespace is refused (its links are not here). If that
/// namespace no longer exists, only what outlives it is removed: named namespaces and
/// the pins; the rest is reported as already gone.
pub fn down(cfg: &Config) -> Result<DownReport> {
    down_instance(&cfg.instance)
}

/// [`down`] by instance name alone: everything `down` needs is in the manifest and
/// the pins. `netfast down --instance NAME` uses it, for instances a CNI network
/// brought up (no config file) as for the others.
pub fn down_instance(instance: &str) -> Result<DownReport> {
    let (mut entries, owner) = match load_manifest(instance)? {
        Some(m) => (m.created, m.owner),
        None => (Vec::new(), None),
    };
    let here = netns::current()?;
    let host_gone = match &owner {
        Some(owner) if !owner.netns.same(&here) => {
            if netns::alive(&owner.netns) {
                let theirs = owner_netns(owner);
                return Err(InstanceError::Invalid(vec![format!(
                    "instance \"{}\" belongs to {theirs}, not to {here}; take it down there \
                     (`netfast {}down {}`)",
                    instance,
                    theirs.netns_arg(),
                    owner.config.as_deref().map_or_else(
                        || format!("--instance {instance}"),
                        |c| format!("--config {}", c.display())
                    )
                )]));
            }
            true
        }
        _ => false,
    };
    // Pins are named after the instance; remove them even if the manifest was lost.
    let datapath = Created::Datapath {
        instance: instance.to_owned(),
    };
    if !entries.contains(&datapath) && bpf::pins::pin_dir(instance).exists() {
        entries.push(datapath);
    }
    let mut report = DownReport::default();
    let mut failed = Vec::new();
    let mut failures = Vec::new();
    for c in entries.into_iter().rev() {
        if host_gone && in_host_netns(&c) {
            report.already_gone.push(c);
            continue;
        }
        // The datapath's netlink TC filters and qdiscs are named in the report.
        let removed = match &c {
            Created::Datapath { instance } => remove_datapath(instance)
                .map(|notes| notes.map(|notes| report.tc_notes.extend(notes)).is_some()),
            c => remove(c),
        };
        match removed {
            Ok(true) => report.removed.push(c),
            Ok(false) => report.already_gone.push(c),
            Err(e) => {
                failures.push(format!("{c}: {e}"));
                failed.push(c);
            }
        }
    }
    if failed.is_empty() {
        remove_state(instance)?;
        Ok(report)
    } else {
        failed.reverse();
        store_manifest(&Manifest {
            instance: instance.to_owned(),
            created: failed,
            owner,
        })?;
        Err(InstanceError::DownIncomplete(failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A re-`up` reports the host-local links it took away as `down` does, or where
    /// it moved them; a cgroup removed since is said to be.
    #[test]
    fn host_local_changes_read_like_the_other_changes() {
        const HOOKS: &str = "(connect4, sendmsg4, recvmsg4, getpeername4)";
        let at = |path: &str, gone| OldCgroup {
            path: Some(path.into()),
            gone,
        };
        let removed = HostLocalChange::Removed {
            cgroup: at("/sys/fs/cgroup/unified/a", false),
        };
        let record = Created::HostLocal {
            instance: "demo".into(),
            cgroup: "/sys/fs/cgroup/unified/a".into(),
        };
        assert_eq!(
            removed.to_string(),
            format!("removed {record}"),
            "the words of down"
        );
        assert_eq!(
            removed.to_string(),
            format!("removed host-local links on cgroup /sys/fs/cgroup/unified/a {HOOKS}")
        );
        let moved = HostLocalChange::Moved {
            from: at("/sys/fs/cgroup/unified/a", false),
            to: "/sys/fs/cgroup/unified/b".into(),
        };
        assert_eq!(
            moved.to_string(),
            format!(
                "moved host-local links from cgroup /sys/fs/cgroup/unified/a to \
                 /sys/fs/cgroup/unified/b {HOOKS}"
            )
        );
        let gone = HostLocalChange::Removed {
            cgroup: at("/sys/fs/cgroup/unified/a", true),
        };
        assert_eq!(
            gone.to_string(),
            format!(
                "removed host-local links on cgroup /sys/fs/cgroup/unified/a {HOOKS}; that \
                 cgroup was removed since"
            )
        );
        let unknown = HostLocalChange::Moved {
            from: OldCgroup {
                path: None,
                gone: true,
            },
            to: "/b".into(),
        };
        assert_eq!(
            unknown.to_string(),
            format!(
                "moved host-local links to cgroup /b {HOOKS}; the cgroup they were on was \
                 removed since"
            )
        );

        // No directory has the id: the record, removed since.
        assert_eq!(detached_cgroup(Some("/x/a"), 0), at("/x/a", true));
        assert_eq!(
            detached_cgroup(None, u64::MAX),
            OldCgroup {
                path: None,
                gone: true
            }
        );
        // The directory that has the id, whatever the record says.
        let mount = cgroup::cgroup2_mount().expect("cgroup2");
        let root = cgroup::cgroup_id(&mount).expect("the root cgroup's id");
        let shown = mount.display().to_string();
        assert_eq!(detached_cgroup(Some(&shown), root), at(&shown, false));
        assert_eq!(detached_cgroup(Some("/elsewhere"), root), at(&shown, false));
        assert_eq!(detached_cgroup(None, root), at(&shown, false));
    }

    #[test]
    fn manifest_merge_dedups_and_keeps_first_ip_forward() {
        let mut m = Manifest {
            instance: "t".into(),
            created: vec![
                Created::Namespace { name: "a".into() },
                Created::IpForward { previous: false },
            ],
            owner: None,
        };
        m.merge(&[
            Created::Namespace { name: "a".into() },
            Created::Link { name: "br0".into() },
            Created::IpForward { previous: true },
        ]);
        assert_eq!(
            m.created,
            vec![
                Created::Namespace { name: "a".into() },
                Created::IpForward { previous: false },
                Created::Link { name: "br0".into() },
            ]
        );
    }

    #[test]
    fn manifest_json_round_trip() {
        let m = Manifest {
            instance: "t".into(),
            created: vec![
                Created::Address {
                    netns: Some("n".into()),
                    link: "eth0".into(),
                    local: "10.0.0.1/24".into(),
                    peer: None,
                },
                Created::Datapath {
                    instance: "t".into(),
                },
            ],
            owner: None,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(r#""kind":"address""#), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
    }

    /// The address checks of `up`: publish host IPs, the bridge against other
    /// interfaces' networks, the masquerade subnet against the uplink.
    #[test]
    fn address_problems_name_the_value() {
        let cfg = crate::lab::seed_config("t", crate::config::IngressMode::Tc).unwrap();
        let link = |index, name: &str| topology::Link {
            index,
            name: name.into(),
            kind: None,
            master: None,
            up: true,
            mac: None,
        };
        let addr = |index, net: &str| topology::HostAddress {
            index,
            local: net.parse().unwrap(),
            secondary: false,
        };
        let links = vec![
            link(1, "lo"),
            link(2, "eth0"),
            link(3, "br9"),
            link(4, &cfg.bridge.name),
        ];
        let base = vec![
            addr(1, "127.0.0.1/8"),
            addr(2, "10.0.1.48/24"),
            addr(4, "172.16.0.100/24"),
        ];
        assert_eq!(
            address_problems(&cfg, &links, &base, &[]),
            Vec::<String>::new()
        );

        let one = |cfg: &Config, host: &[topology::HostAddress], others: &[(String, String)]| {
            let p = address_problems(cfg, &links, host, others);
            assert_eq!(p.len(), 1, "{p:?}");
            p[0].clone()
        };
        // Another interface's network overlaps the bridge's: named, and its instance too.
        let mut host = base.clone();
        host.push(addr(3, "172.16.0.1/16"));
        let err = one(&cfg, &host, &[("other".into(), "br9".into())]);
        for n in [
            "\"172.16.0.100/24\" (bridge.address)",
            "172.16.0.0/16",
            "br9 of running instance \"other\"",
        ] {
            assert!(err.contains(n), "{err:?} lacks {n:?}");
        }
        assert!(one(&cfg, &host, &[]).contains("interface br9"));
        // The uplink on the bridge's network.
        // The uplink on the bridge's network (which then also holds the uplink's address).
        let host = vec![addr(2, "172.16.0.48/24")];
        let p = address_problems(&cfg, &links, &host, &[]);
        assert!(p[0].contains("the uplink's own subnet"), "{p:?}");
        assert!(
            p[1].contains("contains 172.16.0.48, the uplink's own address"),
            "{p:?}"
        );
        // A masquerade subnet holding the uplink's address.
        let mut wide = cfg.clone();
        wide.masquerade.as_mut().unwrap().subnet = "10.0.0.0/8".parse().unwrap();
        let err = one(&wide, &base, &[]);
        assert!(
            err.contains("\"10.0.0.0/8\" (masquerade.subnet)") && err.contains("10.0.1.48"),
            "{err}"
        );
        // A publish on an address the host lacks; the bridge's own address is fine.
        let mut publish = cfg.clone();
        publish.publish = vec![
            "10.9.9.9:8089:172.16.0.102:80".parse().unwrap(),
            "172.16.0.100:8090:172.16.0.102:80".parse().unwrap(),
        ];
        let err = one(&publish, &base, &[]);
        assert!(
            err.contains("(publish[0]): host IP 10.9.9.9 is not an address of this host"),
            "{err}"
        );
        // 127.0.0.1 is an address of the host, on lo: a loopback publish is accepted
        // (the datapath keeps it from the uplink). 127.0.0.2 is in lo's network but no
        // address of it, and is refused like any other; so is 127.0.0.1 while lo has
        // no address (down, as in a fresh namespace).
        let mut loopback = cfg.clone();
        loopback.publish = vec!["127.0.0.1:8081:172.16.0.102:80".parse().unwrap()];
        assert_eq!(
            address_problems(&loopback, &links, &base, &[]),
            Vec::<String>::new()
        );
        loopback.publish = vec!["127.0.0.2:8081:172.16.0.102:80".parse().unwrap()];
        let err = one(&loopback, &base, &[]);
        assert!(
            err.contains("host IP 127.0.0.2 is not an address of this host (it has 127.0.0.1,"),
            "{err}"
        );
        loopback.publish = vec!["127.0.0.1:8081:172.16.0.102:80".parse().unwrap()];
        let err = one(&loopback, &base[1..], &[]);
        assert!(
            err.contains("host IP 127.0.0.1 is not an address of this host"),
            "{err}"
        );
    }

    #[test]
    fn datapath_config_is_network_order() {
        let cfg = crate::lab::seed_config("t", crate::config::IngressMode::Tc).unwrap();
        let dc = datapath_config(&cfg, Ipv4Addr::new(10, 0, 1, 48), &(32768..=60999));
        assert_eq!(dc.uplink_addr.to_ne_bytes(), [10, 0, 1, 48]);
        assert_eq!(dc.subnet_addr.to_ne_bytes(), [172, 16, 0, 0]);
        assert_eq!(dc.subnet_mask.to_ne_bytes(), [255, 255, 255, 0]);
        assert_eq!((dc.snat_port_min, dc.snat_port_max), (61000, 65535));
        assert_eq!((dc.enabled, dc.masquerade), (1, 1));
        assert_eq!((dc.ephemeral_min, dc.ephemeral_max), (32768, 60999));
    }
}
