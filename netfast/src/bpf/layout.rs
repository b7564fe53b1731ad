//! The layout check: pinned maps written by another build are refused, never misread.

use std::path::Path;

use aya::maps::{Array, MapData, MapInfo};
use netfast_common::{
    layout::LAYOUT_VERSION,
    names::{MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED, MAP_META, unassured_capacity},
};

use super::{
    DatapathError,
    maps::{conntrack_map_entries, open_pinned_map},
    object::{MapShape, expected_shapes},
    pins::{MAP_NAMES, pin_dir},
};

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
            (MAP_CONNTRACK, Some(capacity)) => want.max_entries = conntrack_map_entries(capacity),
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
