//! Opening a pinned map: the one way ([`open_pinned_map`], which checks the key and
//! value sizes), and a typed handle per map, after Cilium's `pkg/maps/*`: each knows
//! its name, its key and value types, and its capacity.
//!
//! Errors are [`DatapathError`]s: `NotPinned` when a pin is missing, `MapLayout` when
//! a size differs from this build's, `Map` when the kernel refuses.

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use std::net::Ipv4Addr;

use netfast_common::{
    Backend, Counter, CtEntry, CtTuple, DatapathConfig, Endpoint, FragEntry, FragKey, HostAddr,
    PublishKey, SockRevEntry, SockRevKey,
    names::{
        MAP_CONFIG, MAP_COUNTERS, MAP_ENDPOINTS, MAP_FRAGMENTS, MAP_HOST_ADDRS,
        MAP_HOST_LOCAL_REVERSE, MAP_PUBLISHED_PORTS,
    },
};

use super::{DatapathError, pins::pin_dir};
use crate::conntrack::Table;

/// `BPF_NOEXIST`: insert only when the key is not there yet.
const BPF_NOEXIST: u64 = 1;

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

/// Opens `name` of `instance` as a typed hash map, with its capacity (entries).
fn open_hash<K: aya::Pod, V: aya::Pod>(
    instance: &str,
    name: &'static str,
) -> Result<(HashMap<MapData, K, V>, u32), DatapathError> {
    let (map, capacity) = open_pinned_map(instance, name, size_of::<K>(), size_of::<V>())?;
    let map = HashMap::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    Ok((map, capacity))
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

/// `PUBLISHED_PORTS`: published host port ([`PublishKey`]) to [`Backend`].
pub struct PublishedPorts {
    map: HashMap<MapData, PublishKey, Backend>,
    capacity: u32,
}

impl PublishedPorts {
    pub fn open(instance: &str) -> Result<Self, DatapathError> {
        let (map, capacity) = open_hash(instance, MAP_PUBLISHED_PORTS)?;
        Ok(Self { map, capacity })
    }

    fn err(source: MapError) -> DatapathError {
        DatapathError::Map {
            name: MAP_PUBLISHED_PORTS,
            source,
        }
    }

    /// Entries the map can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Every entry, sorted by protocol, host port and host address (host order).
    pub fn entries(&self) -> Result<Vec<(PublishKey, Backend)>, DatapathError> {
        let mut out = read_all(&self.map).map_err(Self::err)?;
        out.sort_by_key(|(k, _)| {
            (
                k.proto,
                u16::from_be(k.host_port),
                u32::from_be(k.host_addr),
            )
        });
        Ok(out)
    }

    /// Inserts with `BPF_NOEXIST`: Ok(false) when another command published the key
    /// first.
    pub fn insert_new(&mut self, key: PublishKey, backend: Backend) -> Result<bool, DatapathError> {
        match self.map.insert(key, backend, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(false),
            Err(e) => Err(Self::err(e)),
        }
    }

    /// Removes `key`: Ok(false) when it was gone already.
    pub fn remove(&mut self, key: &PublishKey) -> Result<bool, DatapathError> {
        match self.map.remove(key) {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(false),
            Err(e) => Err(Self::err(e)),
        }
    }
}

/// `CONNTRACK` or `CONNTRACK_UNASSURED` ([`Table`]): ct entries by tuple, both halves of
/// every flow.
pub struct ConntrackMap {
    table: Table,
    map: HashMap<MapData, CtTuple, CtEntry>,
    capacity: u32,
}

impl ConntrackMap {
    pub fn open(instance: &str, table: Table) -> Result<Self, DatapathError> {
        let (map, capacity) = open_hash(instance, table.map_name())?;
        Ok(Self {
            table,
            map,
            capacity,
        })
    }

    fn err(&self) -> impl Fn(MapError) -> DatapathError {
        let name = self.table.map_name();
        move |source| DatapathError::Map { name, source }
    }

    pub fn table(&self) -> Table {
        self.table
    }

    /// Entries the map can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Every ct entry with its tuple.
    pub fn entries(&self) -> Result<Vec<(CtTuple, CtEntry)>, DatapathError> {
        read_all(&self.map).map_err(self.err())
    }

    /// How many entries are in the map now (one walk over the keys).
    pub fn len(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the entry of `tuple`: Ok(false) when it was gone already.
    pub fn remove(&mut self, tuple: &CtTuple) -> Result<bool, DatapathError> {
        match self.map.remove(tuple) {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(false),
            Err(e) => Err(self.err()(e)),
        }
    }
}

/// `FRAGMENTS`: the first fragment's ports, by datagram.
pub struct FragmentsMap {
    map: HashMap<MapData, FragKey, FragEntry>,
    capacity: u32,
}

impl FragmentsMap {
    pub fn open(instance: &str) -> Result<Self, DatapathError> {
        let (map, capacity) = open_hash(instance, MAP_FRAGMENTS)?;
        Ok(Self { map, capacity })
    }

    /// Entries the map can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// How many datagrams are recorded now.
    pub fn len(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `HOST_ADDRS`: the addresses the host-local programs take for the host.
pub struct HostAddrsMap {
    map: HashMap<MapData, u32, HostAddr>,
    capacity: u32,
}

impl HostAddrsMap {
    pub fn open(instance: &str) -> Result<Self, DatapathError> {
        let (map, capacity) = open_hash(instance, MAP_HOST_ADDRS)?;
        Ok(Self { map, capacity })
    }

    /// Entries the map can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Every address (with the ifindex that held it at `up`, 0 for one `up` added),
    /// sorted.
    pub fn entries(&self) -> Result<Vec<(Ipv4Addr, u32)>, DatapathError> {
        let mut out: Vec<(Ipv4Addr, u32)> = read_all(&self.map)
            .map_err(|source| DatapathError::Map {
                name: MAP_HOST_ADDRS,
                source,
            })?
            .into_iter()
            .map(|(raw, v)| (Ipv4Addr::from(raw.to_ne_bytes()), v.ifindex))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// `ENDPOINTS`: container address (network byte order) to [`Endpoint`].
pub struct EndpointsMap {
    map: HashMap<MapData, u32, Endpoint>,
    capacity: u32,
}

impl EndpointsMap {
    pub fn open(instance: &str) -> Result<Self, DatapathError> {
        let (map, capacity) = open_hash(instance, MAP_ENDPOINTS)?;
        Ok(Self { map, capacity })
    }

    /// Entries the map can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Every endpoint, sorted by address.
    pub fn entries(&self) -> Result<Vec<(std::net::Ipv4Addr, Endpoint)>, DatapathError> {
        let mut out = self
            .map
            .iter()
            .map(|entry| {
                entry
                    .map(|(addr, ep)| (std::net::Ipv4Addr::from(addr.to_ne_bytes()), ep))
                    .map_err(|source| DatapathError::Map {
                        name: MAP_ENDPOINTS,
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|(addr, _)| *addr);
        Ok(out)
    }
}

/// `HOST_LOCAL_REVERSE`: what each host-local socket asked for.
pub struct HostLocalReverseMap {
    map: HashMap<MapData, SockRevKey, SockRevEntry>,
    capacity: u32,
}

impl HostLocalReverseMap {
    pub fn open(instance: &str) -> Result<Self, DatapathError> {
        let (map, capacity) = open_hash(instance, MAP_HOST_LOCAL_REVERSE)?;
        Ok(Self { map, capacity })
    }

    /// Entries the map can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// How many sockets are remembered now.
    pub fn len(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `COUNTERS`' capacity: one slot per [`Counter`].
pub fn counters_capacity(instance: &str) -> Result<u32, DatapathError> {
    Ok(open_pinned_map(instance, MAP_COUNTERS, 4, size_of::<u64>())?.1)
}
