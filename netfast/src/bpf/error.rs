//! What can go wrong loading, attaching, pinning and reading the datapath.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapError,
    programs::{ProgramError, links::LinkError},
};

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
