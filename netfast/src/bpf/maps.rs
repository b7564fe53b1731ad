//! Opening a pinned map: the one way ([`open_pinned_map`], which checks the key and
//! value sizes), and a typed handle per map, after Cilium's `pkg/maps/*`: each knows
//! its name, its key and value types, and its capacity.
//!
//! Errors are [`DatapathError`]s: `NotPinned` when a pin is missing, `MapLayout` when
//! a size differs from this build's, `Map` when the kernel refuses.

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};

use netfast_common::{
    Backend, Counter, CtEntry, CtTuple, DatapathConfig, Endpoint, FragEntry, FragKey, HostAddr,
    PublishKey, SockRevEntry, SockRevKey,
    names::{MAP_CONFIG, MAP_COUNTERS},
};

use super::{DatapathError, pins::pin_dir};

/// `BPF_NOEXIST`: insert only when the key is not there yet.
const BPF_NOEXIST: u64 = 1;

/// The `max_entries` the kernel gives `CONNTRACK` for `[conntrack] capacity` entries.
/// A per-CPU LRU (`BPF_F_NO_COMMON_LRU`) holds a multiple of the possible CPUs:
/// `htab_map_alloc` rounds up (down at the top of the range). The loader asks for
/// exactly that and the layout check expects it, so the two never disagree.
pub fn conntrack_map_entries(capacity: u32) -> u32 {
    let cpus = aya::util::nr_cpus()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    capacity
        .checked_next_multiple_of(cpus)
        .unwrap_or(capacity - capacity % cpus)
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

/// Whether `e` is the errno `errno` from the kernel.
pub fn is_errno(e: &MapError, errno: i32) -> bool {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(errno),
        MapError::IoError(io) => io.raw_os_error() == Some(errno),
        _ => false,
    }
}

/// Every entry of a hash map; entries deleted between listing and reading (GC, the
/// LRU, another command) are skipped.
fn read_all<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
) -> Result<Vec<(K, V)>, MapError> {
    let mut out = Vec::new();
    for key in map.keys() {
        let key = key?;
        match map.get(&key, 0) {
            Ok(v) => out.push((key, v)),
            Err(MapError::KeyNotFound) => {}
            Err(e) if is_errno(&e, libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// `CONFIG`: the one [`DatapathConfig`] the datapath reads.
pub struct ConfigMap(Array<MapData, DatapathConfig>);

impl ConfigMap {
    pub fn open(instance: &str) -> Result<Self, DatapathError> {
        let (map, _) = open_pinned_map(instance, MAP_CONFIG, 4, size_of::<DatapathConfig>())?;
        Array::try_from(map)
            .map(Self)
            .map_err(|source| DatapathError::Map {
                name: MAP_CONFIG,
                source,
            })
    }

    pub fn get(&self) -> Result<DatapathConfig, DatapathError> {
        self.0.get(&0, 0).map_err(|source| DatapathError::Map {
            name: MAP_CONFIG,
            source,
        })
    }
}

/// One of an instance's pinned hash (or LRU hash) maps, `K` to `V`, opened through
/// [`open_pinned_map`] so its sizes are checked. Every hash map of an instance is one
/// of these; the aliases below name them.
pub struct PinnedHash<K, V> {
    name: &'static str,
    map: HashMap<MapData, K, V>,
    capacity: u32,
}

/// `PUBLISHED_PORTS` (`MAP_PUBLISHED_PORTS`): published host port to backend.
pub type PublishedPorts = PinnedHash<PublishKey, Backend>;
/// `CONNTRACK` or `CONNTRACK_UNASSURED` (`conntrack::Table::map_name`): ct entries by tuple.
pub type ConntrackMap = PinnedHash<CtTuple, CtEntry>;
/// `FRAGMENTS` (`MAP_FRAGMENTS`): the first fragment's ports, by datagram.
pub type FragmentsMap = PinnedHash<FragKey, FragEntry>;
/// `HOST_ADDRS` (`MAP_HOST_ADDRS`): the addresses (network byte order) the
/// host-local programs take for the host.
pub type HostAddrsMap = PinnedHash<u32, HostAddr>;
/// `ENDPOINTS` (`MAP_ENDPOINTS`): container address (network byte order) to
/// [`Endpoint`].
pub type EndpointsMap = PinnedHash<u32, Endpoint>;
/// `HOST_LOCAL_REVERSE` (`MAP_HOST_LOCAL_REVERSE`): what each host-local socket
/// asked for.
pub type HostLocalReverseMap = PinnedHash<SockRevKey, SockRevEntry>;

impl<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod> PinnedHash<K, V> {
    /// Opens map `name` of `instance`.
    pub fn open(instance: &str, name: &'static str) -> Result<Self, DatapathError> {
        let (map, capacity) = open_pinned_map(instance, name, size_of::<K>(), size_of::<V>())?;
        let map = HashMap::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
        Ok(Self {
            name,
            map,
            capacity,
        })
    }

    fn err(&self, source: MapError) -> DatapathError {
        DatapathError::Map {
            name: self.name,
            source,
        }
    }

    /// Entries the map can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// How many entries are in the map now (one walk over the keys).
    pub fn len(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in the kernel's order; entries deleted meanwhile (GC, the LRU,
    /// another command) are skipped.
    pub fn entries(&self) -> Result<Vec<(K, V)>, DatapathError> {
        read_all(&self.map).map_err(|e| self.err(e))
    }

    /// Inserts with `BPF_NOEXIST`: Ok(false) when the key was there first.
    pub fn insert_new(&mut self, key: K, value: V) -> Result<bool, DatapathError> {
        match self.map.insert(key, value, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Removes `key`: Ok(false) when it was gone already.
    pub fn remove(&mut self, key: &K) -> Result<bool, DatapathError> {
        match self.map.remove(key) {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }
}

/// `COUNTERS`' capacity: one slot per [`Counter`].
pub fn counters_capacity(instance: &str) -> Result<u32, DatapathError> {
    Ok(open_pinned_map(instance, MAP_COUNTERS, 4, size_of::<u64>())?.1)
}
