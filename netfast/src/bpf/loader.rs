//! Loads, attaches and pins the eBPF datapath, and fills CONFIG and PUBLISHED_PORTS.
//!
//! Every function here works in the calling thread's network namespace: interface
//! names are resolved there, and tcx/XDP attach there. Maps and links are pinned
//! under `/sys/fs/bpf/netfast/<instance>/`, so the datapath outlives this process.

use std::{
    fs, io,
    net::Ipv4Addr,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, ProgramArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr, LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcError, qdisc_add_clsact},
        xdp::XdpLink,
    },
};
use aya_obj::generated::bpf_link_type;
use netfast_common::{
    Backend, DatapathConfig, Endpoint, HostAddr, PublishKey,
    layout::LAYOUT_VERSION,
    names::{
        CALL_CONTAINER_HAIRPIN, LINK_HOST_CONNECT4, LINK_HOST_GETPEERNAME4, LINK_HOST_RECVMSG4,
        LINK_HOST_SENDMSG4, LINK_UPLINK_EGRESS, LINK_UPLINK_INGRESS, LINK_UPLINK_INGRESS_FALLBACK,
        MAP_CONFIG, MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED, MAP_CONTAINER_CALLS, MAP_ENDPOINTS,
        MAP_HOST_ADDRS, MAP_META, MAP_PUBLISHED_PORTS, PIN_ROOT, PROG_CONTAINER_HAIRPIN_TC,
        PROG_CONTAINER_INGRESS_TC, PROG_HOST_CONNECT4, PROG_HOST_GETPEERNAME4, PROG_HOST_RECVMSG4,
        PROG_HOST_SENDMSG4, PROG_UPLINK_EGRESS_TC, PROG_UPLINK_INGRESS_TC, PROG_UPLINK_INGRESS_XDP,
        unassured_capacity,
    },
};

use super::{
    DatapathError,
    layout::check_layout,
    link_info::{RawLinkInfo, link_info, update_link},
    maps::conntrack_map_entries,
    object::object,
    pins::{
        HOST_LOCAL_LINK_NAMES, LEGACY_MAP_NAMES, LINK_NAMES, MAP_NAMES, container_link_name,
        container_links, ensure_bpffs, pin_dir, remove_pin,
    },
    prog_load::load_retrying,
    tc_netlink::{Clsact, TcFilter, TcFilters, direction},
};
use crate::host::cgroup::cgroup_id;

/// The host-local programs: (program, hook, link pin), in the order a socket's calls
/// meet them.
pub const HOST_LOCAL_PROGRAMS: [(&str, CgroupSockAddrAttachType, &str); 4] = [
    (
        PROG_HOST_CONNECT4,
        CgroupSockAddrAttachType::Connect4,
        LINK_HOST_CONNECT4,
    ),
    (
        PROG_HOST_SENDMSG4,
        CgroupSockAddrAttachType::UDPSendMsg4,
        LINK_HOST_SENDMSG4,
    ),
    (
        PROG_HOST_RECVMSG4,
        CgroupSockAddrAttachType::UDPRecvMsg4,
        LINK_HOST_RECVMSG4,
    ),
    (
        PROG_HOST_GETPEERNAME4,
        CgroupSockAddrAttachType::GetPeerName4,
        LINK_HOST_GETPEERNAME4,
    ),
];

pub use aya::programs::CgroupSockAddrAttachType;

/// How the attach report and `status` name the tc ingress program behind XDP.
pub const FALLBACK_NOTE: &str = "fallback for XDP";

/// Where the uplink's ingress program attaches (`ingress` in the config, `--ingress`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IngressMode {
    /// tcx on the uplink's ingress.
    #[default]
    Tc,
    /// XDP on the uplink (native mode, falling back to skb mode with a message).
    Xdp,
}

impl IngressMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IngressMode::Tc => "tc",
            IngressMode::Xdp => "xdp",
        }
    }
}

impl std::fmt::Display for IngressMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IngressMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tc" => Ok(IngressMode::Tc),
            "xdp" => Ok(IngressMode::Xdp),
            _ => Err(format!(
                "ingress mode \"{s}\" is unknown; use \"tc\" or \"xdp\""
            )),
        }
    }
}

/// `tc_attach` in the config: how the tc programs attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcAttachMode {
    /// tcx where the kernel has it (Linux 6.6), else netlink TC filters.
    #[default]
    Auto,
    /// tcx links; `up` refuses a kernel without tcx.
    Tcx,
    /// Netlink TC filters on a clsact qdisc, as kernels before 6.6 need.
    Netlink,
}

impl TcAttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TcAttachMode::Auto => "auto",
            TcAttachMode::Tcx => "tcx",
            TcAttachMode::Netlink => "netlink",
        }
    }
}

impl std::fmt::Display for TcAttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TcAttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(TcAttachMode::Auto),
            "tcx" => Ok(TcAttachMode::Tcx),
            "netlink" => Ok(TcAttachMode::Netlink),
            _ => Err(format!(
                "tc attach mode \"{s}\" (tc_attach) is unknown; use \"auto\" (tcx where the \
                 kernel has it, else netlink), \"tcx\" or \"netlink\""
            )),
        }
    }
}

/// How the tc programs attach, resolved against the kernel
/// ([`super::features::Features::tc_attach`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcAttach {
    /// tcx links, pinned under the pin directory.
    #[default]
    Tcx,
    /// Netlink TC filters on a clsact qdisc, recorded in
    /// `/run/netfast/<instance>/tc_filters.json` ([`super::tc_netlink`]).
    Netlink,
}

/// What to attach and what to put in the maps.
#[derive(Clone, Debug)]
pub struct DatapathSpec {
    pub instance: String,
    pub uplink: String,
    pub ingress: IngressMode,
    /// tcx links or netlink TC filters, for every tc program (uplink, the tc program
    /// behind XDP, container veths).
    pub tc_attach: TcAttach,
    pub config: DatapathConfig,
    pub publishes: Vec<(PublishKey, Backend)>,
    /// The containers: `ENDPOINTS` holds exactly these afterwards, and each host-side
    /// veth gets `container_ingress_tc`.
    pub endpoints: Vec<EndpointSpec>,
    /// `CONNTRACK`'s max_entries (`[conntrack] capacity`).
    pub conntrack_capacity: u32,
    /// The config file, named in the migration advice of a layout mismatch.
    pub config_path: Option<PathBuf>,
    /// Host-local access to published ports (`[host_local]`); None detaches it.
    pub host_local: Option<HostLocalSpec>,
}

/// Where the host-local programs attach and what counts as the host for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLocalSpec {
    /// A cgroup2 directory, checked by `up` (`host::cgroup::cgroup2_dir_problem`).
    pub cgroup: PathBuf,
    /// `HOST_ADDRS`: each address of the host with the index of the interface that
    /// holds it (0 for one `up` is about to add). Loopback needs no entry.
    pub addrs: Vec<(Ipv4Addr, u32)>,
}

/// One container as the datapath knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// The host-side veth (`[[container]] veth`), where `container_ingress_tc` attaches.
    pub veth: String,
    /// The container's address: the `ENDPOINTS` key.
    pub addr: std::net::Ipv4Addr,
    pub endpoint: Endpoint,
}

/// How the datapath ended up attached, for the operator.
#[derive(Clone, Debug)]
pub struct AttachReport {
    pub pin_dir: PathBuf,
    /// Human lines such as "uplink_ingress_tc on eth0: tcx ingress, prog id 42".
    pub attachments: Vec<String>,
    /// Links an earlier `up` made that this attach detached: gone from their pins, or
    /// replaced there by a link of another kind or on another cgroup.
    pub detached: Vec<Detached>,
    /// PUBLISHED_PORTS entries this attach removed or pointed at another backend, with the
    /// backend they had: their UDP flows are still pinned to it (see
    /// `PinnedInstance::remove_pinned_udp_flows`).
    pub displaced: Vec<(PublishKey, Backend)>,
    /// XDP mode: Ok when XDP runs native (driver) on the uplink, Err with the kernel's
    /// refusal when it fell back to generic (skb) mode; None in tc mode or when the
    /// link was updated in place (its mode did not change).
    pub xdp_native: Option<Result<(), String>>,
    /// What netfast did to clsact qdiscs it added (removed once unused, or kept).
    pub qdisc_notes: Vec<String>,
}

/// A link an earlier `up` pinned that an attach detached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detached {
    /// The host-local links, which were on the cgroup with this id (0: the kernel
    /// detached them already, their cgroup was removed). Removed when the spec has no
    /// host-local access, moved when it names another cgroup.
    HostLocal { cgroup_id: u64 },
    /// Another link, as a report line: "uplink_ingress_xdp on eth0: xdp, link id 7".
    Link(String),
}

/// What is pinned at each link pin of `dir` now.
fn pinned_links(dir: &Path) -> Result<Vec<(String, RawLinkInfo)>, DatapathError> {
    let mut out = Vec::new();
    let pins = LINK_NAMES
        .iter()
        .map(|p| (*p).to_owned())
        .chain(container_links(dir)?);
    for pin in pins {
        match link_info(&dir.join(&pin)) {
            Ok(info) => out.push((pin, info)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DatapathError::Io {
                    action: format!("reading pinned link {}", dir.join(&pin).display()),
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// The links of `before` that `after` no longer has at their pins, or has replaced
/// by a link of another type (tc and XDP) or on another cgroup. A link re-attached
/// the same way is no change: the report's attach lines say so.
fn detached_links(
    before: &[(String, RawLinkInfo)],
    after: &[(String, RawLinkInfo)],
) -> Vec<Detached> {
    let mut out = Vec::new();
    let mut host_local = None;
    for (pin, old) in before {
        let now = after.iter().find(|(p, _)| p == pin).map(|(_, info)| info);
        let changed = match now {
            None => true,
            Some(new) => new.link_type != old.link_type || new.cgroup_id != old.cgroup_id,
        };
        if !changed {
            continue;
        }
        if HOST_LOCAL_LINK_NAMES.contains(&pin.as_str()) {
            host_local.get_or_insert(old.cgroup_id);
        } else {
            out.push(Detached::Link(describe_link(pin, old)));
        }
    }
    if let Some(cgroup_id) = host_local {
        out.insert(0, Detached::HostLocal { cgroup_id });
    }
    out
}

/// A pinned link as the attach lines name it: program, interface, hook, link id.
fn describe_link(pin: &str, info: &RawLinkInfo) -> String {
    let xdp = info.link_type == Some(bpf_link_type::BPF_LINK_TYPE_XDP);
    let (program, hook) = match pin {
        LINK_UPLINK_INGRESS if xdp => (PROG_UPLINK_INGRESS_XDP, "xdp".to_owned()),
        LINK_UPLINK_INGRESS => (PROG_UPLINK_INGRESS_TC, "tcx ingress".to_owned()),
        LINK_UPLINK_INGRESS_FALLBACK => (
            PROG_UPLINK_INGRESS_TC,
            format!("tcx ingress ({FALLBACK_NOTE})"),
        ),
        LINK_UPLINK_EGRESS => (PROG_UPLINK_EGRESS_TC, "tcx egress".to_owned()),
        _ => (PROG_CONTAINER_INGRESS_TC, "tcx ingress".to_owned()),
    };
    let interface = nix::net::if_::if_indextoname(info.ifindex)
        .ok()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_else(|| format!("ifindex {}", info.ifindex));
    format!("{program} on {interface}: {hook}, link id {}", info.id)
}

/// Loads the programs (reusing pinned maps when present), fills CONFIG and PUBLISHED_PORTS,
/// attaches to `spec.uplink` and pins maps and links. Idempotent: over existing pins
/// the programs are swapped atomically and established flows keep their state.
pub fn attach(spec: &DatapathSpec) -> Result<AttachReport, DatapathError> {
    let object = object()?;
    let uplink_ifindex = nix::net::if_::if_nametoindex(spec.uplink.as_str()).map_err(|_| {
        DatapathError::NoSuchInterface {
            name: spec.uplink.clone(),
        }
    })?;
    let dir = pin_dir(&spec.instance);
    ensure_bpffs(Path::new(PIN_ROOT).parent().unwrap_or(Path::new("/")))?;
    fs::create_dir_all(&dir).map_err(|source| DatapathError::Io {
        action: format!("creating {}", dir.display()),
        source,
    })?;

    // aya reuses whatever is pinned at a map's path without comparing it with the
    // object, so a mismatch must be caught before `load`.
    check_layout(
        &spec.instance,
        Some(spec.conntrack_capacity),
        spec.config_path.as_deref(),
    )?;

    let links_before = pinned_links(&dir)?;
    let mut tc = TcCtx {
        mode: spec.tc_attach,
        instance: &spec.instance,
        filters: TcFilters::load(&spec.instance).map_err(|source| DatapathError::Io {
            action: "reading the netlink TC record".to_owned(),
            source,
        })?,
        detached: Vec::new(),
    };

    let map_paths: Vec<PathBuf> = MAP_NAMES.iter().map(|name| dir.join(name)).collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in MAP_NAMES.iter().zip(&map_paths) {
        loader.map_pin_path(name, path.as_path());
    }
    loader.map_max_entries(
        MAP_CONNTRACK,
        conntrack_map_entries(spec.conntrack_capacity),
    );
    loader.map_max_entries(
        MAP_CONNTRACK_UNASSURED,
        unassured_capacity(spec.conntrack_capacity),
    );
    let mut ebpf = loader.load(object)?;

    write_meta(&mut ebpf)?;
    write_config(
        &mut ebpf,
        &DatapathConfig {
            uplink_ifindex,
            ..spec.config
        },
    )?;
    let displaced = sync_publishes(&mut ebpf, &spec.publishes)?;
    let host_addrs = spec
        .host_local
        .as_ref()
        .map_or(&[][..], |h| h.addrs.as_slice());
    sync_host_addrs(&mut ebpf, host_addrs)?;
    sync_endpoints(&mut ebpf, &spec.endpoints)?;

    let mut attachments = Vec::new();
    let mut xdp_native = None;
    let ingress_link = dir.join(LINK_UPLINK_INGRESS);
    let fallback_link = dir.join(LINK_UPLINK_INGRESS_FALLBACK);
    match spec.ingress {
        IngressMode::Tc => {
            attachments.push(attach_tc(
                &mut ebpf,
                PROG_UPLINK_INGRESS_TC,
                &spec.uplink,
                TcAttachType::Ingress,
                &ingress_link,
                None,
                &mut tc,
            )?);
            // A leftover of XDP mode goes only now. When switching from XDP, the new
            // link was appended behind the fallback and replaced XDP at the primary
            // pin; tcx runs its links in order and ours end the chain (TC_ACT_OK), so
            // the fallback translated every frame until this removal hands over to
            // the new link: no frame goes untranslated. (A netlink TC filter runs
            // after every tcx link, and only when they all say "next", which ours
            // never do: the same hand-over holds between the two kinds.)
            remove_tc(&fallback_link, &mut tc)?;
        }
        IngressMode::Xdp => {
            let (lines, native) = attach_xdp_with_fallback(
                &mut ebpf,
                &spec.uplink,
                &ingress_link,
                &fallback_link,
                &mut tc,
            )?;
            attachments.extend(lines);
            xdp_native = native;
        }
    }
    let egress_link = dir.join(LINK_UPLINK_EGRESS);
    attachments.push(attach_tc(
        &mut ebpf,
        PROG_UPLINK_EGRESS_TC,
        &spec.uplink,
        TcAttachType::Egress,
        &egress_link,
        None,
        &mut tc,
    )?);
    match &spec.host_local {
        Some(host_local) => {
            attachments.extend(attach_host_local(&mut ebpf, &host_local.cgroup, &dir)?);
        }
        None => {
            for link in HOST_LOCAL_LINK_NAMES {
                remove_pin(&dir.join(link))?;
            }
        }
    }
    // Filled before the first container link exists, so that no packet meets an
    // empty slot (`pass_hairpin_unavailable`).
    set_container_calls(&mut ebpf)?;
    for ep in &spec.endpoints {
        attachments.push(attach_tc(
            &mut ebpf,
            PROG_CONTAINER_INGRESS_TC,
            &ep.veth,
            TcAttachType::Ingress,
            &dir.join(container_link_name(&ep.veth)),
            None,
            &mut tc,
        )?);
    }
    // Links of containers the config no longer has (their veths may be gone already,
    // taking the attachment with them; the pin goes either way).
    let wanted: Vec<String> = spec
        .endpoints
        .iter()
        .map(|ep| container_link_name(&ep.veth))
        .collect();
    let recorded: Vec<String> = tc
        .filters
        .filters
        .iter()
        .map(|f| f.pin.clone())
        .filter(|p| p.starts_with(netfast_common::names::LINK_CONTAINER_INGRESS_PREFIX))
        .collect();
    for stale in container_links(&dir)?.into_iter().chain(recorded) {
        if !wanted.contains(&stale) {
            remove_tc(&dir.join(stale), &mut tc)?;
        }
    }
    let qdisc_notes = tc
        .filters
        .remove_unused_clsact()
        .map_err(tc_io("removing clsact qdiscs"))?;
    tc.store()?;
    let mut detached = detached_links(&links_before, &pinned_links(&dir)?);
    detached.extend(tc.detached.into_iter().map(Detached::Link));
    Ok(AttachReport {
        pin_dir: dir,
        attachments,
        detached,
        displaced,
        xdp_native,
        qdisc_notes,
    })
}

/// What every tc attach of one `attach` shares: the mode, and the record of netlink
/// filters with what this run removed from it.
struct TcCtx<'a> {
    mode: TcAttach,
    instance: &'a str,
    filters: TcFilters,
    /// Netlink filters this run deleted, as report lines.
    detached: Vec<String>,
}

impl TcCtx<'_> {
    /// Writes the record: after every change, so a failure half-way leaves a record of
    /// what is attached.
    fn store(&self) -> Result<(), DatapathError> {
        self.filters
            .store(self.instance)
            .map_err(tc_io("writing the netlink TC record"))
    }
}

fn tc_io(action: &str) -> impl FnOnce(io::Error) -> DatapathError + '_ {
    move |source| DatapathError::Io {
        action: action.to_owned(),
        source,
    }
}

/// The file name of a link pin path: the key of the netlink TC record too.
fn pin_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Detaches what is attached under pin `path`: the tcx link pinned there, and the
/// netlink filter recorded under its name.
fn remove_tc(path: &Path, tc: &mut TcCtx) -> Result<(), DatapathError> {
    remove_pin(path)?;
    drop_filter(&pin_name(path), tc)
}

/// Deletes the netlink filter recorded under `pin`, if any, reporting it as detached.
fn drop_filter(pin: &str, tc: &mut TcCtx) -> Result<(), DatapathError> {
    let removed = tc
        .filters
        .remove(pin)
        .map_err(tc_io("removing a netlink TC filter"))?;
    if let Some((filter, live)) = removed {
        if live {
            tc.detached.push(filter.describe());
        }
        tc.store()?;
    }
    Ok(())
}

/// Adds one container to a running instance, leaving every other container as it
/// is: writes its `ENDPOINTS` entry, then attaches `container_ingress_tc` to its
/// host-side veth and pins the link (`link_container_<veth>`). This is a CNI ADD's
/// step; [`attach`] instead makes `ENDPOINTS` hold exactly its spec's containers.
///
/// The instance must be attached already: its maps are reused from their pins, and
/// `CONTAINER_CALLS` holds the hairpin program `attach` put there. Idempotent: a link
/// pinned for this veth is updated in place. Returns the attach report line.
pub fn attach_container(instance: &str, ep: &EndpointSpec) -> Result<String, DatapathError> {
    let object = object()?;
    let dir = pin_dir(instance);
    if !dir.join(MAP_CONTAINER_CALLS).exists() {
        return Err(DatapathError::NotPinned {
            instance: instance.to_owned(),
            path: dir.join(MAP_CONTAINER_CALLS),
        });
    }
    // Any CONNTRACK capacity: the pinned maps are reused as they are.
    check_layout(instance, None, None)?;
    let mut loader = EbpfLoader::new();
    let map_paths: Vec<PathBuf> = MAP_NAMES.iter().map(|name| dir.join(name)).collect();
    for (name, path) in MAP_NAMES.iter().zip(&map_paths) {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(object)?;
    // The entry first: the program looks the container up from its first packet on.
    let map_error = |source| DatapathError::Map {
        name: MAP_ENDPOINTS,
        source,
    };
    let mut map: HashMap<&mut MapData, u32, Endpoint> =
        HashMap::try_from(map_mut(&mut ebpf, MAP_ENDPOINTS)?).map_err(map_error)?;
    map.insert(u32::from_ne_bytes(ep.addr.octets()), ep.endpoint, 0)
        .map_err(map_error)?;
    // The way the instance's uplink programs are attached (tcx or netlink filters).
    let mut tc = TcCtx {
        mode: instance_tc_attach(instance)?,
        instance,
        filters: TcFilters::load(instance).map_err(tc_io("reading the netlink TC record"))?,
        detached: Vec::new(),
    };
    let line = attach_tc(
        &mut ebpf,
        PROG_CONTAINER_INGRESS_TC,
        &ep.veth,
        TcAttachType::Ingress,
        &dir.join(container_link_name(&ep.veth)),
        None,
        &mut tc,
    )?;
    tc.store()?;
    Ok(line)
}

/// How instance `instance`'s tc programs are attached now: netlink filters when its
/// record holds the uplink's egress filter, else tcx links.
pub fn instance_tc_attach(instance: &str) -> Result<TcAttach, DatapathError> {
    let filters = TcFilters::load(instance).map_err(tc_io("reading the netlink TC record"))?;
    Ok(if filters.get(LINK_UPLINK_EGRESS).is_some() {
        TcAttach::Netlink
    } else {
        TcAttach::Tcx
    })
}

/// Takes one container out of a running instance: removes the pin of its veth's
/// `container_ingress_tc` link (which detaches it) and its `ENDPOINTS` entry at
/// `addr`. Missing pins and entries are fine (a CNI DEL may come twice). Returns
/// whether anything was there.
pub fn detach_container(instance: &str, veth: &str, addr: Ipv4Addr) -> Result<bool, DatapathError> {
    let dir = pin_dir(instance);
    let link = dir.join(container_link_name(veth));
    let mut tc = TcCtx {
        mode: instance_tc_attach(instance)?,
        instance,
        filters: TcFilters::load(instance).map_err(tc_io("reading the netlink TC record"))?,
        detached: Vec::new(),
    };
    let mut any = link.exists() || tc.filters.get(&pin_name(&link)).is_some();
    // The tcx link pinned there, or the netlink filter recorded under its name, and
    // the clsact qdisc netfast added on the veth once nothing of netfast is on it.
    remove_tc(&link, &mut tc)?;
    tc.filters
        .remove_unused_clsact()
        .map_err(tc_io("removing clsact qdiscs"))?;
    tc.store()?;
    if dir.join(MAP_ENDPOINTS).exists() {
        let mut map = super::maps::EndpointsMap::open(instance, MAP_ENDPOINTS)?;
        any |= map.remove(&u32::from_ne_bytes(addr.octets()))?;
    }
    Ok(any)
}

/// XDP mode: `uplink_ingress_tc` on tcx ingress at the fallback pin, then XDP at the
/// primary pin; returns both report lines, in the order a frame meets them.
///
/// XDP cannot see `skb->ip_summed`, so it leaves a frame whose L4 checksum holds only
/// the pseudo-header sum (a local sender's CHECKSUM_PARTIAL, e.g. over veth) untouched
/// (`pass_xdp_csum_partial`); the tc program behind it translates that frame with the
/// kernel's checksum helpers. Frames XDP translated find no flow in tc and pass.
///
/// The fallback is attached first, so XDP never defers a frame with nobody behind it.
/// When switching from tc, the old tc link at the primary pin still runs ahead of the
/// new fallback (tcx runs links in order and ours end the chain) until XDP replaces it.
type XdpNative = Option<Result<(), String>>;

fn attach_xdp_with_fallback(
    ebpf: &mut Ebpf,
    uplink: &str,
    ingress_link: &Path,
    fallback_link: &Path,
    tc: &mut TcCtx,
) -> Result<(Vec<String>, XdpNative), DatapathError> {
    let fallback_existed =
        fallback_link.exists() || tc.filters.get(&pin_name(fallback_link)).is_some();
    let fallback = attach_tc(
        ebpf,
        PROG_UPLINK_INGRESS_TC,
        uplink,
        TcAttachType::Ingress,
        fallback_link,
        Some(FALLBACK_NOTE),
        tc,
    )?;
    match attach_xdp(ebpf, uplink, ingress_link) {
        Ok((xdp, native)) => {
            // tc mode's netlink filter at the primary pin goes now that XDP runs ahead
            // of it (the fallback, attached first, has the lower pref and ends the chain).
            drop_filter(&pin_name(ingress_link), tc)?;
            Ok((vec![xdp, fallback], native))
        }
        Err(e) => {
            // Leave the running datapath as it was: a fallback attached by this call
            // goes again. An error removing it would hide the one that matters.
            if !fallback_existed {
                let _ = remove_tc(fallback_link, tc);
            }
            Err(e)
        }
    }
}

/// Removes the instance's pins, which detaches its programs and frees its maps once
/// nothing else holds them, and its netlink TC filters. Missing pins are fine. Returns
/// a line per netlink filter removed and per clsact qdisc removed or kept (one
/// another filter sits on), for `down` to print.
pub fn detach(instance: &str) -> Result<Vec<String>, DatapathError> {
    let dir = pin_dir(instance);
    // Netlink filters first: they keep their programs loaded without any pin.
    let mut filters = TcFilters::load(instance).map_err(tc_io("reading the netlink TC record"))?;
    let pins: Vec<String> = filters.filters.iter().map(|f| f.pin.clone()).collect();
    let mut notes = Vec::new();
    for pin in pins {
        filters
            .remove(&pin)
            .map_err(tc_io("removing a netlink TC filter"))?;
        filters
            .store(instance)
            .map_err(tc_io("writing the netlink TC record"))?;
        notes.push(format!("removed netlink TC filter {pin}"));
    }
    notes.extend(
        filters
            .remove_unused_clsact()
            .map_err(tc_io("removing clsact qdiscs"))?,
    );
    filters
        .store(instance)
        .map_err(tc_io("writing the netlink TC record"))?;
    for link in LINK_NAMES {
        remove_pin(&dir.join(link))?;
    }
    for link in container_links(&dir)? {
        remove_pin(&dir.join(link))?;
    }
    for map in LEGACY_MAP_NAMES.into_iter().chain(MAP_NAMES) {
        remove_pin(&dir.join(map))?;
    }
    match fs::remove_dir(&dir) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(DatapathError::Io {
            action: format!("removing {}", dir.display()),
            source,
        }),
        _ => Ok(notes),
    }
}

/// Removes the instance's host-local link pins, which detaches the programs from their
/// cgroup. Returns whether any was there.
pub fn detach_host_local(instance: &str) -> Result<bool, DatapathError> {
    let dir = pin_dir(instance);
    let mut any = false;
    for link in HOST_LOCAL_LINK_NAMES {
        let path = dir.join(link);
        any |= path.exists();
        remove_pin(&path)?;
    }
    Ok(any)
}

/// Whether the instance has a host-local link pinned.
pub fn host_local_attached(instance: &str) -> bool {
    let dir = pin_dir(instance);
    HOST_LOCAL_LINK_NAMES.iter().any(|l| dir.join(l).exists())
}

/// The id of the program behind the instance's pinned ingress link: aya-log finds
/// the log ring buffer of the programs now attached through it.
pub fn ingress_prog_id(instance: &str) -> Result<u32, DatapathError> {
    let path = pin_dir(instance).join(LINK_UPLINK_INGRESS);
    // Netlink mode: the filter recorded under the pin's name says which program runs.
    if !path.exists()
        && let Ok(filters) = TcFilters::load(instance)
        && let Some(filter) = filters.get(LINK_UPLINK_INGRESS)
        && let Ok(Some(live)) = filter.live()
        && let Some(id) = live.prog_id
    {
        return Ok(id);
    }
    let link_error = |source| DatapathError::Link {
        path: path.clone(),
        source,
    };
    let link = FdLink::from(PinnedLink::from_pin(&path).map_err(link_error)?);
    Ok(link.info().map_err(link_error)?.program_id())
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, DatapathError> {
    ebpf.map_mut(name).ok_or(DatapathError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })
}

fn write_meta(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let map_error = |source| DatapathError::Map {
        name: MAP_META,
        source,
    };
    let mut array: Array<&mut MapData, u64> =
        Array::try_from(map_mut(ebpf, MAP_META)?).map_err(map_error)?;
    array.set(0, LAYOUT_VERSION, 0).map_err(map_error)
}

fn write_config(ebpf: &mut Ebpf, config: &DatapathConfig) -> Result<(), DatapathError> {
    let map_error = |source| DatapathError::Map {
        name: MAP_CONFIG,
        source,
    };
    let mut array: Array<&mut MapData, DatapathConfig> =
        Array::try_from(map_mut(ebpf, MAP_CONFIG)?).map_err(map_error)?;
    array.set(0, config, 0).map_err(map_error)
}

/// Loads `container_hairpin_tc` and puts it in `CONTAINER_CALLS`, where
/// `container_ingress_tc` tail-calls it. One map update swaps the program of an
/// earlier `up` for this one; the pinned array keeps it loaded, with no link of its own.
fn set_container_calls(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let name = PROG_CONTAINER_HAIRPIN_TC;
    let program_error = |source| DatapathError::Program { name, source };
    let program: &mut SchedClassifier = program_mut(ebpf, name)?;
    load_retrying(|| program.load()).map_err(program_error)?;
    let fd = program
        .fd()
        .map_err(program_error)?
        .try_clone()
        .map_err(|source| DatapathError::Io {
            action: format!("duplicating the fd of {name}"),
            source,
        })?;
    let map_error = |source| DatapathError::Map {
        name: MAP_CONTAINER_CALLS,
        source,
    };
    let mut calls: ProgramArray<&mut MapData> =
        ProgramArray::try_from(map_mut(ebpf, MAP_CONTAINER_CALLS)?).map_err(map_error)?;
    calls.set(CALL_CONTAINER_HAIRPIN, &fd, 0).map_err(map_error)
}

/// Makes HOST_ADDRS hold exactly `addrs` (address, ifindex).
fn sync_host_addrs(ebpf: &mut Ebpf, addrs: &[(Ipv4Addr, u32)]) -> Result<(), DatapathError> {
    let map_error = |source| DatapathError::Map {
        name: MAP_HOST_ADDRS,
        source,
    };
    let mut map: HashMap<&mut MapData, u32, HostAddr> =
        HashMap::try_from(map_mut(ebpf, MAP_HOST_ADDRS)?).map_err(map_error)?;
    let wanted: std::collections::HashMap<u32, HostAddr> = addrs
        .iter()
        .map(|(addr, ifindex)| {
            (
                u32::from_ne_bytes(addr.octets()),
                HostAddr { ifindex: *ifindex },
            )
        })
        .collect();
    let stale: Vec<u32> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.contains_key(k))
        .collect();
    for key in &stale {
        map.remove(key).map_err(map_error)?;
    }
    for (key, value) in &wanted {
        map.insert(key, value, 0).map_err(map_error)?;
    }
    Ok(())
}

/// Attaches the host-local programs to the cgroup at `cgroup` and pins their links
/// in `dir`; returns a report line per program.
///
/// A link pinned on the same cgroup is updated in place (`BPF_LINK_UPDATE`), so no
/// socket call meets a gap or both programs. A link pinned on another cgroup (the
/// config moved it) is replaced once the new one is attached: for that moment a
/// process in both cgroups meets both programs, and the second finds the backend's
/// address, which is no publish (`host_local_not_published`).
fn attach_host_local(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    dir: &Path,
) -> Result<Vec<String>, DatapathError> {
    let io_error = |action: String| move |source| DatapathError::Io { action, source };
    let cgroup_dir =
        fs::File::open(cgroup).map_err(io_error(format!("opening cgroup {}", cgroup.display())))?;
    let id = cgroup_id(cgroup).map_err(io_error(format!("reading cgroup {}", cgroup.display())))?;
    let mut lines = Vec::new();
    for (name, _, link_name) in HOST_LOCAL_PROGRAMS {
        let link_path = dir.join(link_name);
        let program_error = |source| DatapathError::Program { name, source };
        let program: &mut CgroupSockAddr = program_mut(ebpf, name)?;
        load_retrying(|| program.load()).map_err(program_error)?;
        let pinned = match link_info(&link_path) {
            Ok(info) => Some(info),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(DatapathError::Io {
                    action: format!("reading pinned link {}", link_path.display()),
                    source,
                });
            }
        };
        let same_cgroup = pinned.is_some_and(|info| {
            info.link_type == Some(bpf_link_type::BPF_LINK_TYPE_CGROUP) && info.cgroup_id == id
        });
        let how = if same_cgroup {
            let fd = program.fd().map_err(program_error)?;
            update_link(&link_path, fd.as_fd()).map_err(io_error(format!(
                "updating pinned link {}",
                link_path.display()
            )))?;
            "updated in place"
        } else {
            let link_id = program
                .attach(&cgroup_dir, CgroupAttachMode::Single)
                .map_err(program_error)?;
            let link = program.take_link(link_id).map_err(program_error)?;
            let attached = if pinned.is_some() {
                Attached::ReplacingOther
            } else {
                Attached::Fresh
            };
            pin_attached(link, &link_path, attached)?;
            "attached"
        };
        let prog_id = program.info().map_err(program_error)?.id();
        lines.push(format!(
            "{name} on cgroup {}: {how}, prog id {prog_id}",
            cgroup.display()
        ));
    }
    Ok(lines)
}

/// Makes PUBLISHED_PORTS hold exactly `publishes`: stale entries go, new ones come. Returns
/// the entries it removed or pointed at another backend, with their old backend.
fn sync_publishes(
    ebpf: &mut Ebpf,
    publishes: &[(PublishKey, Backend)],
) -> Result<Vec<(PublishKey, Backend)>, DatapathError> {
    let map_error = |source| DatapathError::Map {
        name: MAP_PUBLISHED_PORTS,
        source,
    };
    let mut map: HashMap<&mut MapData, PublishKey, Backend> =
        HashMap::try_from(map_mut(ebpf, MAP_PUBLISHED_PORTS)?).map_err(map_error)?;
    let wanted: std::collections::HashMap<PublishKey, Backend> =
        publishes.iter().copied().collect();
    let displaced: Vec<(PublishKey, Backend)> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(key, old)| wanted.get(key) != Some(old))
        .collect();
    for (key, _) in &displaced {
        if !wanted.contains_key(key) {
            map.remove(key).map_err(map_error)?;
        }
    }
    for (key, backend) in publishes {
        map.insert(key, backend, 0).map_err(map_error)?;
    }
    Ok(displaced)
}

/// Makes ENDPOINTS hold exactly `endpoints`: the entries of containers no longer in
/// the config go, the others are written (a re-created veth has a new ifindex).
fn sync_endpoints(ebpf: &mut Ebpf, endpoints: &[EndpointSpec]) -> Result<(), DatapathError> {
    let map_error = |source| DatapathError::Map {
        name: MAP_ENDPOINTS,
        source,
    };
    let mut map: HashMap<&mut MapData, u32, Endpoint> =
        HashMap::try_from(map_mut(ebpf, MAP_ENDPOINTS)?).map_err(map_error)?;
    let wanted: Vec<u32> = endpoints
        .iter()
        .map(|ep| u32::from_ne_bytes(ep.addr.octets()))
        .collect();
    let stale: Vec<u32> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|key| !wanted.contains(key))
        .collect();
    for key in &stale {
        map.remove(key).map_err(map_error)?;
    }
    for (key, ep) in wanted.iter().zip(endpoints) {
        map.insert(key, ep.endpoint, 0).map_err(map_error)?;
    }
    Ok(())
}

/// What bpffs holds at an instance's link pin.
enum PinnedAs<L> {
    Nothing,
    /// A link of the kind about to be attached: it is updated in place.
    Same(L),
    /// A link of the other kind (the instance switched between tc and XDP): it stays
    /// attached until the new link is up, then its pin is replaced.
    Other,
}

/// How the new program got onto the hook, which decides what happens to the pin.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attached {
    /// bpf_link_update on the pinned link: the pin already names the live link.
    InPlace,
    Fresh,
    ReplacingOther,
}

/// Opens the link pinned at `path` without unpinning it, so that a failed attach
/// leaves the running datapath exactly as it was.
fn pinned_link<L: TryFrom<FdLink>>(path: &Path) -> Result<PinnedAs<L>, DatapathError> {
    match PinnedLink::from_pin(path) {
        // Our fd is only an extra reference: the pin keeps the link attached either way.
        Ok(pinned) => Ok(match L::try_from(FdLink::from(pinned)) {
            Ok(link) => PinnedAs::Same(link),
            Err(_) => PinnedAs::Other,
        }),
        Err(LinkError::SyscallError(err)) if err.io_error.kind() == io::ErrorKind::NotFound => {
            Ok(PinnedAs::Nothing)
        }
        Err(source) => Err(DatapathError::Link {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Pins the newly attached `link` at `path`, unless it was updated in place. A link of
/// the other kind pinned there is detached now, by removing its last reference.
fn pin_attached<L>(link: L, path: &Path, attached: Attached) -> Result<(), DatapathError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    if attached == Attached::InPlace {
        return Ok(());
    }
    if attached == Attached::ReplacingOther {
        remove_pin(path)?;
    }
    let fd_link = FdLink::try_from(link).map_err(|source| DatapathError::Link {
        path: path.to_path_buf(),
        source,
    })?;
    fd_link
        .pin(path)
        .map(drop)
        .map_err(|source| DatapathError::Io {
            action: format!("pinning {}", path.display()),
            source: io::Error::other(source),
        })
}

/// The program `name` of the object, as its concrete type.
fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, DatapathError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(DatapathError::Program {
        name,
        source: ProgramError::NotLoaded,
    })?;
    program
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

/// Attaches program `name` on tc of interface `uplink` (the uplink, or a container's
/// host-side veth): a tcx link pinned at `link_path`, or in netlink mode a filter on
/// the clsact qdisc recorded under the pin's name. Returns the report line, with
/// `note` after the hook (e.g. "tcx ingress (fallback for XDP)").
///
/// Switching kinds, the new attachment is made first and the old one removed after:
/// tcx links run before netlink filters, and ours end the chain (TC_ACT_OK), so the
/// old tcx link translates every packet until it goes, or the new tcx link from the
/// moment it exists; no packet meets both or neither.
fn attach_tc(
    ebpf: &mut Ebpf,
    name: &'static str,
    uplink: &str,
    attach_type: TcAttachType,
    link_path: &Path,
    note: Option<&str>,
    tc: &mut TcCtx,
) -> Result<String, DatapathError> {
    let program_error = |source| DatapathError::Program { name, source };
    let program: &mut SchedClassifier = program_mut(ebpf, name)?;
    // One program, many links: `container_ingress_tc` goes on every container veth.
    if program.fd().is_err() {
        load_retrying(|| program.load()).map_err(program_error)?;
    }
    let direction = direction(attach_type);
    let note = note.map(|n| format!(" ({n})")).unwrap_or_default();
    if tc.mode == TcAttach::Netlink {
        let line = attach_netlink(program, name, uplink, attach_type, link_path, tc)?;
        // A tcx link of an earlier `up` goes now that the filter is there.
        remove_pin(link_path)?;
        let id = program.info().map_err(program_error)?.id();
        return Ok(format!(
            "{name} on {uplink}: netlink tc {direction}{note}, {line}, prog id {id}"
        ));
    }
    // An existing tcx link is updated in place: no packet sees a gap or two programs.
    let (link_id, attached) = match pinned_link::<SchedClassifierLink>(link_path)? {
        PinnedAs::Same(old) => (program.attach_to_link(old), Attached::InPlace),
        pinned => (
            program.attach_with_options(
                uplink,
                attach_type,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            ),
            if matches!(pinned, PinnedAs::Other) {
                Attached::ReplacingOther
            } else {
                Attached::Fresh
            },
        ),
    };
    let link_id = link_id.map_err(program_error)?;
    let link = program.take_link(link_id).map_err(program_error)?;
    pin_attached(link, link_path, attached)?;
    // A netlink filter of an earlier `up` goes now that the tcx link runs ahead of it.
    drop_filter(&pin_name(link_path), tc)?;
    let id = program.info().map_err(program_error)?.id();
    Ok(format!(
        "{name} on {uplink}: tcx {direction}{note}, prog id {id}"
    ))
}

/// Netlink mode of [`attach_tc`]: adds the clsact qdisc unless the interface has one
/// (recording that netfast added it), then replaces the program of the filter
/// recorded under the pin when the kernel still has it there, or attaches a new
/// filter (the kernel picks priority and handle). Records the filter; returns
/// "pref P handle H" with how it got there.
fn attach_netlink(
    program: &mut SchedClassifier,
    name: &'static str,
    iface: &str,
    attach_type: TcAttachType,
    link_path: &Path,
    tc: &mut TcCtx,
) -> Result<String, DatapathError> {
    let program_error = |source| DatapathError::Program { name, source };
    let ifindex =
        nix::net::if_::if_nametoindex(iface).map_err(|_| DatapathError::NoSuchInterface {
            name: iface.to_owned(),
        })?;
    match qdisc_add_clsact(iface) {
        Ok(()) => {
            tc.filters.clsact_added.retain(|q| q.ifindex != ifindex);
            tc.filters.clsact_added.push(Clsact {
                interface: iface.to_owned(),
                ifindex,
            });
            tc.store()?;
        }
        // There already (ours from an earlier `up`, or the operator's): keep the record.
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(program_error(ProgramError::from(e))),
    }
    let pin = pin_name(link_path);
    let recorded = tc
        .filters
        .get(&pin)
        .filter(|f| f.ifindex == ifindex && f.direction == direction(attach_type))
        .cloned();
    let live = match &recorded {
        Some(f) => f.live().map_err(tc_io("reading the tc filters"))?,
        None => None,
    };
    let (link_id, how) = match (recorded, live) {
        (Some(f), Some(_)) => {
            let old = SchedClassifierLink::attached(
                iface,
                attach_type,
                f.priority,
                f.handle.into(),
                None,
            )
            .map_err(|source| DatapathError::Io {
                action: format!("finding {iface}"),
                source,
            })?;
            (program.attach_to_link(old), "replaced in place")
        }
        _ => (
            program.attach_with_options(
                iface,
                attach_type,
                TcAttachOptions::Netlink(NlOptions::default()),
            ),
            "new",
        ),
    };
    let link = program
        .take_link(link_id.map_err(program_error)?)
        .map_err(program_error)?;
    let priority = link.priority().map_err(program_error)?;
    let handle = u32::from(link.handle().map_err(program_error)?);
    // The filter must outlive this process, as a pinned link does: dropping aya's
    // link would delete it. It holds no fd, so forgetting it leaks nothing.
    std::mem::forget(link);
    tc.filters
        .put(TcFilter {
            pin,
            interface: iface.to_owned(),
            ifindex,
            direction: direction(attach_type).to_owned(),
            priority,
            handle,
            program: name.to_owned(),
        })
        .map_err(tc_io("recording a netlink TC filter"))?;
    tc.store()?;
    Ok(format!("pref {priority} handle {handle:#x} ({how})"))
}

fn attach_xdp(
    ebpf: &mut Ebpf,
    uplink: &str,
    link_path: &Path,
) -> Result<(String, XdpNative), DatapathError> {
    let name = PROG_UPLINK_INGRESS_XDP;
    let program_error = |source| DatapathError::Program { name, source };
    let program: &mut Xdp = program_mut(ebpf, name)?;
    load_retrying(|| program.load()).map_err(program_error)?;
    let mut native = None;
    let (link_id, attached, mode) = match pinned_link::<XdpLink>(link_path)? {
        PinnedAs::Same(old) => (
            program.attach_to_link(old).map_err(program_error)?,
            Attached::InPlace,
            "updated in place",
        ),
        pinned => {
            let attached = if matches!(pinned, PinnedAs::Other) {
                Attached::ReplacingOther
            } else {
                Attached::Fresh
            };
            match program.attach(uplink, XdpMode::Driver) {
                Ok(id) => {
                    native = Some(Ok(()));
                    (id, attached, "native")
                }
                Err(native_error) => {
                    native = Some(Err(native_error.to_string()));
                    eprintln!(
                        "netfast: native XDP is not available on {uplink} ({native_error}); falling back to generic (skb) mode, which is slower"
                    );
                    let id = program
                        .attach(uplink, XdpMode::Skb)
                        .map_err(program_error)?;
                    (id, attached, "skb")
                }
            }
        }
    };
    let link = program.take_link(link_id).map_err(program_error)?;
    pin_attached(link, link_path, attached)?;
    let id = program.info().map_err(program_error)?.id();
    Ok((
        format!("{name} on {uplink}: xdp {mode}, prog id {id}"),
        native,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: u32, link_type: bpf_link_type, ifindex: u32, cgroup_id: u64) -> RawLinkInfo {
        RawLinkInfo {
            id,
            prog_id: id + 100,
            link_type: Some(link_type),
            link_type_raw: link_type as u32,
            ifindex,
            attach_type: None,
            cgroup_id,
        }
    }

    /// A re-`up` names the links it took away: host-local links dropped or moved to
    /// another cgroup (once, with the old cgroup), a link replaced by one of another
    /// kind, a pin gone; links updated in place or re-attached alike are no change.
    #[test]
    fn detached_links_are_those_gone_or_replaced_by_another_kind() {
        use bpf_link_type::{
            BPF_LINK_TYPE_CGROUP as CG, BPF_LINK_TYPE_TCX as TCX, BPF_LINK_TYPE_XDP as XDP,
        };
        let host_local = |cgroup: u64, first_id: u32| -> Vec<(String, RawLinkInfo)> {
            HOST_LOCAL_LINK_NAMES
                .iter()
                .enumerate()
                .map(|(i, pin)| ((*pin).to_owned(), link(first_id + i as u32, CG, 0, cgroup)))
                .collect()
        };
        let uplink = |ingress: RawLinkInfo| {
            vec![
                (LINK_UPLINK_INGRESS.to_owned(), ingress),
                (LINK_UPLINK_EGRESS.to_owned(), link(2, TCX, 1, 0)),
            ]
        };
        let tc = uplink(link(1, TCX, 1, 0));
        let with_hl = [tc.clone(), host_local(77, 10)].concat();

        // The same again (updated in place): nothing detached.
        assert_eq!(detached_links(&with_hl, &with_hl), vec![]);
        // Re-attached the same way (new link ids): still nothing.
        assert_eq!(
            detached_links(
                &with_hl,
                &[uplink(link(5, TCX, 1, 0)), host_local(77, 20)].concat()
            ),
            vec![]
        );
        // [host_local] dropped: one entry, with the cgroup they were on.
        assert_eq!(
            detached_links(&with_hl, &tc),
            vec![Detached::HostLocal { cgroup_id: 77 }]
        );
        // Moved to another cgroup.
        assert_eq!(
            detached_links(&with_hl, &[tc.clone(), host_local(88, 20)].concat()),
            vec![Detached::HostLocal { cgroup_id: 77 }]
        );
        // tc -> XDP: the tc link at the ingress pin goes; the fallback is new.
        let xdp = [
            uplink(link(6, XDP, 1, 0)),
            vec![(LINK_UPLINK_INGRESS_FALLBACK.to_owned(), link(7, TCX, 1, 0))],
        ]
        .concat();
        assert_eq!(
            detached_links(&tc, &xdp),
            vec![Detached::Link(
                "uplink_ingress_tc on lo: tcx ingress, link id 1".into()
            )]
        );
        // XDP -> tc: XDP and the fallback behind it go.
        assert_eq!(
            detached_links(&xdp, &tc),
            vec![
                Detached::Link("uplink_ingress_xdp on lo: xdp, link id 6".into()),
                Detached::Link(
                    "uplink_ingress_tc on lo: tcx ingress (fallback for XDP), link id 7".into()
                ),
            ]
        );
    }
}
