//! What a pinned link attaches, straight from the kernel (`BPF_OBJ_GET_INFO_BY_FD`).
//!
//! aya 0.14's `LinkInfo` gives the link id, program id and type, but not the per-type
//! part of `struct bpf_link_info` (the interface and the tcx attach type), and keeps
//! the link's fd private. So this opens the pin and asks the kernel itself, with
//! aya-obj's generated `bpf_attr` and `bpf_link_info` as the ABI: no hand-counted
//! offsets or type numbers.

use std::{
    ffi::CString,
    io,
    mem::{size_of, zeroed},
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type};

/// What a link attaches: the fields `status` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawLinkInfo {
    /// Kernel link id.
    pub id: u32,
    /// Id of the program the link runs.
    pub prog_id: u32,
    /// The link's type (`bpf_link_type`), None for a number this aya-obj does not know.
    pub link_type: Option<bpf_link_type>,
    /// The raw type number, for messages about an unknown one.
    pub link_type_raw: u32,
    /// The interface, for XDP and tcx links; 0 otherwise.
    pub ifindex: u32,
    /// tcx: `BPF_TCX_INGRESS` or `BPF_TCX_EGRESS`; cgroup: the hook, such as
    /// `BPF_CGROUP_INET4_CONNECT`.
    pub attach_type: Option<bpf_attach_type>,
    /// cgroup links: the cgroup's id (its cgroup2 directory's inode number); 0
    /// otherwise.
    pub cgroup_id: u64,
}

/// The kernel's answer for the link pinned at `path`.
///
/// Errors: the `bpf(2)` errno (ENOENT when nothing is pinned there, EPERM without
/// CAP_BPF), or InvalidInput for a path with a NUL byte.
pub fn link_info(path: &Path) -> io::Result<RawLinkInfo> {
    let fd = obj_get(path)?;
    // SAFETY: bpf_link_info is plain data; all zeroes is a valid value.
    let mut info: bpf_link_info = unsafe { zeroed() };
    // SAFETY: as above, for the attribute union.
    let mut attr: bpf_attr = unsafe { zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_link_info>() as u32;
    attr.info.info = std::ptr::from_mut(&mut info) as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let link_type = bpf_link_type::try_from(info.type_).ok();
    // SAFETY: the kernel filled the union member that matches `type_`; xdp and tcx
    // both start with the ifindex, and only tcx's and cgroup's attach types are read.
    let (ifindex, attach_type, cgroup_id) = unsafe {
        match link_type {
            Some(bpf_link_type::BPF_LINK_TYPE_XDP) => (info.__bindgen_anon_1.xdp.ifindex, None, 0),
            Some(bpf_link_type::BPF_LINK_TYPE_TCX) => {
                let tcx = info.__bindgen_anon_1.tcx;
                (
                    tcx.ifindex,
                    bpf_attach_type::try_from(tcx.attach_type).ok(),
                    0,
                )
            }
            Some(bpf_link_type::BPF_LINK_TYPE_CGROUP) => {
                let cgroup = info.__bindgen_anon_1.cgroup;
                (
                    0,
                    bpf_attach_type::try_from(cgroup.attach_type).ok(),
                    cgroup.cgroup_id,
                )
            }
            _ => (0, None, 0),
        }
    };
    Ok(RawLinkInfo {
        id: info.id,
        prog_id: info.prog_id,
        link_type,
        link_type_raw: info.type_,
        ifindex,
        attach_type,
        cgroup_id,
    })
}

/// `BPF_LINK_UPDATE`: the link pinned at `path` runs `prog` from now on, with no gap
/// and no moment with both programs attached. For links aya cannot update itself
/// (cgroup links; aya 0.14 updates only tcx and XDP links).
///
/// Errors: the `bpf(2)` errno (ENOENT when nothing is pinned there, EINVAL when
/// `prog` has another type or attach type than the link's).
pub fn update_link(path: &Path, prog: BorrowedFd<'_>) -> io::Result<()> {
    let link = obj_get(path)?;
    // SAFETY: all zeroes is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { zeroed() };
    attr.link_update.link_fd = link.as_raw_fd() as u32;
    attr.link_update.__bindgen_anon_1.new_prog_fd = prog.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// `BPF_OBJ_GET`: a new fd for the object pinned at `path`.
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: all zeroes is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { zeroed() };
    attr.__bindgen_anon_4.pathname = cpath.as_ptr() as u64;
    let fd = bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised bpf_attr filled in for `cmd`; the kernel
    // reads it, and for INFO writes through a pointer to memory we own, within the
    // sizes given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_pin_is_enoent() {
        let err = link_info(Path::new("/sys/fs/bpf/netfast/no-such-instance/link"))
            .expect_err("nothing is pinned there");
        // Without root the kernel may say EPERM first; either way it is the errno.
        assert!(
            matches!(err.raw_os_error(), Some(libc::ENOENT | libc::EPERM)),
            "{err}"
        );
    }

    #[test]
    fn a_nul_in_the_path_is_refused_before_the_syscall() {
        let err = link_info(Path::new("/sys/fs/bpf/a\0b")).expect_err("NUL");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
