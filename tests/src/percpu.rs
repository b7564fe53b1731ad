//! Reads a whole per-CPU array of `u64` in one `BPF_MAP_LOOKUP_BATCH` syscall. aya
//! reads a per-CPU array one key per syscall, which costs more than the program run
//! itself when a test reads every counter around every packet (the fuzz run does
//! that over a million times).

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `enum bpf_cmd`'s BPF_MAP_LOOKUP_BATCH (include/uapi/linux/bpf.h, since 5.6).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`. Its size is what we pass to the kernel,
/// which requires every byte past the last field it knows to be zero; we know them all.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every slot `0..entries` of the per-CPU `u64` array `map`, summed over CPUs.
pub fn sum_per_cpu(map: BorrowedFd<'_>, entries: u32) -> io::Result<Vec<u64>> {
    let cpus = aya::util::nr_cpus()
        .map_err(|(what, err)| io::Error::new(err.kind(), format!("{what}: {err}")))?;
    let slots = entries as usize;
    let mut keys = vec![0u32; slots];
    // A per-CPU value is `round_up(value_size, 8)` bytes per possible CPU: 8 for u64.
    let mut values = vec![0u64; slots * cpus];
    let mut out_batch = 0u32;
    let mut attr = BatchAttr {
        out_batch: &raw mut out_batch as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: entries,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` points at buffers sized for `entries` keys and values, which
    // outlive the call; the kernel writes no more than `count` of each.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &raw mut attr,
            size_of::<BatchAttr>(),
        )
    };
    // ENOENT means "no more entries after these": with `count` = every slot, the
    // kernel may report it together with a full batch.
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOENT) {
            return Err(err);
        }
    }
    if attr.count != entries {
        return Err(io::Error::other(format!(
            "BPF_MAP_LOOKUP_BATCH returned {} of {entries} slots",
            attr.count
        )));
    }
    let mut sums = vec![0u64; slots];
    for (&key, per_cpu) in keys.iter().zip(values.chunks(cpus)) {
        let slot = sums.get_mut(key as usize).ok_or_else(|| {
            io::Error::other(format!(
                "BPF_MAP_LOOKUP_BATCH returned key {key} of {entries}"
            ))
        })?;
        *slot = per_cpu.iter().sum();
    }
    Ok(sums)
}
