//! Loads, attaches and pins the eBPF datapath, and reads and writes its maps.
//!
//! Every function here works in the calling thread's network namespace: interface
//! names are resolved there, and tcx/XDP attach there. Maps and links are pinned
//! under `/sys/fs/bpf/netfast/<instance>/`, so the datapath outlives this process.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, MapInfo, MapType, PerCpuArray},
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        tc::TcAttachOptions,
        xdp::XdpLink,
    },
};
use netfast_common::{
    Backend, Counter, DatapathConfig, ForwardKey,
    layout::LAYOUT_VERSION,
    names::{
        LINK_UPLINK_EGRESS, LINK_UPLINK_INGRESS, LINK_UPLINK_INGRESS_FALLBACK, MAP_CONFIG,
        MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED, MAP_COUNTERS, MAP_FORWARDS, MAP_FRAGMENTS,
        MAP_META, PIN_ROOT, PROG_UPLINK_EGRESS_TC, PROG_UPLINK_INGRESS_TC, PROG_UPLINK_INGRESS_XDP,
        unassured_capacity,
    },
};

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

/// The datapath object, built by `build.rs` from `netfast-ebpf`.
static DATAPATH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netfast"));

/// Every pinned map. META is last: `detach` removes it last, so a half-removed
/// instance still says which layout its remaining maps have.
const MAP_NAMES: [&str; 7] = [
    MAP_CONFIG,
    MAP_FORWARDS,
    MAP_CONNTRACK,
    MAP_CONNTRACK_UNASSURED,
    MAP_COUNTERS,
    MAP_FRAGMENTS,
    MAP_META,
];
/// Every pinned link, in the order a received frame meets them (the fallback exists in
/// XDP mode only). `detach` removes them all; `status` lists them in this order.
pub const LINK_NAMES: [&str; 3] = [
    LINK_UPLINK_INGRESS,
    LINK_UPLINK_INGRESS_FALLBACK,
    LINK_UPLINK_EGRESS,
];
/// How the attach report and `status` name the tc ingress program behind XDP.
pub const FALLBACK_NOTE: &str = "fallback for XDP";
/// bpffs's `statfs` magic number.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "this netfast binary carries no datapath: it was built with AYA_BUILD_SKIP; rebuild without it"
    )]
    EmptyObject,
    #[error("{path} is not on a bpffs; mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NoBpffs { path: PathBuf },
    #[error(
        "interface {name:?} does not exist in this network namespace; check `uplink` in the config"
    )]
    NoSuchInterface { name: String },
    #[error(
        "no pinned datapath for instance {instance:?} ({path} is missing); run `netfast up` first"
    )]
    NotPinned { instance: String, path: PathBuf },
    #[error("{action} failed: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("loading the datapath failed (is this root, on a BPF-capable kernel?): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("pinned link {path}: {source}")]
    Link {
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// A pinned map's key or value has another size than this build reads.
    #[error(
        "pinned map {} has {what} size {found} but this netfast expects {expected}: another netfast version made it; \
         run `netfast down` with that version, then `netfast up` with this one",
        path.display()
    )]
    MapLayout {
        path: PathBuf,
        /// "key" or "value".
        what: &'static str,
        /// Bytes.
        found: u32,
        /// Bytes.
        expected: u32,
    },
    /// The pinned maps were made by another build or another capacity. Nothing was
    /// loaded or changed.
    #[error(
        "pinned maps in {} were written by {found}, this build uses {wanted}{}: run `netfast down{}` then `netfast up{}` to recreate them (established flows are dropped)",
        dir.display(),
        detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default(),
        config_arg(config.as_deref()),
        config_arg(config.as_deref()),
    )]
    LayoutMismatch {
        dir: PathBuf,
        /// "layout 1 (no META map)", "layout 7", or "layout 2" when only a size differs.
        found: String,
        wanted: String,
        /// What differs, e.g. "CONNTRACK holds 65536 entries, [conntrack] capacity is 262144".
        detail: Option<String>,
        config: Option<PathBuf>,
    },
    #[error("the datapath object cannot be parsed: {0}")]
    Object(String),
}

fn config_arg(config: Option<&Path>) -> String {
    config
        .map(|c| format!(" --config {}", c.display()))
        .unwrap_or_default()
}

/// What to attach and what to put in the maps.
#[derive(Clone, Debug)]
pub struct DatapathSpec {
    pub instance: String,
    pub uplink: String,
    pub ingress: IngressMode,
    pub config: DatapathConfig,
    pub forwards: Vec<(ForwardKey, Backend)>,
    /// `CONNTRACK`'s max_entries (`[conntrack] capacity`).
    pub conntrack_capacity: u32,
    /// The config file, named in the migration advice of a layout mismatch.
    pub config_path: Option<PathBuf>,
}

/// How the datapath ended up attached, for the operator.
#[derive(Clone, Debug)]
pub struct AttachReport {
    pub pin_dir: PathBuf,
    /// Human lines such as "uplink_ingress_tc on eth0: tcx ingress, prog id 42".
    pub attachments: Vec<String>,
    /// FORWARDS entries this attach removed or pointed at another backend, with the
    /// backend they had: their UDP flows are still pinned to it (see
    /// `PinnedInstance::remove_pinned_udp_flows`).
    pub displaced: Vec<(ForwardKey, Backend)>,
}

/// The compiled datapath object, for tests and tools that load it themselves.
pub fn object() -> Result<&'static [u8], DatapathError> {
    if DATAPATH_OBJECT.is_empty() {
        return Err(DatapathError::EmptyObject);
    }
    Ok(DATAPATH_OBJECT)
}

pub fn pin_dir(instance: &str) -> PathBuf {
    PathBuf::from(PIN_ROOT).join(instance)
}

/// Loads the programs (reusing pinned maps when present), fills CONFIG and FORWARDS,
/// attaches to `spec.uplink` and pins maps and links. Idempotent: over existing pins
/// the programs are swapped atomically and established flows keep their state.
pub fn attach(spec: &DatapathSpec) -> Result<AttachReport, DatapathError> {
    let object = object()?;
    nix::net::if_::if_nametoindex(spec.uplink.as_str()).map_err(|_| {
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

    let map_paths: Vec<PathBuf> = MAP_NAMES.iter().map(|name| dir.join(name)).collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in MAP_NAMES.iter().zip(&map_paths) {
        loader.map_pin_path(name, path.as_path());
    }
    loader.map_max_entries(MAP_CONNTRACK, spec.conntrack_capacity);
    loader.map_max_entries(
        MAP_CONNTRACK_UNASSURED,
        unassured_capacity(spec.conntrack_capacity),
    );
    let mut ebpf = loader.load(object)?;

    write_meta(&mut ebpf)?;
    write_config(&mut ebpf, &spec.config)?;
    let displaced = sync_forwards(&mut ebpf, &spec.forwards)?;

    let mut attachments = Vec::new();
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
            )?);
            // A leftover of XDP mode goes only now. When switching from XDP, the new
            // link was appended behind the fallback and replaced XDP at the primary
            // pin; tcx runs its links in order and ours end the chain (TC_ACT_OK), so
            // the fallback translated every frame until this removal hands over to
            // the new link: no frame goes untranslated.
            remove_pin(&fallback_link)?;
        }
        IngressMode::Xdp => {
            attachments.extend(attach_xdp_with_fallback(
                &mut ebpf,
                &spec.uplink,
                &ingress_link,
                &fallback_link,
            )?);
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
    )?);
    Ok(AttachReport {
        pin_dir: dir,
        attachments,
        displaced,
    })
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
fn attach_xdp_with_fallback(
    ebpf: &mut Ebpf,
    uplink: &str,
    ingress_link: &Path,
    fallback_link: &Path,
) -> Result<Vec<String>, DatapathError> {
    let fallback_existed = fallback_link.exists();
    let fallback = attach_tc(
        ebpf,
        PROG_UPLINK_INGRESS_TC,
        uplink,
        TcAttachType::Ingress,
        fallback_link,
        Some(FALLBACK_NOTE),
    )?;
    match attach_xdp(ebpf, uplink, ingress_link) {
        Ok(xdp) => Ok(vec![xdp, fallback]),
        Err(e) => {
            // Leave the running datapath as it was: a fallback attached by this call
            // goes again. An error removing it would hide the one that matters.
            if !fallback_existed {
                let _ = remove_pin(fallback_link);
            }
            Err(e)
        }
    }
}

/// Removes the instance's pins, which detaches its programs and frees its maps once
/// nothing else holds them. Missing pins are fine.
pub fn detach(instance: &str) -> Result<(), DatapathError> {
    let dir = pin_dir(instance);
    for link in LINK_NAMES {
        remove_pin(&dir.join(link))?;
    }
    for map in MAP_NAMES {
        remove_pin(&dir.join(map))?;
    }
    match fs::remove_dir(&dir) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(DatapathError::Io {
            action: format!("removing {}", dir.display()),
            source,
        }),
        _ => Ok(()),
    }
}

/// What a pinned map must look like for this build.
#[derive(Clone, Copy, Debug, PartialEq)]
struct MapShape {
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} key {} B, value {} B, {} entries",
            self.map_type, self.key_size, self.value_size, self.max_entries
        )
    }
}

/// The shapes of the pinned maps as the embedded object defines them.
fn expected_shapes() -> Result<Vec<(&'static str, MapShape)>, DatapathError> {
    let parsed =
        aya_obj::Object::parse(object()?).map_err(|e| DatapathError::Object(e.to_string()))?;
    MAP_NAMES
        .iter()
        .map(|&name| {
            let map = parsed.maps.get(name).ok_or_else(|| {
                DatapathError::Object(format!("the object defines no map {name}"))
            })?;
            let map_type = aya_obj::generated::bpf_map_type::try_from(map.map_type())
                .ok()
                .and_then(|t| MapType::try_from(t).ok())
                .ok_or_else(|| {
                    DatapathError::Object(format!("map {name} has unknown type {}", map.map_type()))
                })?;
            Ok((
                name,
                MapShape {
                    map_type,
                    key_size: map.key_size(),
                    value_size: map.value_size(),
                    max_entries: map.max_entries(),
                },
            ))
        })
        .collect()
}

/// Refuses pinned maps this build would misread: a `META` layout version other than
/// [`LAYOUT_VERSION`] (or no `META` next to other maps: the issue-2 layout), or a map
/// whose type, key size, value size or entry count differs from the object's.
/// `conntrack_capacity` None accepts any `CONNTRACK` size (readers such as `ct list`);
/// Some is what `up` is about to load. An instance without pins passes. Reads only.
pub fn check_layout(
    instance: &str,
    conntrack_capacity: Option<u32>,
    config: Option<&Path>,
) -> Result<(), DatapathError> {
    let dir = pin_dir(instance);
    let pinned: Vec<&'static str> = MAP_NAMES
        .iter()
        .copied()
        .filter(|name| dir.join(name).exists())
        .collect();
    if pinned.is_empty() {
        return Ok(());
    }
    let mismatch = |found: String, detail: Option<String>| DatapathError::LayoutMismatch {
        dir: dir.clone(),
        found,
        wanted: format!("layout {LAYOUT_VERSION}"),
        detail,
        config: config.map(Path::to_path_buf),
    };
    let found = if pinned.contains(&MAP_META) {
        let version = read_meta(instance)?;
        if version != LAYOUT_VERSION {
            return Err(mismatch(format!("layout {version}"), None));
        }
        format!("layout {version}")
    } else {
        return Err(mismatch(
            "layout 1 (no META map: a build from before layout versioning)".to_owned(),
            None,
        ));
    };
    for (name, mut want) in expected_shapes()? {
        if !pinned.contains(&name) {
            continue;
        }
        let info = MapInfo::from_pin(dir.join(name))
            .map_err(|source| DatapathError::Map { name, source })?;
        let map_type = info
            .map_type()
            .map_err(|source| DatapathError::Map { name, source })?;
        let have = MapShape {
            map_type,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        };
        match (name, conntrack_capacity) {
            (MAP_CONNTRACK, Some(capacity)) => want.max_entries = capacity,
            (MAP_CONNTRACK_UNASSURED, Some(capacity)) => {
                want.max_entries = unassured_capacity(capacity)
            }
            (MAP_CONNTRACK | MAP_CONNTRACK_UNASSURED, None) => want.max_entries = have.max_entries,
            _ => {}
        }
        if have == want {
            continue;
        }
        let only_capacity = MapShape {
            max_entries: want.max_entries,
            ..have
        } == want;
        let conntrack = name == MAP_CONNTRACK || name == MAP_CONNTRACK_UNASSURED;
        let detail = if conntrack && only_capacity {
            format!(
                "{name} holds {} entries, [conntrack] capacity asks for {}; or set capacity = {} to keep the flows",
                have.max_entries, want.max_entries, have.max_entries
            )
        } else {
            format!("{name} is {have}, this build wants {want}")
        };
        return Err(mismatch(found, Some(detail)));
    }
    Ok(())
}

/// The layout version in the instance's pinned `META` map.
pub fn read_meta(instance: &str) -> Result<u64, DatapathError> {
    let map_error = |source| DatapathError::Map {
        name: MAP_META,
        source,
    };
    let array: Array<MapData, u64> =
        Array::try_from(open_pinned_map(instance, MAP_META, 4, size_of::<u64>())?.0)
            .map_err(map_error)?;
    array.get(&0, 0).map_err(map_error)
}

/// Overwrites the layout version in the instance's pinned `META` map. For tests and
/// migrations; `up` writes [`LAYOUT_VERSION`] itself.
pub fn write_meta_pinned(instance: &str, version: u64) -> Result<(), DatapathError> {
    let map_error = |source| DatapathError::Map {
        name: MAP_META,
        source,
    };
    let mut array: Array<MapData, u64> =
        Array::try_from(open_pinned_map(instance, MAP_META, 4, size_of::<u64>())?.0)
            .map_err(map_error)?;
    array.set(0, version, 0).map_err(map_error)
}

/// The id of the program behind the instance's pinned ingress link: aya-log finds
/// the log ring buffer of the programs now attached through it.
pub fn ingress_prog_id(instance: &str) -> Result<u32, DatapathError> {
    let path = pin_dir(instance).join(LINK_UPLINK_INGRESS);
    let link_error = |source| DatapathError::Link {
        path: path.clone(),
        source,
    };
    let link = FdLink::from(PinnedLink::from_pin(&path).map_err(link_error)?);
    Ok(link.info().map_err(link_error)?.program_id())
}

/// Sums every counter over all CPUs.
pub fn read_counters(instance: &str) -> Result<Vec<(Counter, u64)>, DatapathError> {
    let (map, _) = open_pinned_map(instance, MAP_COUNTERS, 4, size_of::<u64>())?;
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(map).map_err(|source| DatapathError::Map {
            name: MAP_COUNTERS,
            source,
        })?;
    Counter::ALL
        .iter()
        .map(|&counter| {
            let per_cpu =
                counters
                    .get(&(counter as u32), 0)
                    .map_err(|source| DatapathError::Map {
                        name: MAP_COUNTERS,
                        source,
                    })?;
            Ok((counter, per_cpu.iter().sum()))
        })
        .collect()
}

/// Opens one of the instance's pinned maps, after checking that its key and value
/// have the sizes this build reads (`key`, `value`, in bytes): the one way every
/// reader opens a pin. Returns the map and its capacity (entries).
///
/// Errors: `NotPinned` when the pin is missing, `MapLayout` when a size differs,
/// `Map` when the kernel refuses the pin.
pub fn open_pinned_map(
    instance: &str,
    name: &'static str,
    key: usize,
    value: usize,
) -> Result<(Map, u32), DatapathError> {
    let path = pin_dir(instance).join(name);
    if !path.exists() {
        return Err(DatapathError::NotPinned {
            instance: instance.to_owned(),
            path,
        });
    }
    let map_error = |source| DatapathError::Map { name, source };
    let data = MapData::from_pin(&path).map_err(map_error)?;
    let info = data.info().map_err(map_error)?;
    for (what, found, expected) in [
        ("key", info.key_size(), key as u32),
        ("value", info.value_size(), value as u32),
    ] {
        if found != expected {
            return Err(DatapathError::MapLayout {
                path,
                what,
                found,
                expected,
            });
        }
    }
    let capacity = info.max_entries();
    Ok((Map::from_map_data(data).map_err(map_error)?, capacity))
}

fn ensure_bpffs(path: &Path) -> Result<(), DatapathError> {
    let stat = nix::sys::statfs::statfs(path).map_err(|errno| DatapathError::Io {
        action: format!("statfs {}", path.display()),
        source: errno.into(),
    })?;
    if stat.filesystem_type().0 as i64 != BPF_FS_MAGIC {
        return Err(DatapathError::NoBpffs {
            path: path.to_path_buf(),
        });
    }
    Ok(())
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

/// Makes FORWARDS hold exactly `forwards`: stale entries go, new ones come. Returns
/// the entries it removed or pointed at another backend, with their old backend.
fn sync_forwards(
    ebpf: &mut Ebpf,
    forwards: &[(ForwardKey, Backend)],
) -> Result<Vec<(ForwardKey, Backend)>, DatapathError> {
    let map_error = |source| DatapathError::Map {
        name: MAP_FORWARDS,
        source,
    };
    let mut map: HashMap<&mut MapData, ForwardKey, Backend> =
        HashMap::try_from(map_mut(ebpf, MAP_FORWARDS)?).map_err(map_error)?;
    let wanted: std::collections::HashMap<ForwardKey, Backend> = forwards.iter().copied().collect();
    let displaced: Vec<(ForwardKey, Backend)> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(key, old)| wanted.get(key) != Some(old))
        .collect();
    for (key, _) in &displaced {
        if !wanted.contains_key(key) {
            map.remove(key).map_err(map_error)?;
        }
    }
    for (key, backend) in forwards {
        map.insert(key, backend, 0).map_err(map_error)?;
    }
    Ok(displaced)
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

/// Attaches program `name` on tcx and pins its link at `link_path`; returns the report
/// line, with `note` after the hook (e.g. "tcx ingress (fallback for XDP)").
fn attach_tc(
    ebpf: &mut Ebpf,
    name: &'static str,
    uplink: &str,
    attach_type: TcAttachType,
    link_path: &Path,
    note: Option<&str>,
) -> Result<String, DatapathError> {
    let program_error = |source| DatapathError::Program { name, source };
    let program: &mut SchedClassifier = program_mut(ebpf, name)?;
    program.load().map_err(program_error)?;
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
    let id = program.info().map_err(program_error)?.id();
    let direction = match attach_type {
        TcAttachType::Ingress => "ingress",
        _ => "egress",
    };
    let note = note.map(|n| format!(" ({n})")).unwrap_or_default();
    Ok(format!(
        "{name} on {uplink}: tcx {direction}{note}, prog id {id}"
    ))
}

fn attach_xdp(ebpf: &mut Ebpf, uplink: &str, link_path: &Path) -> Result<String, DatapathError> {
    let name = PROG_UPLINK_INGRESS_XDP;
    let program_error = |source| DatapathError::Program { name, source };
    let program: &mut Xdp = program_mut(ebpf, name)?;
    program.load().map_err(program_error)?;
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
                Ok(id) => (id, attached, "native"),
                Err(native_error) => {
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
    Ok(format!("{name} on {uplink}: xdp {mode}, prog id {id}"))
}

fn remove_pin(path: &Path) -> Result<(), DatapathError> {
    match fs::remove_file(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(DatapathError::Io {
            action: format!("removing {}", path.display()),
            source,
        }),
        _ => Ok(()),
    }
}
