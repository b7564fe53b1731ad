//! Advisory locks on directories that live and die with the instance, so they leave
//! nothing behind, and the kernel drops them when the process dies.
//!
//! Changes to an instance's PUBLISHED_PORTS take turns, under a lock on the instance's pin
//! directory (`/sys/fs/bpf/netfast/<instance>`).
//! BPF_NOEXIST only serializes identical keys, so two `publish add` of one port, one
//! on every address and one on a single address, could both pass their checks. The
//! lock makes check-and-insert one step.
//!
//! CNI ADD, DEL, CHECK and GC of an instance take turns under a lock on its container
//! records' directory (`/run/netfast/<instance>/cni`).
//!
//! `netfast run` holds a lock on the instance's state directory
//! (`/run/netfast/<instance>`) for as long as it runs: one daemon per instance.

use std::{fs, io, path::Path};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "instance {instance:?} already has a running `netfast run` (it holds the lock on {path}); stop that one first"
    )]
    DaemonRunning { instance: String, path: String },
    #[error("could not lock {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl LockError {
    /// True when the operator asked for what another process is doing already.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, LockError::DaemonRunning { .. })
    }
}

/// Held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<fs::File>,
}

/// Waits for the publish lock on the instance's `pin_dir`.
pub fn publishes(pin_dir: &Path) -> Result<DirLock, LockError> {
    lock_dir(pin_dir, FlockArg::LockExclusive)
        .map_err(|(path, source)| LockError::Io { path, source })
}

/// Waits for the CNI lock of an instance, on `cni_dir` (`/run/netfast/<instance>/cni`,
/// where its container records live). Runtimes call the CNI plugin in parallel: ADD,
/// DEL, CHECK and GC of one instance take turns under it, so bringing the datapath up
/// and claiming a host port are each one step.
pub fn cni(cni_dir: &Path) -> Result<DirLock, LockError> {
    lock_dir(cni_dir, FlockArg::LockExclusive)
        .map_err(|(path, source)| LockError::Io { path, source })
}

/// Takes the daemon lock on the instance's `state_dir`, or says who holds it.
pub fn daemon(instance: &str, state_dir: &Path) -> Result<DirLock, LockError> {
    lock_dir(state_dir, FlockArg::LockExclusiveNonblock).map_err(|(path, source)| {
        if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
            LockError::DaemonRunning {
                instance: instance.to_owned(),
                path,
            }
        } else {
            LockError::Io { path, source }
        }
    })
}

fn lock_dir(dir: &Path, arg: FlockArg) -> Result<DirLock, (String, io::Error)> {
    let path = dir.display().to_string();
    let file = fs::File::open(dir).map_err(|e| (path.clone(), e))?;
    Flock::lock(file, arg)
        .map(|lock| DirLock { _lock: lock })
        .map_err(|(_, errno)| (path, errno.into()))
}
