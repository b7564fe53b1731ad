//! The datapath object embedded in this binary, and the map shapes it defines.

use aya::maps::MapType;

use super::{DatapathError, pins::MAP_NAMES};

/// The datapath object, built by `build.rs` from `netfast-ebpf`.
static DATAPATH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netfast"));

/// The compiled datapath object, for tests and tools that load it themselves.
pub fn object() -> Result<&'static [u8], DatapathError> {
    if DATAPATH_OBJECT.is_empty() {
        return Err(DatapathError::EmptyObject);
    }
    Ok(DATAPATH_OBJECT)
}

/// What a pinned map must look like for this build.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapShape {
    pub map_type: MapType,
    /// Bytes.
    pub key_size: u32,
    /// Bytes.
    pub value_size: u32,
    pub max_entries: u32,
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
pub fn expected_shapes() -> Result<Vec<(&'static str, MapShape)>, DatapathError> {
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
