//! cgroup v2 and the host namespace's cookie, for the host-local programs.
//!
//! The cgroup sock_addr programs attach to a cgroup2 directory and run for every
//! process in it and below it. Where cgroup2 is mounted differs: `/sys/fs/cgroup` on
//! a unified host, `/sys/fs/cgroup/unified` in hybrid mode (v1 controllers beside
//! it). [`cgroup2_mount`] reads it from `/proc/mounts`, never guesses.

use std::{
    fs, io,
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

/// cgroup2's `statfs` magic number (`CGROUP2_SUPER_MAGIC`).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup2 file system is mounted (none in /proc/mounts); mount one \
         (`{mount}`) or remove [host_local] from the config"
    )]
    NoCgroup2 {
        /// The command that mounts one where this machine's layout wants it.
        mount: String,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "this kernel does not give the host namespace's cookie (SO_NETNS_COOKIE: {source}); \
         host-local access needs Linux 5.14 or later: remove [host_local] from the config"
    )]
    NoNetnsCookie {
        #[source]
        source: io::Error,
    },
}

/// Where the cgroup2 hierarchy is mounted in this mount namespace: the first `cgroup2`
/// entry of `/proc/mounts` (`/sys/fs/cgroup/unified` in hybrid mode).
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    const MOUNTS: &str = "/proc/mounts";
    let text = fs::read_to_string(MOUNTS).map_err(|source| CgroupError::Read {
        path: MOUNTS,
        source,
    })?;
    cgroup2_mount_in(&text).ok_or_else(|| CgroupError::NoCgroup2 {
        mount: mount_command(&text),
    })
}

/// How to mount cgroup2 on a machine that has none: at `/sys/fs/cgroup`, unless
/// cgroup v1 hierarchies live there (legacy mode), where it goes beside them at
/// `/sys/fs/cgroup/unified` as in hybrid mode: mounting over them would hide them.
pub fn mount_command(mounts: &str) -> String {
    let v1_there = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        matches!(
            (fields.next(), fields.next(), fields.next()),
            (Some(_), Some(target), Some("cgroup")) if target.starts_with("/sys/fs/cgroup/")
        )
    });
    if v1_there {
        "mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified".into()
    } else {
        "mount -t cgroup2 none /sys/fs/cgroup".into()
    }
}

/// The mount point of the first cgroup2 line of a `/proc/mounts` text. Spaces in a
/// mount point are octal-escaped there (`\040`).
pub fn cgroup2_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(target.replace("\\040", " ")))
    })
}

/// Why `path` cannot take the host-local programs, or None: it must be a directory on
/// a cgroup2 file system. The text reads after the path ("does not exist").
pub fn cgroup2_dir_problem(path: &Path) -> Option<String> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some("does not exist".into()),
        Err(e) => return Some(format!("cannot be read ({e})")),
    };
    if !meta.is_dir() {
        return Some("is not a directory".into());
    }
    match nix::sys::statfs::statfs(path) {
        Ok(s) if s.filesystem_type().0 == CGROUP2_SUPER_MAGIC => None,
        Ok(_) => Some("is not on a cgroup2 file system".into()),
        Err(e) => Some(format!("cannot be read ({e})")),
    }
}

/// The kernel's id of the cgroup at `path`: on cgroup2 it is the directory's inode
/// number, which is what a cgroup link reports (`bpf_link_info.cgroup.cgroup_id`).
pub fn cgroup_id(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.ino())
}

/// The cgroup2 directory whose id is `id`: a walk of the hierarchy under `mount`,
/// bounded to `limit` directories (None beyond it, or when no directory matches).
pub fn find_cgroup(mount: &Path, id: u64, limit: usize) -> Option<PathBuf> {
    let mut todo = vec![mount.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = todo.pop() {
        seen += 1;
        if seen > limit {
            return None;
        }
        if cgroup_id(&dir).ok() == Some(id) {
            return Some(dir);
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        todo.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    None
}

/// The directory of the cgroup whose id is `id`, found under the cgroup2 mount; None
/// when there is none: the cgroup was removed (a cgroup link whose cgroup is gone
/// reports id 0 once the kernel detached it, its old id until then), or the walk
/// gave up after 100,000 directories.
pub fn cgroup_dir(id: u64) -> Option<PathBuf> {
    if id == 0 {
        return None;
    }
    find_cgroup(&cgroup2_mount().ok()?, id, 100_000)
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`, Linux
/// 5.14): what `bpf_get_netns_cookie` returns for its sockets. Native byte order.
pub fn netns_cookie() -> Result<u64, CgroupError> {
    let no_cookie = |source| CgroupError::NoNetnsCookie { source };
    // An unbound socket: the namespace needs no address (not even lo up) for this.
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(no_cookie(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` is a u64 the kernel writes at most `len` bytes into, and the
    // socket is open for the whole call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(no_cookie(io::Error::last_os_error()));
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_cookie_is_stable_and_not_zero() {
        // Linux 5.14 and later; the machines netfast supports have it.
        let a = netns_cookie().expect("SO_NETNS_COOKIE");
        assert_ne!(a, 0);
        assert_eq!(netns_cookie().expect("SO_NETNS_COOKIE"), a);
    }

    #[test]
    fn the_mount_comes_from_the_cgroup2_line() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            cgroup2_mount_in(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_in("none /my\\040cg cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/my cg"))
        );
        assert_eq!(
            cgroup2_mount_in("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            None
        );
    }

    /// Without cgroup2, the advice never mounts it over cgroup v1 hierarchies.
    #[test]
    fn the_mount_advice_fits_the_machine() {
        let legacy = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(
            mount_command(legacy),
            "mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified"
        );
        assert_eq!(
            mount_command("sysfs /sys sysfs rw 0 0\n"),
            "mount -t cgroup2 none /sys/fs/cgroup"
        );
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup() {
        let problem = cgroup2_dir_problem(Path::new("/proc/self")).expect("procfs");
        assert!(problem.contains("not on a cgroup2"), "{problem}");
        assert_eq!(
            cgroup2_dir_problem(Path::new("/no/such/dir")).as_deref(),
            Some("does not exist")
        );
        assert_eq!(
            cgroup2_dir_problem(Path::new("/proc/self/status")).as_deref(),
            Some("is not a directory")
        );
    }
}
