//! Named network namespaces, compatible with `ip netns`.
//!
//! A named namespace is a bind mount of a namespace file on `/run/netns/NAME`, exactly as
//! iproute2 makes it, so `ip netns list|exec|del` see what netfast creates and the other
//! way round. `/run/netns` is made a shared mount like iproute2 does, so the names
//! propagate into other mount namespaces.
//!
//! Nothing here changes the network namespace of the process or of the calling thread,
//! except [`enter_current_thread`], which `main` calls before any other thread starts.
//! Work inside a namespace runs on a fresh thread that entered it ([`run_in`]); a netlink
//! socket opened there stays bound to that namespace ([`netlink_in`]).

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
    sys::statfs::{NSFS_MAGIC, statfs},
};

/// Where iproute2 keeps named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "network namespace name {name:?} is invalid: {reason}; use letters, digits, '-', '_' or '.'"
    )]
    InvalidName { name: String, reason: &'static str },
    /// No `/run/netns/NAME`. Callers add what to do, which depends on what the name
    /// was for (a container's namespace `up` makes, the host's it never makes).
    #[error("network namespace {name:?} does not exist (no {NETNS_RUN_DIR}/{name})")]
    NotFound { name: String },
    #[error("could not {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("could not {action} {path}: {error}")]
    Sys {
        action: &'static str,
        path: PathBuf,
        error: Errno,
    },
    #[error("could not enter network namespace {name:?} (setns): {error}")]
    Enter { name: String, error: Errno },
    #[error("could not open a netlink socket in network namespace {name:?}: {error}")]
    Netlink { name: String, error: io::Error },
    #[error("the worker thread for network namespace {name:?} panicked: {message}")]
    ThreadPanicked { name: String, message: String },
    #[error("could not start a worker thread for network namespace {name:?}: {error}")]
    Spawn { name: String, error: io::Error },
    #[error("could not start a runtime for netlink work: {0}")]
    Runtime(io::Error),
}

/// The bind-mount path of a named namespace: `/run/netns/NAME`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Refuses names that would escape `/run/netns` or that `ip netns` cannot handle.
pub fn validate_name(name: &str) -> Result<(), NetnsError> {
    let bad = |reason| {
        Err(NetnsError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name == "." || name == ".." {
        return bad("it is a path component");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return bad("it contains a character other than letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

fn is_nsfs(p: &Path) -> bool {
    statfs(p)
        .map(|s| s.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Whether `/run/netns/NAME` holds a mounted network namespace.
pub fn exists(name: &str) -> bool {
    validate_name(name).is_ok() && is_nsfs(&path(name))
}

/// Names of all namespaces under `/run/netns` (mounted or not).
pub fn list() -> Result<Vec<String>, NetnsError> {
    let dir = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(NetnsError::Io {
                action: "list",
                path: NETNS_RUN_DIR.into(),
                error,
            });
        }
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// A network namespace's identity: the device and inode of its nsfs file, as `stat`
/// on `/proc/thread-self/ns/net` or on a `/run/netns` bind mount gives them.
/// `name` is what it was known as when recorded; it names the namespace in messages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
    /// The `/run/netns` name, or None for the root namespace or an unnamed one.
    pub name: Option<String>,
    /// True for the namespace of PID 1 (the machine's own).
    #[serde(default)]
    pub root: bool,
}

impl NetnsId {
    /// The same namespace, whatever it was called.
    pub fn same(&self, other: &NetnsId) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }

    /// `--netns NAME ` for a command run from elsewhere, empty for the root namespace.
    pub fn netns_arg(&self) -> String {
        match &self.name {
            Some(n) if !self.root => format!("--netns {n} "),
            _ => String::new(),
        }
    }
}

impl std::fmt::Display for NetnsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, self.root) {
            (_, true) => write!(f, "the root network namespace"),
            (Some(n), false) => write!(f, "network namespace {n}"),
            (None, false) => write!(f, "an unnamed network namespace (inode {})", self.ino),
        }
    }
}

/// The device and inode of an nsfs file (dev_t and ino_t are u64 on Linux).
fn nsfs_id(p: &Path) -> Result<(u64, u64), Errno> {
    nix::sys::stat::stat(p).map(|st| (st.st_dev, st.st_ino))
}

fn stat_id(p: &Path) -> Option<(u64, u64)> {
    nsfs_id(p).ok()
}

/// Whether the calling thread's mount namespace is another than PID 1's, the
/// machine's: `ip netns exec`, `unshare -m` and containers make one.
pub fn private_mount_ns() -> bool {
    match (
        stat_id(Path::new("/proc/thread-self/ns/mnt")),
        stat_id(Path::new("/proc/1/ns/mnt")),
    ) {
        (Some(here), Some(machine)) => here != machine,
        _ => false,
    }
}

/// The named network namespace `ip netns exec` runs this process in, when that is how
/// it was started: iproute2 gives the process a mount namespace of its own and
/// mounts a fresh sysfs on `/sys` with the namespace's name as its source, which
/// `/proc/self/mountinfo` shows. None otherwise.
pub fn ip_netns_exec_name() -> Option<String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let source = sys_mount_source(&mountinfo)?;
    (source != "sysfs" && exists(&source)).then_some(source)
}

/// The source of the sysfs mounted on `/sys` last (the one in force), from a
/// `/proc/self/mountinfo` text: `ID PARENT DEV ROOT MOUNTPOINT OPTIONS... - FSTYPE
/// SOURCE SUPEROPTIONS`.
pub fn sys_mount_source(mountinfo: &str) -> Option<String> {
    mountinfo.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mountpoint = left.split_whitespace().nth(4)?;
        let mut right = right.split_whitespace();
        let (fstype, source) = (right.next()?, right.next()?);
        (mountpoint == "/sys" && fstype == "sysfs").then(|| source.to_owned())
    })
}

/// The calling thread's network namespace, with its `/run/netns` name if it has one.
pub fn current() -> Result<NetnsId, NetnsError> {
    let here = Path::new("/proc/thread-self/ns/net");
    let (dev, ino) = nsfs_id(here).map_err(|error| NetnsError::Sys {
        action: "stat",
        path: here.into(),
        error,
    })?;
    Ok(identify(dev, ino))
}

/// Names the namespace `dev`/`ino` as it is known now: its `/run/netns` name, and
/// whether it is the root namespace.
pub fn identify(dev: u64, ino: u64) -> NetnsId {
    let name = list()
        .unwrap_or_default()
        .into_iter()
        .find(|n| is_nsfs(&path(n)) && stat_id(&path(n)) == Some((dev, ino)));
    let root = stat_id(Path::new("/proc/1/ns/net")) == Some((dev, ino));
    NetnsId {
        dev,
        ino,
        name,
        root,
    }
}

/// Whether namespace `id` still exists: a `/run/netns` mount or a process holds it.
/// (A namespace held only by an open file or a socket is not seen.)
pub fn alive(id: &NetnsId) -> bool {
    let wanted = Some((id.dev, id.ino));
    if identify(id.dev, id.ino).name.is_some() || id.root {
        return true;
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return true;
    };
    procs.filter_map(Result::ok).any(|e| {
        e.file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
            && stat_id(&e.path().join("ns/net")) == wanted
    })
}

/// Enters namespace `id` on the calling thread, through its `/run/netns` name or, for
/// the root namespace, PID 1's. Returns false when it has neither (nothing changed).
/// The same caveat as [`enter_current_thread`]: call it before other threads start.
pub fn enter(id: &NetnsId) -> Result<bool, NetnsError> {
    let file = if id.root {
        let p = Path::new("/proc/1/ns/net");
        File::open(p).map_err(|error| NetnsError::Io {
            action: "open",
            path: p.into(),
            error,
        })?
    } else if let Some(name) = &id.name {
        open(name)?
    } else {
        return Ok(false);
    };
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|error| NetnsError::Enter {
        name: id.to_string(),
        error,
    })?;
    Ok(true)
}

/// Makes `/run/netns` exist and be a shared mount point, as `ip netns add` does.
fn prepare_run_dir() -> Result<(), NetnsError> {
    let dir = Path::new(NETNS_RUN_DIR);
    if let Err(error) = fs::create_dir_all(dir) {
        return Err(NetnsError::Io {
            action: "create directory",
            path: dir.into(),
            error,
        });
    }
    let mut bound = false;
    loop {
        match mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            // Not a mount point yet: bind it onto itself, then make that shared.
            Err(Errno::EINVAL) if !bound => {
                mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|error| NetnsError::Sys {
                    action: "bind-mount onto itself",
                    path: dir.into(),
                    error,
                })?;
                bound = true;
            }
            Err(error) => {
                return Err(NetnsError::Sys {
                    action: "make shared",
                    path: dir.into(),
                    error,
                });
            }
        }
    }
}

/// Creates the named namespace. Returns `false` when it already existed (nothing changed).
pub fn create(name: &str) -> Result<bool, NetnsError> {
    validate_name(name)?;
    let target = path(name);
    if is_nsfs(&target) {
        return Ok(false);
    }
    prepare_run_dir()?;
    // The mount point: an empty file, as iproute2 makes it. A leftover file from an
    // interrupted create is reused.
    if let Err(error) = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o000)
        .open(&target)
    {
        return Err(NetnsError::Io {
            action: "create",
            path: target,
            error,
        });
    }
    // unshare(CLONE_NEWNET) on a throwaway thread: only that thread moves into the new
    // namespace, and the bind mount keeps the namespace alive after the thread exits.
    let bind_target = target.clone();
    let result = std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name(format!("netns-create-{name}"))
            .spawn_scoped(s, move || -> Result<(), NetnsError> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|error| NetnsError::Sys {
                    action: "unshare a network namespace for",
                    path: bind_target.clone(),
                    error,
                })?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &bind_target,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|error| NetnsError::Sys {
                    action: "bind-mount the new network namespace on",
                    path: bind_target.clone(),
                    error,
                })
            })
            .map_err(|error| NetnsError::Spawn {
                name: name.to_string(),
                error,
            })?;
        join(name, worker)?
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&target);
        return Err(e);
    }
    Ok(true)
}

/// Deletes the named namespace (like `ip netns del`). Returns `false` when it did not exist.
///
/// The namespace itself goes away once no process and no socket holds it any more.
pub fn delete(name: &str) -> Result<bool, NetnsError> {
    validate_name(name)?;
    let target = path(name);
    if !target.exists() {
        return Ok(false);
    }
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(error) => {
            return Err(NetnsError::Sys {
                action: "unmount",
                path: target,
                error,
            });
        }
    }
    match fs::remove_file(&target) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(NetnsError::Io {
            action: "remove",
            path: target,
            error,
        }),
    }
}

/// Opens the namespace file, for `setns` or for `IFLA_NET_NS_FD`.
pub fn open(name: &str) -> Result<File, NetnsError> {
    validate_name(name)?;
    let target = path(name);
    if !is_nsfs(&target) {
        return Err(NetnsError::NotFound {
            name: name.to_string(),
        });
    }
    File::open(&target).map_err(|error| NetnsError::Io {
        action: "open",
        path: target,
        error,
    })
}

/// Moves the calling thread (only its network namespace) into `name`.
///
/// Threads started afterwards by this thread inherit the namespace. `main` uses this
/// for `--netns` before any other thread or runtime exists.
pub fn enter_current_thread(name: &str) -> Result<(), NetnsError> {
    let file = open(name)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|error| NetnsError::Enter {
        name: name.to_string(),
        error,
    })
}

fn join<T>(name: &str, handle: std::thread::ScopedJoinHandle<'_, T>) -> Result<T, NetnsError> {
    handle.join().map_err(|payload| NetnsError::ThreadPanicked {
        name: name.to_string(),
        message: panic_message(payload.as_ref()),
    })
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs `f` on a fresh thread that entered network namespace `name`, and returns its
/// result. The calling thread's namespace is untouched. Sockets `f` creates stay in
/// `name` after it returns, so `f` may hand them back.
pub fn run_in<F, T>(name: &str, f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let file = open(name)?;
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn_scoped(s, move || -> Result<T, NetnsError> {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|error| NetnsError::Enter {
                    name: name.to_string(),
                    error,
                })?;
                Ok(f())
            })
            .map_err(|error| NetnsError::Spawn {
                name: name.to_string(),
                error,
            })?;
        join(name, worker)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("nfdev-b-host").is_ok());
        assert!(validate_name("a.b_c").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "x\n"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(path("x"), PathBuf::from("/run/netns/x"));
    }

    /// `ip netns exec NAME` mounts a sysfs with source NAME over `/sys`.
    #[test]
    fn the_sysfs_source_names_the_ip_netns_exec_namespace() {
        let machine = "23 27 0:22 / /sys rw,relatime shared:7 - sysfs sysfs rw\n\
                       42 23 0:39 / /sys/fs/bpf rw,relatime shared:8 - bpf bpf rw\n";
        assert_eq!(sys_mount_source(machine).as_deref(), Some("sysfs"));
        let exec = format!("{machine}49 46 0:40 / /sys rw,relatime - sysfs lab-host rw\n");
        assert_eq!(sys_mount_source(&exec).as_deref(), Some("lab-host"));
        assert_eq!(
            sys_mount_source("1 0 0:1 / / rw - ext4 /dev/sda1 rw\n"),
            None
        );
        // Here (no `ip netns exec`): none.
        assert_eq!(ip_netns_exec_name(), None);
    }
}
