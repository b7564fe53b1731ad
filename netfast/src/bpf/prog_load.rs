//! `BPF_PROG_LOAD`, tried again when the verifier was interrupted.
//!
//! The verifier gives up with `EAGAIN` whenever a signal is pending for the loading
//! thread (kernel `do_check`: `if (signal_pending(current)) return -EAGAIN;`), even a
//! signal the process then ignores. A child that exits while the thread that spawned
//! it still has every signal blocked (glibc's `posix_spawn` does that around `clone`)
//! queues its SIGCHLD for the whole process, and the kernel wakes whichever thread
//! does not block it: in a multithreaded loader, possibly the one in the verifier,
//! which spends seconds on `container_hairpin_tc`. libbpf retries the load for the
//! same reason (`PROG_LOAD_ATTEMPTS`, 5); aya 0.14 does not, so every load goes
//! through [`load_retrying`].

use std::io;

use aya::programs::ProgramError;

/// How many times [`load_retrying`] calls `BPF_PROG_LOAD` before it returns the
/// `EAGAIN`: libbpf's `PROG_LOAD_ATTEMPTS`.
pub const PROG_LOAD_ATTEMPTS: usize = 5;

/// Runs `load` (a program's `load()`, or aya's `is_helper_supported` probe) until it
/// succeeds, fails with anything but the verifier's `EAGAIN`, or has been tried
/// [`PROG_LOAD_ATTEMPTS`] times.
///
/// # Errors
/// The last attempt's error, unchanged.
pub fn load_retrying<T>(load: impl FnMut() -> Result<T, ProgramError>) -> Result<T, ProgramError> {
    retry(load, interrupted)
}

/// [`load_retrying`] for a raw `BPF_PROG_LOAD` (`load` returns the syscall's result),
/// such as the feature probes' two-instruction programs.
///
/// # Errors
/// The last attempt's error, unchanged.
pub fn syscall_retrying<T>(load: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    retry(load, |err| err.raw_os_error() == Some(libc::EAGAIN))
}

fn retry<T, E>(
    mut load: impl FnMut() -> Result<T, E>,
    interrupted: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(err) if interrupted(&err) && attempt < PROG_LOAD_ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}

/// Whether the verifier stopped because a signal was pending, not because of the
/// program: `EAGAIN` from a program's load, or from a helper probe's (which aya
/// reports as the syscall's error when the verifier wrote no log).
fn interrupted(err: &ProgramError) -> bool {
    let io_error = match err {
        ProgramError::LoadError { io_error, .. } => io_error,
        ProgramError::SyscallError(e) => &e.io_error,
        _ => return false,
    };
    io_error.raw_os_error() == Some(libc::EAGAIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_error(errno: i32) -> ProgramError {
        ProgramError::LoadError {
            io_error: io::Error::from_raw_os_error(errno),
            verifier_log: aya_obj::VerifierLog::new(String::new()),
        }
    }

    #[test]
    fn an_interrupted_load_is_tried_again() {
        let mut calls = 0;
        let result = load_retrying(|| {
            calls += 1;
            if calls < 3 {
                Err(load_error(libc::EAGAIN))
            } else {
                Ok(())
            }
        });
        assert!(result.is_ok());
        assert_eq!(calls, 3);
    }

    #[test]
    fn an_interrupted_helper_probe_is_tried_again() {
        let mut calls = 0;
        let supported = load_retrying(|| {
            calls += 1;
            if calls == 1 {
                Err(ProgramError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_prog_load",
                    io_error: io::Error::from_raw_os_error(libc::EAGAIN),
                }))
            } else {
                Ok(true)
            }
        });
        assert_eq!((supported.ok(), calls), (Some(true), 2));
    }

    #[test]
    fn a_rejected_program_is_not_tried_again() {
        let mut calls = 0;
        let result = load_retrying(|| -> Result<(), _> {
            calls += 1;
            Err(load_error(libc::EACCES))
        });
        assert!(matches!(result, Err(ref err) if !interrupted(err)));
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_raw_load_is_tried_again_only_when_interrupted() {
        let mut calls = 0;
        let fd = syscall_retrying(|| {
            calls += 1;
            if calls == 1 {
                Err(io::Error::from_raw_os_error(libc::EAGAIN))
            } else {
                Ok(7)
            }
        });
        assert_eq!((fd.ok(), calls), (Some(7), 2));
        let mut calls = 0;
        let refused = syscall_retrying(|| -> io::Result<i64> {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        });
        assert_eq!((refused.is_err(), calls), (true, 1));
    }

    #[test]
    fn an_always_interrupted_load_gives_up_after_libbpfs_attempts() {
        let mut calls = 0;
        let result = load_retrying(|| -> Result<(), _> {
            calls += 1;
            Err(load_error(libc::EAGAIN))
        });
        assert!(matches!(result, Err(ref err) if interrupted(err)));
        assert_eq!(calls, PROG_LOAD_ATTEMPTS);
    }
}
