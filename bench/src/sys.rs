//! Small OS helpers: running tools inside a namespace, /proc/stat, CPU affinity, and
//! the Ctrl-C flag that lets every trial stop and every lane tear down.

use std::{
    fs,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use crate::BenchError;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM set a flag instead of killing the process, so the run stops between
/// trials and the lanes' Drop removes their namespaces.
pub fn catch_interrupts() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = handler as usize;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupt() -> Result<(), BenchError> {
    if interrupted() {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

/// Runs `argv` (under `ip netns exec NS` when `ns` is given, bounded by `timeout`) and
/// returns stdout; a non-zero exit is an error carrying stderr.
pub fn run_tool(ns: Option<&str>, argv: &[&str], timeout: Duration) -> Result<String, BenchError> {
    run_tool_input(ns, argv, timeout, None)
}

/// Like [`run_tool`], with `input` fed on stdin.
pub fn run_tool_input(
    ns: Option<&str>,
    argv: &[&str],
    timeout: Duration,
    input: Option<&str>,
) -> Result<String, BenchError> {
    let mut cmd = Command::new("timeout");
    cmd.arg(format!("{}", timeout.as_secs().max(1)));
    if let Some(ns) = ns {
        cmd.args(["ip", "netns", "exec", ns]);
    }
    cmd.args(argv);
    let shown = format!(
        "{}{}",
        ns.map(|n| format!("ip netns exec {n} "))
            .unwrap_or_default(),
        argv.join(" ")
    );
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| BenchError::Spawn {
        what: shown.clone(),
        source,
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write as _;
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| BenchError::Spawn {
                what: format!("{shown} (writing stdin)"),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| BenchError::Spawn {
            what: shown.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(BenchError::Tool {
            what: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Machine-wide CPU time from /proc/stat's first line, in USER_HZ ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    pub fn read() -> Result<CpuTimes, BenchError> {
        let text = fs::read_to_string("/proc/stat").map_err(|source| BenchError::Io {
            what: "reading /proc/stat".into(),
            source,
        })?;
        let line = text.lines().next().unwrap_or_default();
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        Ok(CpuTimes {
            user: at(0),
            nice: at(1),
            system: at(2),
            idle: at(3),
            iowait: at(4),
            irq: at(5),
            softirq: at(6),
            steal: at(7),
        })
    }

    pub fn since(&self, before: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(before.user),
            nice: self.nice.saturating_sub(before.nice),
            system: self.system.saturating_sub(before.system),
            idle: self.idle.saturating_sub(before.idle),
            iowait: self.iowait.saturating_sub(before.iowait),
            irq: self.irq.saturating_sub(before.irq),
            softirq: self.softirq.saturating_sub(before.softirq),
            steal: self.steal.saturating_sub(before.steal),
        }
    }

    /// Ticks some CPU spent working (steal and idle excluded).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq
    }

    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait + self.steal
    }
}

/// Nanoseconds per /proc/stat tick.
pub fn ns_per_tick() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1e9 / if hz > 0 { hz as f64 } else { 100.0 }
}

pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Pins the calling thread to one CPU (modulo the CPUs there are); best effort, since
/// a benchmark on a machine that refuses affinity is still a benchmark.
pub fn pin_to_cpu(cpu: usize) {
    let cpu = cpu % online_cpus();
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within its bounds for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Writes a sysctl file in namespace `ns` (/proc/sys/net shows the namespace of the
/// thread that opens it).
pub fn sysctl_in(ns: &str, path: &str, value: &str) -> Result<(), BenchError> {
    let path = path.to_string();
    let value = value.to_string();
    netfast::host::netns::run_in(ns, move || fs::write(&path, &value).map_err(|e| (path, e)))?
        .map_err(|(path, source)| BenchError::Io {
            what: format!("writing {path} in {ns}"),
            source,
        })
}

pub fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}
