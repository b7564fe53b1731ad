//! A running instance's pinned datapath under `/sys/fs/bpf/netfast/<instance>/`:
//! CONFIG, PUBLISHED_PORTS, CONNTRACK, COUNTERS and the pinned links. This is what the
//! operator commands (and the daemon's GC) work on.
//!
//! Maps are opened per call through the typed handles of [`super::maps`], which check
//! the key and value sizes this build expects, so a map left by another layout is
//! reported, never misread.

use std::{
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::maps::MapError;
use aya_obj::generated::{bpf_attach_type, bpf_link_type};
use netfast_common::{
    Backend, Counter, CtEntry, CtTuple, DatapathConfig, PublishKey,
    names::{
        LINK_CONTAINER_INGRESS_PREFIX, LINK_UPLINK_INGRESS_FALLBACK, MAP_CONFIG, MAP_CONNTRACK,
        MAP_CONNTRACK_UNASSURED, MAP_COUNTERS, MAP_ENDPOINTS, MAP_FRAGMENTS, MAP_HOST_ADDRS,
        MAP_HOST_LOCAL_REVERSE, MAP_PUBLISHED_PORTS, PIN_ROOT, PROG_CONTAINER_INGRESS_TC,
        PROG_HOST_CONNECT4, PROG_HOST_GETPEERNAME4, PROG_HOST_RECVMSG4, PROG_HOST_SENDMSG4,
        PROG_UPLINK_EGRESS_TC, PROG_UPLINK_INGRESS_TC, PROG_UPLINK_INGRESS_XDP,
    },
    proto,
};

use super::{
    DatapathError,
    link_info::link_info,
    maps::{
        self, ConfigMap, ConntrackMap, EndpointsMap, FragmentsMap, HostAddrsMap,
        HostLocalReverseMap, PublishedPorts,
    },
    pins::{INSTANCE_NAME_FIX, LINK_NAMES, container_links, instance_name_problem},
    tc_netlink::{TcFilter, TcFilters},
};
use crate::{
    conntrack::{Flow, FlowFilter, Table, hairpin_partners},
    host::{cgroup, netlink::xdp_mode},
    publish::{self, AllowedBackends, PortMappings, Protocol, PublishSpec},
};

#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    #[error("instance name {name:?} {why}; {INSTANCE_NAME_FIX}")]
    BadName { name: String, why: String },
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
    /// A host port another instance's host-local programs take for the same
    /// processes; refused before any map changed. The text names both and the fix.
    #[error("{0}")]
    HostPortTaken(String),
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
                | PinnedError::HostPortTaken(_)
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
    /// The pin's file name, e.g. `link_uplink_ingress`, or `link_container_<veth>`
    /// for `container_ingress_tc` on a container's host-side veth.
    pub pin: String,
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
    /// tcx: "ingress"/"egress"; xdp: "ingress"; cgroup: "connect4", "sendmsg4",
    /// "recvmsg4" or "getpeername4".
    pub hook: &'static str,
    /// cgroup links: the cgroup2 directory; None when no directory under the cgroup2
    /// mount has the link's cgroup id (the cgroup was removed).
    pub cgroup: Option<String>,
    /// cgroup links: the kernel's id of their cgroup (0 once the kernel detached them
    /// from a removed cgroup); None for other links.
    pub cgroup_id: Option<u64>,
    /// xdp: "native", "skb" or "hw" when netlink tells; tcx: None.
    pub mode: Option<&'static str>,
    /// A netlink TC filter (kind "tc") standing in for a tcx link: its priority and
    /// handle. None for links.
    pub netlink: Option<NetlinkTc>,
}

/// A netlink TC filter of the instance, as recorded and as the kernel has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetlinkTc {
    /// `tc filter show` calls it pref.
    pub priority: u16,
    /// `major << 16 | minor`.
    pub handle: u32,
    /// False when the kernel no longer has the filter (its interface was deleted,
    /// or someone removed it): nothing runs there. None when this command runs in
    /// another network namespace than the filters' and cannot ask.
    pub live: Option<bool>,
}

/// What `publish add` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddReport {
    pub entries: usize,
    /// UDP flows through the new ports that still went to another backend, removed.
    pub udp_flows: usize,
    /// Hairpin SNAT flows chained to those, removed with them ([`Flow::chained_to`]).
    pub hairpin_flows: usize,
}

/// What `publish del` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoveReport {
    pub entries: usize,
    /// DNAT flows (pairs) deleted with `--kill-flows`.
    pub flows: usize,
    /// Without `--kill-flows`: UDP flows still pinned to the removed backend, deleted
    /// ([`Flow::pinned_udp`]).
    pub udp_flows: usize,
    /// Hairpin SNAT flows chained to the deleted DNAT flows, deleted with them
    /// ([`Flow::chained_to`]).
    pub hairpin_flows: usize,
}

/// What a flush deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// The flows asked for.
    pub flows: usize,
    /// Hairpin SNAT flows chained to a DNAT flow among them, deleted too: alone they
    /// translate nothing and hold a SNAT port until they time out.
    pub hairpin: usize,
    /// Entries deleted, of both.
    pub entries: usize,
}

/// An instance's pin directory. Opening checks that it exists; each accessor opens the
/// map it needs, so a long-running caller sees maps replaced by a later `up`.
#[derive(Clone, Debug)]
pub struct PinnedInstance {
    name: String,
    dir: PathBuf,
}

impl PinnedInstance {
    /// Opens instance `name` after checking the name, that its pin directory exists,
    /// and that its maps have this build's layout.
    pub fn open(name: &str) -> Result<Self> {
        if let Some(why) = instance_name_problem(name) {
            return Err(PinnedError::BadName {
                name: name.to_owned(),
                why,
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
        super::layout::check_layout(name, None, None).map_err(PinnedError::Datapath)?;
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

    fn published_ports(&self) -> Result<PublishedPorts> {
        PublishedPorts::open(&self.name, MAP_PUBLISHED_PORTS).map_err(|e| self.datapath_err(e))
    }

    /// The conntrack map of `table`.
    pub fn conntrack(&self, table: Table) -> Result<ConntrackMap> {
        ConntrackMap::open(&self.name, table.map_name()).map_err(|e| self.datapath_err(e))
    }

    /// The CONFIG entry the datapath reads.
    pub fn config(&self) -> Result<DatapathConfig> {
        ConfigMap::open(&self.name)
            .and_then(|c| c.get())
            .map_err(|e| self.datapath_err(e))
    }

    /// Every container endpoint (`ENDPOINTS`), by address.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, netfast_common::Endpoint)>> {
        let mut out: Vec<(Ipv4Addr, netfast_common::Endpoint)> =
            EndpointsMap::open(&self.name, MAP_ENDPOINTS)
                .and_then(|m| m.entries())
                .map_err(|e| self.datapath_err(e))?
                .into_iter()
                .map(|(raw, ep)| (Ipv4Addr::from(raw.to_ne_bytes()), ep))
                .collect();
        out.sort_by_key(|(addr, _)| *addr);
        Ok(out)
    }

    /// Every published port, sorted by protocol, port and address.
    pub fn publishes(&self) -> Result<Vec<(PublishKey, Backend)>> {
        let mut out = self
            .published_ports()?
            .entries()
            .map_err(|e| self.datapath_err(e))?;
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
    pub fn conntrack_entries(&self, table: Table) -> Result<Vec<(CtTuple, CtEntry)>> {
        self.conntrack(table)?
            .entries()
            .map_err(|e| self.datapath_err(e))
    }

    /// Every flow, its halves joined by their reverse tuples: the assured ones, then
    /// those not assured yet.
    pub fn flows(&self) -> Result<Vec<Flow>> {
        let mut flows = Vec::new();
        for table in Table::ALL {
            flows.extend(crate::conntrack::pair_flows_in(
                table,
                self.conntrack_entries(table)?,
            ));
        }
        Ok(flows)
    }

    /// Deletes both halves of each flow; halves already gone are fine. Returns how
    /// many entries were deleted.
    pub fn delete_flows<'a>(&self, flows: impl IntoIterator<Item = &'a Flow>) -> Result<usize> {
        let mut maps = [
            self.conntrack(Table::Assured)?,
            self.conntrack(Table::Unassured)?,
        ];
        let mut deleted = 0;
        for flow in flows {
            let map = &mut maps[flow.table as usize];
            for key in flow.keys() {
                if map.remove(&key).map_err(|e| self.datapath_err(e))? {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes the flows `filter` matches, with the hairpin SNAT flows chained to
    /// them.
    pub fn flush_flows(&self, filter: &FlowFilter) -> Result<Flushed> {
        self.flush_flows_where(|f| f.matches(filter))
    }

    /// Deletes both halves of every flow `doomed` picks, and of every hairpin SNAT
    /// flow chained to one of them ([`Flow::chained_to`]).
    fn flush_flows_where(&self, doomed: impl Fn(&Flow) -> bool) -> Result<Flushed> {
        let (picked, rest): (Vec<Flow>, Vec<Flow>) =
            self.flows()?.into_iter().partition(|f| doomed(f));
        let chained = hairpin_partners(&picked, &rest);
        let entries = self.delete_flows(picked.iter().chain(chained.iter().copied()))?;
        Ok(Flushed {
            flows: picked.len(),
            hairpin: chained.len(),
            entries,
        })
    }

    /// Deletes the UDP flows still pinned to the old backends of changed publishes:
    /// for each `(published key, old backend)`, the UDP DNAT flows that came in through
    /// the key and go to that backend ([`Flow::pinned_udp`]), and the hairpin SNAT
    /// flows chained to them ([`Flow::chained_to`]). Returns, in `stale`'s order, how
    /// many DNAT flows and how many hairpin SNAT flows each pair lost.
    ///
    /// Call it after PUBLISHED_PORTS no longer leads the key to the old backend, never
    /// before: a datagram arriving in between would create the flow to the old
    /// backend again, and it would stay pinned there for as long as its sender sends.
    pub fn remove_pinned_udp_flows(
        &self,
        stale: &[(PublishKey, Backend)],
    ) -> Result<Vec<(usize, usize)>> {
        let mut removed = vec![(0, 0); stale.len()];
        if stale.iter().all(|(k, _)| k.proto != proto::UDP) {
            return Ok(removed);
        }
        let all = self.flows()?;
        let mut doomed: Vec<Flow> = Vec::new();
        for (i, (key, old)) in stale.iter().enumerate() {
            let pinned: Vec<Flow> = all
                .iter()
                .filter(|f| f.pinned_udp(key, old) && !doomed.contains(f))
                .copied()
                .collect();
            let chained = hairpin_partners(&pinned, &all);
            removed[i] = (pinned.len(), chained.len());
            doomed.extend(pinned.iter().chain(chained).copied());
        }
        self.delete_flows(&doomed)?;
        Ok(removed)
    }

    /// `HOST_ADDRS`: what the host-local programs take for the host (with 127.0.0.0/8),
    /// sorted, with the ifindex that held each address at `up` (0: one `up` added).
    pub fn host_addrs(&self) -> Result<Vec<(Ipv4Addr, u32)>> {
        let mut out: Vec<(Ipv4Addr, u32)> = HostAddrsMap::open(&self.name, MAP_HOST_ADDRS)
            .and_then(|m| m.entries())
            .map_err(|e| self.datapath_err(e))?
            .into_iter()
            .map(|(raw, v)| (Ipv4Addr::from(raw.to_ne_bytes()), v.ifindex))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every counter, summed over CPUs, in `Counter::ALL` order.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        maps::read_counters(&self.name).map_err(|e| self.datapath_err(e))
    }

    /// Entries and capacity of every map. Arrays are always full (preallocated);
    /// CONFIG counts as filled once userspace has enabled it.
    pub fn map_fill(&self) -> Result<Vec<MapFill>> {
        let err = |e| self.datapath_err(e);
        let config = self.config()?;
        let published = self.published_ports()?;

        let assured = self.conntrack(Table::Assured)?;
        let unassured = self.conntrack(Table::Unassured)?;
        let fragments = FragmentsMap::open(&self.name, MAP_FRAGMENTS).map_err(err)?;
        let host_addrs = HostAddrsMap::open(&self.name, MAP_HOST_ADDRS).map_err(err)?;
        let reverse = HostLocalReverseMap::open(&self.name, MAP_HOST_LOCAL_REVERSE).map_err(err)?;
        let endpoints = EndpointsMap::open(&self.name, MAP_ENDPOINTS).map_err(err)?;
        let counters_cap = maps::counters_capacity(&self.name).map_err(err)?;
        let fill = |name, kind, entries: usize, capacity| MapFill {
            name,
            kind,
            entries: entries as u32,
            capacity,
        };
        Ok(vec![
            fill(MAP_CONFIG, "array", usize::from(config.enabled != 0), 1),
            fill(
                MAP_PUBLISHED_PORTS,
                "hash",
                published.len(),
                published.capacity(),
            ),
            fill(MAP_CONNTRACK, "lru_hash", assured.len(), assured.capacity()),
            fill(
                MAP_CONNTRACK_UNASSURED,
                "lru_hash",
                unassured.len(),
                unassured.capacity(),
            ),
            fill(
                MAP_FRAGMENTS,
                "lru_hash",
                fragments.len(),
                fragments.capacity(),
            ),
            fill(
                MAP_HOST_ADDRS,
                "hash",
                host_addrs.len(),
                host_addrs.capacity(),
            ),
            fill(
                MAP_HOST_LOCAL_REVERSE,
                "lru_hash",
                reverse.len(),
                reverse.capacity(),
            ),
            fill(MAP_ENDPOINTS, "hash", endpoints.len(), endpoints.capacity()),
            fill(
                MAP_COUNTERS,
                "percpu_array",
                counters_cap as usize,
                counters_cap,
            ),
        ])
    }

    /// Publishes `spec` now, after [`publish::check_add`] against CONFIG and
    /// PUBLISHED_PORTS; `host` is the host namespace's addresses, `containers` the
    /// config's container addresses (None without `--config`). Each entry is inserted
    /// with `BPF_NOEXIST`: if another command inserts one of the ports meanwhile, what
    /// this call inserted is removed again and the conflict reported.
    ///
    /// Once the entries are in, UDP flows through these ports that still go to another
    /// backend are removed (as Docker clears conntrack for a UDP publish), so a sender
    /// with a fixed source port reaches the backend just published. `publish del`
    /// removed them already; this catches any flow created meanwhile.
    pub fn add_publish(
        &self,
        spec: &PublishSpec,
        host: &[Ipv4Addr],
        containers: Option<&[Ipv4Addr]>,
    ) -> Result<AddReport> {
        let _turn = crate::lock::publishes(&self.dir)?;
        let config = self.config()?;
        let mut map = self.published_ports()?;
        let existing = map.entries().map_err(|e| self.datapath_err(e))?;
        let backends = AllowedBackends {
            subnet: masquerade_subnet(&config),
            containers,
            host,
        };
        publish::check_add(spec, host, backends, &PortMappings::new(existing))
            .map_err(PinnedError::Refused)?;
        // Only an instance with host-local access can clash with another's.
        if config.host_netns_cookie != 0
            && let Some(cgroup) = self.host_local_cgroup()?
            && let Some(clash) = host_local_port_holder(
                &self.name,
                config.host_netns_cookie,
                Path::new(&cgroup),
                spec.entries().map(|(k, _)| k),
            )
        {
            return Err(PinnedError::HostPortTaken(format!(
                "publish spec \"{spec}\": {clash}"
            )));
        }
        let mut inserted: Vec<PublishKey> = Vec::new();
        for (key, backend) in spec.entries() {
            let outcome = map.insert_new(key, backend);
            if let Ok(true) = outcome {
                inserted.push(key);
                continue;
            }
            // Undo: a half-published range is worse than none. A failed undo leaves
            // the entry in `publish list`, where the operator sees it.
            for k in &inserted {
                let _ = map.remove(k);
            }
            return Err(match outcome {
                Ok(_) => PinnedError::Refused(format!(
                    "publish spec \"{spec}\": host port {}/{} was published by another command at the same time; \
                     nothing was added, see `netfast publish list`",
                    u16::from_be(key.host_port),
                    spec.protocol
                )),
                Err(e) => self.datapath_err(e),
            });
        }
        let mut report = AddReport {
            entries: inserted.len(),
            ..AddReport::default()
        };
        if spec.protocol == Protocol::Udp {
            // After the inserts: from now on a new flow through these ports goes to
            // the new backend, so what is left on another one is stale.
            let new: Vec<(PublishKey, Backend)> = spec.entries().collect();
            let flushed = self.flush_flows_where(|f| {
                f.proto() == proto::UDP
                    && new
                        .iter()
                        .any(|(k, b)| f.through_publish(k) && !f.goes_to(b))
            })?;
            report.udp_flows = flushed.flows;
            report.hairpin_flows = flushed.hairpin;
        }
        Ok(report)
    }

    /// Unpublishes `spec`, which must match published entries exactly. With
    /// `kill_flows`, the DNAT flows through those ports are deleted too. Otherwise TCP
    /// flows keep working until they close (their conntrack entries carry the
    /// backend), and UDP flows still pinned to the removed backend are deleted, so a
    /// sender with a fixed source port reaches whatever is published there next.
    pub fn remove_publish(&self, spec: &PublishSpec, kill_flows: bool) -> Result<RemoveReport> {
        let _turn = crate::lock::publishes(&self.dir)?;
        let mut map = self.published_ports()?;
        let existing = map.entries().map_err(|e| self.datapath_err(e))?;
        PortMappings::new(existing)
            .check_del(spec)
            .map_err(|why| PinnedError::Refused(format!("publish spec \"{spec}\": {why}")))?;
        let mut report = RemoveReport::default();
        let keys: Vec<PublishKey> = spec.entries().map(|(k, _)| k).collect();
        for key in &keys {
            // Someone else removed it meanwhile: the outcome is the same.
            if map.remove(key).map_err(|e| self.datapath_err(e))? {
                report.entries += 1;
            }
        }
        // The entries are gone first, so no new flow to the old backend can start
        // while the flows are removed.
        if kill_flows {
            let flushed = self.flush_flows_where(|f| keys.iter().any(|k| f.through_publish(k)))?;
            report.flows = flushed.flows;
            report.hairpin_flows = flushed.hairpin;
        } else {
            // check_del made sure these are exactly the removed entries.
            let removed: Vec<(PublishKey, Backend)> = spec.entries().collect();
            for (udp, hairpin) in self.remove_pinned_udp_flows(&removed)? {
                report.udp_flows += udp;
                report.hairpin_flows += hairpin;
            }
        }
        Ok(report)
    }

    /// The cgroup2 directory this instance's host-local programs are attached to;
    /// None when host-local access is off, or its cgroup is gone.
    pub fn host_local_cgroup(&self) -> Result<Option<String>> {
        Ok(self.links()?.into_iter().find_map(|l| l.cgroup))
    }

    /// The pinned links: what is attached where, the uplink's in the order a received
    /// frame meets them (in XDP mode: XDP, the tc fallback behind it, then egress),
    /// then one per container veth, by name.
    pub fn links(&self) -> Result<Vec<LinkStatus>> {
        let mut out = Vec::new();
        let record_error = |source| PinnedError::Link {
            path: super::tc_netlink::record_path(&self.name),
            source,
        };
        let filters = TcFilters::load(&self.name).map_err(record_error)?;
        let here = filters.here().map_err(record_error)?;
        let mut containers = container_links(&self.dir).map_err(|e| self.datapath_err(e))?;
        containers.extend(
            filters
                .filters
                .iter()
                .map(|f| f.pin.clone())
                .filter(|p| p.starts_with(LINK_CONTAINER_INGRESS_PREFIX)),
        );
        containers.sort();
        containers.dedup();
        let pins = LINK_NAMES.iter().map(|p| (*p).to_owned()).chain(containers);
        for pin in pins {
            let path = self.dir.join(&pin);
            if !path.exists() {
                if let Some(f) = filters.get(&pin) {
                    out.push(netlink_status(&pin, f, here).map_err(record_error)?);
                }
                continue;
            }
            let info = link_info(&path).map_err(|source| PinnedError::Link {
                path: path.clone(),
                source,
            })?;
            let (kind, hook) = match info.link_type {
                Some(bpf_link_type::BPF_LINK_TYPE_CGROUP) => (
                    "cgroup".to_owned(),
                    match info.attach_type {
                        Some(bpf_attach_type::BPF_CGROUP_INET4_CONNECT) => "connect4",
                        Some(bpf_attach_type::BPF_CGROUP_UDP4_SENDMSG) => "sendmsg4",
                        Some(bpf_attach_type::BPF_CGROUP_UDP4_RECVMSG) => "recvmsg4",
                        Some(bpf_attach_type::BPF_CGROUP_INET4_GETPEERNAME) => "getpeername4",
                        _ => "?",
                    },
                ),
                Some(bpf_link_type::BPF_LINK_TYPE_TCX) => (
                    "tcx".to_owned(),
                    match info.attach_type {
                        Some(bpf_attach_type::BPF_TCX_INGRESS) => "ingress",
                        Some(bpf_attach_type::BPF_TCX_EGRESS) => "egress",
                        _ => "?",
                    },
                ),
                Some(bpf_link_type::BPF_LINK_TYPE_XDP) => ("xdp".to_owned(), "ingress"),
                _ => (format!("type {}", info.link_type_raw), "?"),
            };
            let interface = (info.ifindex != 0)
                .then(|| nix::net::if_::if_indextoname(info.ifindex).ok())
                .flatten()
                .and_then(|n| n.into_string().ok());
            let cgroup_id = (info.link_type == Some(bpf_link_type::BPF_LINK_TYPE_CGROUP))
                .then_some(info.cgroup_id);
            let cgroup = cgroup_id
                .and_then(cgroup::cgroup_dir)
                .map(|dir| dir.display().to_string());
            let mode = if info.link_type == Some(bpf_link_type::BPF_LINK_TYPE_XDP) {
                xdp_mode(info.ifindex, info.prog_id)
            } else {
                None
            };
            let prog_name = aya::programs::loaded_programs()
                .filter_map(std::result::Result::ok)
                .find(|p| p.id() == info.prog_id)
                .and_then(|p| p.name_as_str().map(|n| full_program_name(n, &kind)));
            out.push(LinkStatus {
                fallback: pin == LINK_UPLINK_INGRESS_FALLBACK,
                pin,
                link_id: info.id,
                prog_id: info.prog_id,
                prog_name,
                kind,
                ifindex: info.ifindex,
                interface,
                hook,
                cgroup,
                cgroup_id,
                mode,
                netlink: None,
            });
        }
        Ok(out)
    }
}

/// The status of the netlink TC filter recorded under `pin`, asked of the kernel when
/// this thread is in the filters' namespace (`here`).
fn netlink_status(pin: &str, f: &TcFilter, here: bool) -> io::Result<LinkStatus> {
    let live = if here { f.live()? } else { None };
    Ok(LinkStatus {
        pin: pin.to_owned(),
        fallback: pin == LINK_UPLINK_INGRESS_FALLBACK,
        link_id: 0,
        prog_id: live.as_ref().and_then(|l| l.prog_id).unwrap_or(0),
        prog_name: Some(f.program.clone()),
        kind: "tc".to_owned(),
        ifindex: f.ifindex,
        interface: Some(f.interface.clone()),
        hook: if f.direction == "egress" {
            "egress"
        } else {
            "ingress"
        },
        cgroup: None,
        cgroup_id: None,
        mode: None,
        netlink: Some(NetlinkTc {
            priority: f.priority,
            handle: f.handle,
            live: here.then_some(live.is_some()),
        }),
    })
}

/// CONFIG's masquerade subnet, if masquerade is on.
fn masquerade_subnet(config: &DatapathConfig) -> Option<ipnet::Ipv4Net> {
    let addr = |raw: u32| Ipv4Addr::from(raw.to_ne_bytes());
    (config.masquerade != 0)
        .then(|| {
            ipnet::Ipv4Net::with_netmask(addr(config.subnet_addr), addr(config.subnet_mask)).ok()
        })
        .flatten()
}

/// The kernel keeps 15 bytes of a program's name; give ours back in full.
fn full_program_name(kernel: &str, kind: &str) -> String {
    let known: &[&str] = match kind {
        "xdp" => &[PROG_UPLINK_INGRESS_XDP],
        "cgroup" => &[
            PROG_HOST_CONNECT4,
            PROG_HOST_SENDMSG4,
            PROG_HOST_RECVMSG4,
            PROG_HOST_GETPEERNAME4,
        ],
        _ => &[
            PROG_UPLINK_INGRESS_TC,
            PROG_UPLINK_EGRESS_TC,
            PROG_CONTAINER_INGRESS_TC,
        ],
    };
    known
        .iter()
        .find(|n| !kernel.is_empty() && n.starts_with(kernel))
        .map_or_else(|| kernel.to_owned(), |n| (*n).to_owned())
}

/// Another instance whose host-local programs act on the sockets `instance`'s would
/// (the same host namespace, by `CONFIG.host_netns_cookie`, and the same cgroup2
/// directory, an ancestor or a descendant: the kernel runs a cgroup's and its
/// ancestors' programs) and that publishes one of `keys`' host ports on an address
/// both take for the host (either on every address, or both on the same one). A host
/// connection to that port would reach whichever instance's programs ran first, so
/// the second mapping is refused. The sentence naming the other instance, the port
/// and the fix; None when there is no such instance. Instances whose pins cannot be
/// read are skipped: this check cannot name them.
pub fn host_local_port_holder(
    instance: &str,
    netns_cookie: u64,
    cgroup: &Path,
    keys: impl Iterator<Item = PublishKey>,
) -> Option<String> {
    if netns_cookie == 0 {
        return None;
    }
    let keys: Vec<PublishKey> = keys.collect();
    let mine = std::fs::canonicalize(cgroup).ok()?;
    let entries = std::fs::read_dir(PIN_ROOT).ok()?;
    entries.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        if name == instance {
            return None;
        }
        let other = PinnedInstance::open(&name).ok()?;
        if other.config().ok()?.host_netns_cookie != netns_cookie {
            return None;
        }
        let theirs = std::fs::canonicalize(other.host_local_cgroup().ok()??).ok()?;
        if !(mine.starts_with(&theirs) || theirs.starts_with(&mine)) {
            return None;
        }
        let published = other.publishes().ok()?;
        let (key, _) = published
            .iter()
            .find(|(k, _)| keys.iter().any(|key| publish::claims_same_port(k, key)))?;
        Some(format!(
            "host port {}/{} is published by instance \"{name}\" too, whose host-local \
             programs act on the same processes (cgroup {}), so a connection from the host \
             would reach whichever instance's programs ran first; pick another host port, or \
             give one instance host-local access on another cgroup",
            u16::from_be(key.host_port),
            publish::protocol_name(key.proto),
            theirs.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            full_program_name("container_ingr", "tcx"),
            "container_ingress_tc"
        );
        assert_eq!(full_program_name("other", "tcx"), "other");
        assert_eq!(
            full_program_name("host_getpeernam", "cgroup"),
            "host_getpeername4"
        );
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
