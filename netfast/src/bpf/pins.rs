//! Where an instance lives on bpffs: `/sys/fs/bpf/netfast/<instance>/` holds its maps
//! and links, and the instance name is checked before it becomes a path.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use netfast_common::names::{
    LINK_CONTAINER_INGRESS_PREFIX, LINK_HOST_CONNECT4, LINK_HOST_GETPEERNAME4, LINK_HOST_RECVMSG4,
    LINK_HOST_SENDMSG4, LINK_UPLINK_EGRESS, LINK_UPLINK_INGRESS, LINK_UPLINK_INGRESS_FALLBACK,
    MAP_CONFIG, MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED, MAP_CONTAINER_CALLS, MAP_COUNTERS,
    MAP_ENDPOINTS, MAP_FRAGMENTS, MAP_HOST_ADDRS, MAP_HOST_LOCAL_REVERSE, MAP_META,
    MAP_PUBLISHED_PORTS, PIN_ROOT,
};

use super::DatapathError;

/// The longest instance name, in bytes.
pub const INSTANCE_MAX: usize = 32;

/// Why `name` cannot name an instance (it becomes a directory under [`PIN_ROOT`] and
/// `/run/netfast`), or None: 1 to [`INSTANCE_MAX`] ASCII letters, digits, '-' or '_',
/// starting with a letter or digit. The text reads after the name ("is empty").
pub fn instance_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    if name.len() > INSTANCE_MAX {
        return Some(format!("is {} bytes long", name.len()));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("does not start with a letter or digit".to_owned());
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        .map(|c| format!("contains {c:?}"))
}

/// The fix that goes with [`instance_name_problem`].
pub const INSTANCE_NAME_FIX: &str =
    "use 1 to 32 letters, digits, '-' or '_', starting with a letter or digit, like \"demo\"";

const _: () = assert!(INSTANCE_MAX == 32, "INSTANCE_NAME_FIX names the limit");

/// Every pinned map. META is last: `detach` removes it last, so a half-removed
/// instance still says which layout its remaining maps have.
pub const MAP_NAMES: [&str; 11] = [
    MAP_CONFIG,
    MAP_PUBLISHED_PORTS,
    MAP_CONNTRACK,
    MAP_CONNTRACK_UNASSURED,
    MAP_COUNTERS,
    MAP_FRAGMENTS,
    MAP_HOST_ADDRS,
    MAP_HOST_LOCAL_REVERSE,
    MAP_ENDPOINTS,
    MAP_CONTAINER_CALLS,
    MAP_META,
];
/// Maps earlier layouts pinned under names this build no longer uses: `detach`
/// removes them too, so `down` with this build takes an older instance down whole.
/// `FORWARDS` became `PUBLISHED_PORTS` in layout 8.
pub const LEGACY_MAP_NAMES: [&str; 1] = ["FORWARDS"];
/// The host-local programs' cgroup links (with `[host_local]` only), in the order a
/// socket's calls meet them.
pub const HOST_LOCAL_LINK_NAMES: [&str; 4] = [
    LINK_HOST_CONNECT4,
    LINK_HOST_SENDMSG4,
    LINK_HOST_RECVMSG4,
    LINK_HOST_GETPEERNAME4,
];
/// Every pinned link: the uplink's, in the order a received frame meets them (the
/// fallback exists in XDP mode only), then the host-local ones. `detach` removes them
/// all; `status` lists them in this order.
pub const LINK_NAMES: [&str; 7] = [
    LINK_UPLINK_INGRESS,
    LINK_UPLINK_INGRESS_FALLBACK,
    LINK_UPLINK_EGRESS,
    LINK_HOST_CONNECT4,
    LINK_HOST_SENDMSG4,
    LINK_HOST_RECVMSG4,
    LINK_HOST_GETPEERNAME4,
];
/// The pin name of `container_ingress_tc`'s link on host-side veth `veth`:
/// `link_container_<veth>`.
pub fn container_link_name(veth: &str) -> String {
    format!("{LINK_CONTAINER_INGRESS_PREFIX}{veth}")
}

/// The container links pinned in `dir` (file names, sorted): one per container veth.
pub fn container_links(dir: &Path) -> Result<Vec<String>, DatapathError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DatapathError::Io {
                action: format!("listing {}", dir.display()),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(LINK_CONTAINER_INGRESS_PREFIX))
        .collect();
    names.sort();
    Ok(names)
}

/// bpffs's `statfs` magic number.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// `/sys/fs/bpf/netfast/<instance>`.
pub fn pin_dir(instance: &str) -> PathBuf {
    PathBuf::from(PIN_ROOT).join(instance)
}

/// Whether a bpffs is mounted at `path`.
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Refuses `path` unless a bpffs is mounted there.
pub fn ensure_bpffs(path: &Path) -> Result<(), DatapathError> {
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

/// Removes one pin; a missing one is fine.
pub fn remove_pin(path: &Path) -> Result<(), DatapathError> {
    match fs::remove_file(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(DatapathError::Io {
            action: format!("removing {}", path.display()),
            source,
        }),
        _ => Ok(()),
    }
}
