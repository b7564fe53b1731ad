//! Loads, attaches and pins the eBPF datapath, and reads and writes its maps.
//!
//! Every function here works in the calling thread's network namespace: interface
//! names and indexes are looked up there, and tcx/XDP attach there.
//! TODO(lead): implementation. The signatures are the contract.

use std::path::PathBuf;

use netfast_common::{Backend, Counter, DatapathConfig, ForwardKey, names::PIN_ROOT};

use crate::config::IngressMode;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("the datapath is not implemented yet")]
    NotImplemented,
}

/// What to attach and what to put in the maps.
#[derive(Clone, Debug)]
pub struct DatapathSpec {
    pub instance: String,
    pub uplink: String,
    pub ingress: IngressMode,
    pub config: DatapathConfig,
    pub forwards: Vec<(ForwardKey, Backend)>,
}

/// How the datapath ended up attached, for the operator.
#[derive(Clone, Debug)]
pub struct AttachReport {
    pub pin_dir: PathBuf,
    /// Human lines such as "uplink_ingress_tc on eth0 (tcx ingress, prog id 42)".
    pub attachments: Vec<String>,
}

pub fn pin_dir(instance: &str) -> PathBuf {
    PathBuf::from(PIN_ROOT).join(instance)
}

/// Loads the programs (reusing pinned maps when present), fills CONFIG and FORWARDS,
/// attaches to `spec.uplink` and pins maps and links. Idempotent.
pub fn attach(spec: &DatapathSpec) -> Result<AttachReport, DatapathError> {
    let _ = spec;
    Err(DatapathError::NotImplemented)
}

/// Removes the instance's pins, which detaches its programs. Missing pins are fine.
pub fn detach(instance: &str) -> Result<(), DatapathError> {
    let _ = instance;
    Err(DatapathError::NotImplemented)
}

/// Sums every counter over all CPUs.
pub fn read_counters(instance: &str) -> Result<Vec<(Counter, u64)>, DatapathError> {
    let _ = instance;
    Err(DatapathError::NotImplemented)
}
