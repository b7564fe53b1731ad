//! Changes to an instance's FORWARDS take turns, under an advisory lock on the
//! instance's pin directory (`/sys/fs/bpf/netfast/<instance>`).
//!
//! BPF_NOEXIST only serializes identical keys, so two `forward add` of one port, one
//! on every address and one on a single address, could both pass their checks. The
//! lock makes check-and-insert one step. It lives and dies with the pins, so it
//! leaves nothing behind, and the kernel drops it when the process dies.

use std::{fs, io, path::Path};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
#[error("could not lock {path}: {source}")]
pub struct LockError {
    pub path: String,
    #[source]
    pub source: io::Error,
}

/// Held until dropped.
#[derive(Debug)]
pub struct ForwardsLock {
    _lock: Flock<fs::File>,
}

/// Waits for the lock on `pin_dir`.
pub fn forwards(pin_dir: &Path) -> Result<ForwardsLock, LockError> {
    let error = |source| LockError {
        path: pin_dir.display().to_string(),
        source,
    };
    let dir = fs::File::open(pin_dir).map_err(error)?;
    Flock::lock(dir, FlockArg::LockExclusive)
        .map(|lock| ForwardsLock { _lock: lock })
        .map_err(|(_, errno)| error(errno.into()))
}
