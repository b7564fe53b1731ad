//! Typed access to a running instance's pinned datapath under
//! `/sys/fs/bpf/netfast/<instance>/`: CONFIG, FORWARDS, CONNTRACK, COUNTERS and the
//! pinned links. This is what the operator commands (and the daemon's GC) work on.
//!
//! Maps are opened per call from their pins and checked for the key and value sizes
//! this build expects, so a map left by another layout is reported, never misread.

use std::{
    ffi::CString,
    io,
    net::Ipv4Addr,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use netfast_common::{
    Backend, Counter, DatapathConfig, FlowKey, FlowState, ForwardKey, FragEntry, FragKey,
    names::{
        FORWARDS_CAPACITY, LINK_UPLINK_INGRESS_FALLBACK, MAP_CONFIG, MAP_CONNTRACK,
        MAP_CONNTRACK_UNASSURED, MAP_COUNTERS, MAP_FORWARDS, MAP_FRAGMENTS, PIN_ROOT,
        PROG_UPLINK_EGRESS_TC, PROG_UPLINK_INGRESS_TC, PROG_UPLINK_INGRESS_XDP,
    },
    proto,
};

use crate::{
    conntrack::{self, Flow, FlowFilter, Table, addr, raw_addr},
    datapath::DatapathError,
    publish::{Protocol, PublishSpec, claims_same_port},
};

/// `BPF_NOEXIST`: insert only when the key is not there yet.
const BPF_NOEXIST: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    #[error(
        "instance name {name:?} is not valid; use 1 to 32 letters, digits, '-' or '_', like \"demo\""
    )]
    BadName { name: String },
    #[error(
        "no instance {name:?}: {} does not exist; check --instance, or bring it up with `netfast up --config FILE`",
        dir.display()
    )]
    UnknownInstance { name: String, dir: PathBuf },
    #[error(
        "instance {instance:?} has no pinned {} (the pin directory is incomplete); run `netfast up --config FILE` again",
        path.display()
    )]
    MissingPin { instance: String, path: PathBuf },
    #[error("map {name} of instance {instance:?}: {source}")]
    Map {
        instance: String,
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("pinned link {}: {source}", path.display())]
    Link {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Input that was refused before any map changed; the text names value and fix.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// The pins were written by a build with another map layout (or the check failed).
    #[error(transparent)]
    Datapath(DatapathError),
}

impl PinnedError {
    /// True when the operator's input was refused and no map was changed.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            PinnedError::BadName { .. }
                | PinnedError::UnknownInstance { .. }
                | PinnedError::MissingPin { .. }
                | PinnedError::Refused(_)
                | PinnedError::Datapath(DatapathError::LayoutMismatch { .. })
        )
    }
}

type Result<T> = std::result::Result<T, PinnedError>;

/// Fill of one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub name: &'static str,
    /// "array", "percpu_array", "hash", "lru_hash".
    pub kind: &'static str,
    pub entries: u32,
    pub capacity: u32,
}

/// What one pinned link attaches, from `BPF_OBJ_GET_INFO_BY_FD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// The pin's file name, e.g. `link_uplink_ingress`.
    pub pin: &'static str,
    /// The tc ingress program behind XDP (pin `link_uplink_ingress_fallback`), which
    /// translates the frames XDP leaves to it.
    pub fallback: bool,
    pub link_id: u32,
    pub prog_id: u32,
    pub prog_name: Option<String>,
    /// "tcx", "xdp", or the kernel's link type number.
    pub kind: String,
    pub ifindex: u32,
    pub interface: Option<String>,
    /// tcx: "ingress"/"egress"; xdp: "ingress".
    pub hook: &'static str,
    /// xdp: "native", "skb" or "hw" when netlink tells; tcx: None.
    pub mode: Option<&'static str>,
}

/// What `forward add` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddReport {
    pub entries: usize,
    /// UDP flows through the new ports that still went to another backend, removed.
    pub udp_flows: usize,
}

/// What `forward del` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoveReport {
    pub entries: usize,
    /// DNAT flows (pairs) deleted with `--kill-flows`.
    pub flows: usize,
    /// Without `--kill-flows`: UDP flows still pinned to the removed backend, deleted
    /// ([`Flow::pinned_udp`]).
    pub udp_flows: usize,
}

/// An instance's pin directory. Opening checks that it exists; each accessor opens the
/// map it needs, so a long-running caller sees maps replaced by a later `up`.
#[derive(Clone, Debug)]
pub struct PinnedInstance {
    name: String,
    dir: PathBuf,
}

impl PinnedInstance {
    pub fn open(name: &str) -> Result<Self> {
        let valid = !name.is_empty()
            && name.len() <= crate::config::INSTANCE_MAX
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(PinnedError::BadName {
                name: name.to_owned(),
            });
        }
        let dir = Path::new(PIN_ROOT).join(name);
        if !dir.is_dir() {
            return Err(PinnedError::UnknownInstance {
                name: name.to_owned(),
                dir,
            });
        }
        // Never read maps that another layout wrote; any CONNTRACK capacity is fine.
        crate::datapath::check_layout(name, None, None).map_err(PinnedError::Datapath)?;
        Ok(Self {
            name: name.to_owned(),
            dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn map_err(&self, name: &'static str) -> impl Fn(MapError) -> PinnedError + '_ {
        move |source| PinnedError::Map {
            instance: self.name.clone(),
            name,
            source,
        }
    }

    /// Opens a pinned map after checking its key and value sizes (bytes), through
    /// the one opener, `datapath::open_pinned_map`; its errors in this façade's terms.
    fn open_map(&self, name: &'static str, key: usize, value: usize) -> Result<(Map, u32)> {
        crate::datapath::open_pinned_map(&self.name, name, key, value)
            .map_err(|e| self.datapath_err(e))
    }

    /// A loader error in this façade's terms (the messages operators know).
    fn datapath_err(&self, e: DatapathError) -> PinnedError {
        match e {
            DatapathError::NotPinned { instance, path } => {
                PinnedError::MissingPin { instance, path }
            }
            DatapathError::Map { name, source } => PinnedError::Map {
                instance: self.name.clone(),
                name,
                source,
            },
            other => PinnedError::Datapath(other),
        }
    }

    fn forwards_map(&self) -> Result<(HashMap<MapData, ForwardKey, Backend>, u32)> {
        let (map, cap) =
            self.open_map(MAP_FORWARDS, size_of::<ForwardKey>(), size_of::<Backend>())?;
        Ok((
            HashMap::try_from(map).map_err(self.map_err(MAP_FORWARDS))?,
            cap,
        ))
    }

    /// The conntrack map of `table`, and its capacity.
    fn conntrack_map(&self, table: Table) -> Result<(HashMap<MapData, FlowKey, FlowState>, u32)> {
        let name = conntrack_map_name(table);
        let (map, cap) = self.open_map(name, size_of::<FlowKey>(), size_of::<FlowState>())?;
        Ok((HashMap::try_from(map).map_err(self.map_err(name))?, cap))
    }

    fn fragments_map(&self) -> Result<(HashMap<MapData, FragKey, FragEntry>, u32)> {
        let (map, cap) =
            self.open_map(MAP_FRAGMENTS, size_of::<FragKey>(), size_of::<FragEntry>())?;
        Ok((
            HashMap::try_from(map).map_err(self.map_err(MAP_FRAGMENTS))?,
            cap,
        ))
    }

    /// The CONFIG entry the datapath reads.
    pub fn config(&self) -> Result<DatapathConfig> {
        let (map, _) = self.open_map(MAP_CONFIG, 4, size_of::<DatapathConfig>())?;
        let array: Array<MapData, DatapathConfig> =
            Array::try_from(map).map_err(self.map_err(MAP_CONFIG))?;
        array.get(&0, 0).map_err(self.map_err(MAP_CONFIG))
    }

    /// Every published port, sorted by protocol, port and address.
    pub fn forwards(&self) -> Result<Vec<(ForwardKey, Backend)>> {
        let (map, _) = self.forwards_map()?;
        let mut out = read_all(&map).map_err(self.map_err(MAP_FORWARDS))?;
        out.sort_by_key(|(k, _)| {
            (
                k.proto,
                u16::from_be(k.host_port),
                u32::from_be(k.host_addr),
            )
        });
        Ok(out)
    }

    /// Every entry of `table`'s map (both halves of every flow there).
    pub fn conntrack_entries(&self, table: Table) -> Result<Vec<(FlowKey, FlowState)>> {
        let (map, _) = self.conntrack_map(table)?;
        read_all(&map).map_err(self.map_err(conntrack_map_name(table)))
    }

    /// Every flow, its halves joined by `partner_key`: the assured ones, then those
    /// not assured yet.
    pub fn flows(&self) -> Result<Vec<Flow>> {
        let mut flows = Vec::new();
        for table in [Table::Assured, Table::Unassured] {
            flows.extend(conntrack::pair_flows_in(
                table,
                self.conntrack_entries(table)?,
            ));
        }
        Ok(flows)
    }

    /// Deletes both halves of each flow; halves already gone are fine. Returns how
    /// many entries were deleted.
    pub fn delete_flows<'a>(&self, flows: impl IntoIterator<Item = &'a Flow>) -> Result<usize> {
        let (mut assured, _) = self.conntrack_map(Table::Assured)?;
        let (mut unassured, _) = self.conntrack_map(Table::Unassured)?;
        let mut deleted = 0;
        for flow in flows {
            let map = match flow.table {
                Table::Assured => &mut assured,
                Table::Unassured => &mut unassured,
            };
            for key in flow.keys() {
                match map.remove(&key) {
                    Ok(()) => deleted += 1,
                    Err(e) if is_errno(&e, libc::ENOENT) => {}
                    Err(e) => return Err(self.map_err(conntrack_map_name(flow.table))(e)),
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes the flows `filter` matches; returns (flows, entries) deleted.
    pub fn flush_flows(&self, filter: &FlowFilter) -> Result<(usize, usize)> {
        self.flush_flows_where(|f| f.matches(filter))
    }

    /// Deletes both halves of every flow `doomed` picks; returns (flows, entries).
    fn flush_flows_where(&self, doomed: impl Fn(&Flow) -> bool) -> Result<(usize, usize)> {
        let flows: Vec<Flow> = self.flows()?.into_iter().filter(|f| doomed(f)).collect();
        let entries = self.delete_flows(&flows)?;
        Ok((flows.len(), entries))
    }

    /// Deletes the UDP flows still pinned to the old backends of changed publishes:
    /// for each `(published key, old backend)`, the UDP DNAT flows that came in through
    /// the key and go to that backend ([`Flow::pinned_udp`]). Returns how many flows
    /// each pair lost, in `stale`'s order.
    ///
    /// Call it after FORWARDS no longer leads the key to the old backend, never
    /// before: a datagram arriving in between would create the flow to the old
    /// backend again, and it would stay pinned there for as long as its sender sends.
    pub fn remove_pinned_udp_flows(&self, stale: &[(ForwardKey, Backend)]) -> Result<Vec<usize>> {
        let mut removed = vec![0; stale.len()];
        if stale.iter().all(|(k, _)| k.proto != proto::UDP) {
            return Ok(removed);
        }
        let flows: Vec<Flow> = self
            .flows()?
            .into_iter()
            .filter(|f| {
                let hit = stale.iter().position(|(k, b)| f.pinned_udp(k, b));
                if let Some(i) = hit {
                    removed[i] += 1;
                }
                hit.is_some()
            })
            .collect();
        self.delete_flows(&flows)?;
        Ok(removed)
    }

    /// Every counter, summed over CPUs, in `Counter::ALL` order
    /// (`datapath::read_counters`, the one reader).
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        crate::datapath::read_counters(&self.name).map_err(|e| self.datapath_err(e))
    }

    /// Entries and capacity of every map. Arrays are always full (preallocated);
    /// CONFIG counts as filled once userspace has enabled it.
    pub fn map_fill(&self) -> Result<Vec<MapFill>> {
        let config = self.config()?;
        let (forwards, fwd_cap) = self.forwards_map()?;
        let fwd = forwards.keys().filter(|k| k.is_ok()).count();
        let (conntrack, ct_cap) = self.conntrack_map(Table::Assured)?;
        let ct = conntrack.keys().filter(|k| k.is_ok()).count();
        let (unassured, unassured_cap) = self.conntrack_map(Table::Unassured)?;
        let unassured = unassured.keys().filter(|k| k.is_ok()).count();
        let (fragments, frag_cap) = self.fragments_map()?;
        let frag = fragments.keys().filter(|k| k.is_ok()).count();
        let (_, counters_cap) = self.open_map(MAP_COUNTERS, 4, size_of::<u64>())?;
        Ok(vec![
            MapFill {
                name: MAP_CONFIG,
                kind: "array",
                entries: u32::from(config.enabled != 0),
                capacity: 1,
            },
            MapFill {
                name: MAP_FORWARDS,
                kind: "hash",
                entries: fwd as u32,
                capacity: fwd_cap,
            },
            MapFill {
                name: MAP_CONNTRACK,
                kind: "lru_hash",
                entries: ct as u32,
                capacity: ct_cap,
            },
            MapFill {
                name: MAP_CONNTRACK_UNASSURED,
                kind: "lru_hash",
                entries: unassured as u32,
                capacity: unassured_cap,
            },
            MapFill {
                name: MAP_FRAGMENTS,
                kind: "lru_hash",
                entries: frag as u32,
                capacity: frag_cap,
            },
            MapFill {
                name: MAP_COUNTERS,
                kind: "percpu_array",
                entries: counters_cap,
                capacity: counters_cap,
            },
        ])
    }

    /// Publishes `spec`: checks it against CONFIG and FORWARDS first, then inserts
    /// each entry with `BPF_NOEXIST`. If another command inserts one of the ports
    /// meanwhile, what this call inserted is removed again and the conflict reported.
    ///
    /// `containers` are extra allowed backends (from `--config`), for instances
    /// without a masquerade subnet.
    ///
    /// Once the entries are in, UDP flows through these ports that still go to another
    /// backend are removed (as Docker clears conntrack for a UDP publish), so a sender
    /// with a fixed source port reaches the backend just published. `forward del`
    /// removed them already; this catches any flow created meanwhile.
    /// Publishes `spec` now, after [`check_forward_add`]; `host` is the host
    /// namespace's addresses, `containers` the config's container addresses (if known).
    pub fn add_forward(
        &self,
        spec: &PublishSpec,
        host: &[Ipv4Addr],
        containers: &[Ipv4Addr],
    ) -> Result<AddReport> {
        let _turn = crate::lock::forwards(&self.dir)?;
        let config = self.config()?;
        let (mut map, _) = self.forwards_map()?;
        let existing = read_all(&map).map_err(self.map_err(MAP_FORWARDS))?;
        check_forward_add(&self.name, spec, &config, &existing, host, containers)
            .map_err(PinnedError::Refused)?;
        let mut inserted: Vec<ForwardKey> = Vec::new();
        for (key, backend) in spec.entries() {
            match map.insert(key, backend, BPF_NOEXIST) {
                Ok(()) => inserted.push(key),
                Err(e) => {
                    let raced = is_errno(&e, libc::EEXIST);
                    // Undo: a half-published range is worse than none.
                    for k in &inserted {
                        let _ = map.remove(k);
                    }
                    if raced {
                        return Err(PinnedError::Refused(format!(
                            "publish spec \"{spec}\": host port {}/{} was published by another command at the same time; \
                             nothing was added, see `netfast forward list`",
                            u16::from_be(key.host_port),
                            spec.protocol
                        )));
                    }
                    return Err(self.map_err(MAP_FORWARDS)(e));
                }
            }
        }
        let mut report = AddReport {
            entries: inserted.len(),
            udp_flows: 0,
        };
        if spec.protocol == Protocol::Udp {
            // After the inserts: from now on a new flow through these ports goes to
            // the new backend, so what is left on another one is stale.
            let new: Vec<(ForwardKey, Backend)> = spec.entries().collect();
            (report.udp_flows, _) = self.flush_flows_where(|f| {
                f.proto() == proto::UDP
                    && new
                        .iter()
                        .any(|(k, b)| f.through_publish(k) && !f.goes_to(b))
            })?;
        }
        Ok(report)
    }

    /// Unpublishes `spec`, which must match published entries exactly. With
    /// `kill_flows`, the DNAT flows through those ports are deleted too. Otherwise TCP
    /// flows keep working until they close (their conntrack entries carry the
    /// backend), and UDP flows still pinned to the removed backend are deleted, so a
    /// sender with a fixed source port reaches whatever is published there next.
    pub fn remove_forward(&self, spec: &PublishSpec, kill_flows: bool) -> Result<RemoveReport> {
        let _turn = crate::lock::forwards(&self.dir)?;
        let (mut map, _) = self.forwards_map()?;
        let existing = read_all(&map).map_err(self.map_err(MAP_FORWARDS))?;
        check_forward_del(spec, &existing).map_err(PinnedError::Refused)?;
        let mut report = RemoveReport::default();
        let keys: Vec<ForwardKey> = spec.entries().map(|(k, _)| k).collect();
        for key in &keys {
            match map.remove(key) {
                Ok(()) => report.entries += 1,
                // Someone else removed it meanwhile: the outcome is the same.
                Err(e) if is_errno(&e, libc::ENOENT) => {}
                Err(e) => return Err(self.map_err(MAP_FORWARDS)(e)),
            }
        }
        // The entries are gone first, so no new flow to the old backend can start
        // while the flows are removed.
        if kill_flows {
            (report.flows, _) =
                self.flush_flows_where(|f| keys.iter().any(|k| f.through_publish(k)))?;
        } else {
            // check_forward_del made sure these are exactly the removed entries.
            let removed: Vec<(ForwardKey, Backend)> = spec.entries().collect();
            report.udp_flows = self.remove_pinned_udp_flows(&removed)?.iter().sum();
        }
        Ok(report)
    }

    /// The pinned links: what is attached where, in the order a received frame meets
    /// them (in XDP mode: XDP, the tc fallback behind it, then egress).
    pub fn links(&self) -> Result<Vec<LinkStatus>> {
        let mut out = Vec::new();
        for pin in crate::datapath::LINK_NAMES {
            let path = self.dir.join(pin);
            if !path.exists() {
                continue;
            }
            let raw = raw_link_info(&path).map_err(|source| PinnedError::Link {
                path: path.clone(),
                source,
            })?;
            let (kind, hook) = match raw.link_type {
                LINK_TYPE_TCX => (
                    "tcx".to_owned(),
                    match raw.attach_type {
                        ATTACH_TCX_INGRESS => "ingress",
                        ATTACH_TCX_EGRESS => "egress",
                        _ => "?",
                    },
                ),
                LINK_TYPE_XDP => ("xdp".to_owned(), "ingress"),
                other => (format!("type {other}"), "?"),
            };
            let interface = nix::net::if_::if_indextoname(raw.ifindex)
                .ok()
                .and_then(|n| n.into_string().ok());
            let mode = if raw.link_type == LINK_TYPE_XDP {
                xdp_mode(raw.ifindex, raw.prog_id)
            } else {
                None
            };
            let prog_name = aya::programs::loaded_programs()
                .filter_map(std::result::Result::ok)
                .find(|p| p.id() == raw.prog_id)
                .and_then(|p| p.name_as_str().map(|n| full_program_name(n, &kind)));
            out.push(LinkStatus {
                pin,
                fallback: pin == LINK_UPLINK_INGRESS_FALLBACK,
                link_id: raw.id,
                prog_id: raw.prog_id,
                prog_name,
                kind,
                ifindex: raw.ifindex,
                interface,
                hook,
                mode,
            });
        }
        Ok(out)
    }
}

/// The pinned map that holds `table`'s flows.
fn conntrack_map_name(table: Table) -> &'static str {
    match table {
        Table::Assured => MAP_CONNTRACK,
        Table::Unassured => MAP_CONNTRACK_UNASSURED,
    }
}

/// The kernel keeps 15 bytes of a program's name; give ours back in full.
fn full_program_name(kernel: &str, kind: &str) -> String {
    let known: &[&str] = match kind {
        "xdp" => &[PROG_UPLINK_INGRESS_XDP],
        _ => &[PROG_UPLINK_INGRESS_TC, PROG_UPLINK_EGRESS_TC],
    };
    known
        .iter()
        .find(|n| !kernel.is_empty() && n.starts_with(kernel))
        .map_or_else(|| kernel.to_owned(), |n| (*n).to_owned())
}

fn read_all<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
) -> std::result::Result<Vec<(K, V)>, MapError> {
    let mut out = Vec::new();
    for key in map.keys() {
        let key = key?;
        match map.get(&key, 0) {
            Ok(v) => out.push((key, v)),
            // Deleted (GC, LRU, another command) between listing and reading it.
            Err(MapError::KeyNotFound) => {}
            Err(e) if is_errno(&e, libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn is_errno(e: &MapError, errno: i32) -> bool {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(errno),
        MapError::IoError(io) => io.raw_os_error() == Some(errno),
        _ => false,
    }
}

/// A FORWARDS entry written back as a spec, for messages.
pub fn entry_spec(key: &ForwardKey, backend: &Backend) -> String {
    let host = match key.host_addr {
        0 => String::new(),
        a => format!("{}:", addr(a)),
    };
    format!(
        "{host}{}:{}:{}/{}",
        u16::from_be(key.host_port),
        addr(backend.addr),
        u16::from_be(backend.port),
        conntrack::proto_name(key.proto)
    )
}

/// The checks `forward add` runs before it changes anything, as in config validation:
/// a host IP must be one of `host`'s ([`PublishSpec::check_host_addr`], the rule `up`
/// applies too), the backend must be in the masquerade subnet (or a `containers`
/// address), no host port may be published already (an any-address port conflicts
/// with every address), and FORWARDS must have room.
pub fn check_forward_add(
    instance: &str,
    spec: &PublishSpec,
    config: &DatapathConfig,
    existing: &[(ForwardKey, Backend)],
    host: &[Ipv4Addr],
    containers: &[Ipv4Addr],
) -> std::result::Result<(), String> {
    spec.check_host_addr(host)
        .map_err(|why| format!("publish spec \"{spec}\": {why}"))?;
    let backend = spec.backend_addr;
    let in_subnet =
        config.masquerade != 0 && raw_addr(backend) & config.subnet_mask == config.subnet_addr;
    if !in_subnet && !containers.contains(&backend) {
        return Err(if config.masquerade != 0 {
            format!(
                "publish spec \"{spec}\": backend {backend} is outside masquerade subnet {}/{} of instance \"{instance}\"; use a container address",
                addr(config.subnet_addr),
                u32::from_be(config.subnet_mask).count_ones()
            )
        } else if containers.is_empty() {
            format!(
                "publish spec \"{spec}\": instance \"{instance}\" has no masquerade subnet to check backend {backend} against; \
                 give --config FILE so netfast checks it against the containers"
            )
        } else {
            format!(
                "publish spec \"{spec}\": backend {backend} is not a container address of instance \"{instance}\"; use a container address"
            )
        });
    }
    for (new, _) in spec.entries() {
        if let Some((k, b)) = existing.iter().find(|(k, _)| claims_same_port(&new, k)) {
            return Err(format!(
                "publish spec \"{spec}\": host port {}/{} is already published by \"{}\"; \
                 pick another host port, or remove that one with `netfast forward del`",
                u16::from_be(new.host_port),
                spec.protocol,
                entry_spec(k, b)
            ));
        }
    }
    let total = existing.len() + spec.port_count();
    if total > FORWARDS_CAPACITY as usize {
        return Err(format!(
            "publish spec \"{spec}\": {} more would make {total}, above the FORWARDS map's {FORWARDS_CAPACITY} entries; publish fewer ports",
            crate::count(spec.port_count() as u64, "port", "ports")
        ));
    }
    Ok(())
}

/// `forward del` removes only what is published exactly as `spec` says.
pub fn check_forward_del(
    spec: &PublishSpec,
    existing: &[(ForwardKey, Backend)],
) -> std::result::Result<(), String> {
    for (key, backend) in spec.entries() {
        let port = u16::from_be(key.host_port);
        match existing.iter().find(|(k, _)| *k == key) {
            None => {
                return Err(format!(
                    "publish spec \"{spec}\": host port {}{port}/{} is not published; see `netfast forward list`",
                    match key.host_addr {
                        0 => String::new(),
                        a => format!("{}:", addr(a)),
                    },
                    spec.protocol
                ));
            }
            Some((k, b)) if b != &backend => {
                return Err(format!(
                    "publish spec \"{spec}\": host port {port}/{} leads to {}:{}, not {}:{}; give the spec as `netfast forward list` shows it (\"{}\")",
                    spec.protocol,
                    addr(b.addr),
                    u16::from_be(b.port),
                    addr(backend.addr),
                    u16::from_be(backend.port),
                    entry_spec(k, b)
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

// Kernel ABI for link info: aya 0.14's `LinkInfo` exposes id, program id and type but
// not the tcx/xdp part of the union (ifindex, attach type), so read it directly.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const LINK_TYPE_XDP: u32 = 6;
const LINK_TYPE_TCX: u32 = 11;
const ATTACH_TCX_INGRESS: u32 = 46;
const ATTACH_TCX_EGRESS: u32 = 47;

struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    ifindex: u32,
    attach_type: u32,
}

fn bpf(cmd: libc::c_long, attr: &mut [u64]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised bpf_attr prefix of the given size, filled in
    // for `cmd`; the kernel reads (and for INFO writes through a pointer we own) only
    // within the sizes passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn raw_link_info(path: &Path) -> io::Result<RawLinkInfo> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags, path_fd.
    let mut attr = [0u64; 3];
    attr[0] = cpath.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, pad, then the per-type union at 16.
    let mut info = [0u8; 64];
    // bpf_attr for BPF_OBJ_GET_INFO_BY_FD: bpf_fd, info_len (u32 each), info (u64).
    let mut attr = [0u64; 2];
    attr[0] = u64::from(fd.as_raw_fd() as u32) | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let word = |at: usize| u32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]);
    Ok(RawLinkInfo {
        link_type: word(0),
        id: word(4),
        prog_id: word(8),
        ifindex: word(16),
        attach_type: word(20),
    })
}

/// XDP's attach mode from netlink (IFLA_XDP), or None if it cannot be told.
fn xdp_mode(ifindex: u32, prog_id: u32) -> Option<&'static str> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp, XdpAttached};
    let msg = crate::netns::netlink_blocking(None, |handle| async move {
        handle
            .link()
            .get()
            .match_index(ifindex)
            .execute()
            .try_next()
            .await
    })
    .ok()?
    .ok()??;
    let xdp = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(x) => Some(x),
        _ => None,
    })?;
    let attached = xdp.iter().find_map(|x| match x {
        LinkXdp::Attached(a) => Some(a),
        _ => None,
    })?;
    match attached {
        XdpAttached::Driver => Some("native"),
        XdpAttached::SocketBuffer => Some("skb"),
        XdpAttached::Hardware => Some("hw"),
        XdpAttached::Multiple => xdp.iter().find_map(|x| match x {
            LinkXdp::DrvProgId(id) if *id == prog_id => Some("native"),
            LinkXdp::SkbProgId(id) if *id == prog_id => Some("skb"),
            LinkXdp::HwProgId(id) if *id == prog_id => Some("hw"),
            _ => None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_config() -> DatapathConfig {
        DatapathConfig {
            uplink_addr: raw_addr(Ipv4Addr::new(10, 0, 1, 48)),
            subnet_addr: raw_addr(Ipv4Addr::new(172, 16, 0, 0)),
            subnet_mask: raw_addr(Ipv4Addr::new(255, 255, 255, 0)),
            snat_port_min: 61000,
            snat_port_max: 65535,
            enabled: 1,
            masquerade: 1,
            ephemeral_min: 32_768,
            ephemeral_max: 60_999,
            _pad: [0; 2],
        }
    }

    /// The lab host's addresses.
    fn host() -> Vec<Ipv4Addr> {
        vec![Ipv4Addr::new(10, 0, 1, 48), Ipv4Addr::new(10, 0, 1, 49)]
    }

    fn entries(spec: &str) -> Vec<(ForwardKey, Backend)> {
        spec.parse::<PublishSpec>()
            .expect("test spec")
            .entries()
            .collect()
    }

    /// Every refused `forward add`/`forward del` names the value and the fix.
    #[test]
    fn refused_forward_changes_name_value_and_fix() {
        let existing: Vec<_> = entries("8088:172.16.0.102:80/tcp")
            .into_iter()
            .chain(entries("10.0.1.48:9000-9001:172.16.0.103:90/udp"))
            .collect();
        let config = seed_config();
        #[rustfmt::skip]
        let add_cases: &[(&str, &[&str])] = &[
            ("8089:172.16.9.9:80", &["172.16.9.9", "outside masquerade subnet 172.16.0.0/24", "use a container address"]),
            ("8088:172.16.0.103:80", &["8088/tcp", "already published", "8088:172.16.0.102:80/tcp", "forward del"]),
            ("10.0.1.48:8088:172.16.0.103:80", &["8088/tcp", "already published"]),
            ("9000-9005:172.16.0.103:90/udp", &["9000/udp", "10.0.1.48:9000:172.16.0.103:90/udp"]),
            ("10.9.9.9:8089:172.16.0.102:80", &["\"10.9.9.9:8089:172.16.0.102:80/tcp\"", "host IP 10.9.9.9 is not an address of this host", "10.0.1.48, 10.0.1.49"]),
        ];
        for (spec, needles) in add_cases {
            let parsed: PublishSpec = spec.parse().expect("spec");
            let err = check_forward_add("demo", &parsed, &config, &existing, &host(), &[])
                .expect_err(&format!("{spec} must be refused"));
            for n in *needles {
                assert!(err.contains(n), "{spec}: {err:?} lacks {n:?}");
            }
        }
        // Different protocol, different address from a specific one: fine.
        for ok in [
            "8088:172.16.0.102:80/udp",
            "10.0.1.49:9000:172.16.0.103:90/udp",
            "8089:172.16.0.102:80",
        ] {
            let parsed: PublishSpec = ok.parse().expect("spec");
            check_forward_add("demo", &parsed, &config, &existing, &host(), &[])
                .unwrap_or_else(|e| panic!("{ok} refused: {e}"));
        }
        // No masquerade: only --config's containers can vouch for a backend.
        let bare = DatapathConfig {
            masquerade: 0,
            ..config
        };
        let spec: PublishSpec = "8089:172.16.0.102:80".parse().expect("spec");
        let err = check_forward_add("demo", &spec, &bare, &[], &host(), &[]).expect_err("refused");
        assert!(err.contains("--config"), "{err}");
        check_forward_add(
            "demo",
            &spec,
            &bare,
            &[],
            &host(),
            &[Ipv4Addr::new(172, 16, 0, 102)],
        )
        .expect("a container address is fine");

        #[rustfmt::skip]
        let del_cases: &[(&str, &[&str])] = &[
            ("8090:172.16.0.102:80", &["host port 8090/tcp is not published", "forward list"]),
            ("8088:172.16.0.102:80/udp", &["8088/udp is not published"]),
            ("8088:172.16.0.103:80", &["leads to 172.16.0.102:80, not 172.16.0.103:80", "\"8088:172.16.0.102:80/tcp\""]),
            ("10.0.1.48:9000-9002:172.16.0.103:90/udp", &["host port 10.0.1.48:9002/udp is not published"]),
            // Published on one address only: "every address" is another entry.
            ("9000:172.16.0.103:90/udp", &["host port 9000/udp is not published"]),
        ];
        for (spec, needles) in del_cases {
            let parsed: PublishSpec = spec.parse().expect("spec");
            let err = check_forward_del(&parsed, &existing)
                .expect_err(&format!("{spec} must be refused"));
            for n in *needles {
                assert!(err.contains(n), "{spec}: {err:?} lacks {n:?}");
            }
        }
        check_forward_del(&"8088:172.16.0.102:80".parse().expect("spec"), &existing)
            .expect("exact match removes");
    }

    #[test]
    fn capacity_is_checked() {
        let existing: Vec<_> = (1..=FORWARDS_CAPACITY as u16)
            .flat_map(|p| entries(&format!("{p}:172.16.0.102:80/udp")))
            .collect();
        let spec: PublishSpec = "8088:172.16.0.102:80/tcp".parse().expect("spec");
        let err = check_forward_add("demo", &spec, &seed_config(), &existing, &host(), &[])
            .expect_err("full");
        assert!(err.contains("16384"), "{err}");
    }

    #[test]
    fn program_names_come_back_in_full() {
        assert_eq!(
            full_program_name("uplink_ingress_", "tcx"),
            "uplink_ingress_tc"
        );
        assert_eq!(
            full_program_name("uplink_ingress_", "xdp"),
            "uplink_ingress_xdp"
        );
        assert_eq!(
            full_program_name("uplink_egress_t", "tcx"),
            "uplink_egress_tc"
        );
        assert_eq!(full_program_name("other", "tcx"), "other");
    }

    #[test]
    fn entry_spec_round_trips() {
        for s in [
            "8088:172.16.0.102:80/tcp",
            "10.0.1.48:53:172.16.0.103:5353/udp",
        ] {
            let (k, b) = entries(s)[0];
            assert_eq!(entry_spec(&k, &b), s);
        }
    }

    #[test]
    fn bad_instance_names_are_refused() {
        for bad in ["", "../x", "a/b", "-x", &"x".repeat(33)] {
            let err = PinnedInstance::open(bad).expect_err(bad);
            assert!(err.is_invalid_input());
            assert!(matches!(err, PinnedError::BadName { .. }), "{bad}: {err}");
        }
    }
}
