//! Idempotent machine set-up: everything `run` and `test` need on a fresh Debian
//! machine. Each step says what it found, and what it did about it.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{Precondition, capture, run};

/// Debian packages, and why each is here.
const PACKAGES: &[(&str, &str)] = &[
    // bpf-linker 0.13 links libLLVM.so dynamically and finds it through
    // llvm-config; llvm-22-dev brings both (and libllvm22 at run time). The static
    // build (zlib/zstd/polly dev packages) is not used.
    ("llvm-22-dev", "bpf-linker links against LLVM 22"),
    ("iproute2", "ip, for the tests and the lab's checks"),
    (
        "iptables",
        "tests assert its rulesets stay empty; benchmark lanes",
    ),
    (
        "nftables",
        "tests assert its ruleset stays empty; benchmark lanes",
    ),
    ("conntrack", "tests assert nf_conntrack holds no entry"),
    ("iputils-ping", "ICMP checks"),
    ("netcat-openbsd", "TCP and UDP checks"),
    ("curl", "HTTP checks"),
    ("python3", "a tiny HTTP server behind published ports"),
    ("bpftool", "inspecting programs and maps"),
    ("ethtool", "veth offload settings"),
    ("iperf3", "throughput checks"),
    (
        "tcpdump",
        "captures of the LAN wire in the ICMP error and fragment tests",
    ),
    (
        "iputils-tracepath",
        "tracepath through the masquerade in the ICMP error tests",
    ),
    (
        "podman",
        "the CNI test: a real runtime calling netfast-cni (CNI backend)",
    ),
    (
        "runc",
        "podman's OCI runtime here (crun refuses hybrid cgroups)",
    ),
    (
        "containernetworking-plugins",
        "the bridge and host-local plugins netfast-cni chains after",
    ),
    (
        "busybox-static",
        "the podman test's container rootfs (no image registry is reachable)",
    ),
];

const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
const BPFFS: &str = "/sys/fs/bpf";

pub fn setup() -> anyhow::Result<()> {
    check_root()?;
    packages()?;
    nightly()?;
    bpf_linker()?;
    bpffs()?;
    kernel()?;
    println!("[setup] done");
    Ok(())
}

fn say(what: &str, state: &str) {
    println!("[setup] {what}: {state}");
}

fn check_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(Precondition(format!(
            "netfast's set-up, lab and tests need root (they install packages, mount bpffs, \
             load BPF and create network namespaces), but this runs as uid {euid}; \
             run it again as root, e.g. `sudo -E cargo xtask ...`"
        ))
        .into());
    }
    say("root", "yes");
    Ok(())
}

fn packages() -> anyhow::Result<()> {
    if which("dpkg-query").is_none() || which("apt-get").is_none() {
        let names: Vec<_> = PACKAGES.iter().map(|(p, _)| *p).collect();
        bail!(
            "dpkg-query or apt-get not found: this set-up installs Debian packages; \
             install these yourself: {}",
            names.join(" ")
        );
    }
    let mut missing = Vec::new();
    for (pkg, why) in PACKAGES {
        let status = capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]));
        if status.is_ok_and(|s| s.trim() == "install ok installed") {
            say(pkg, "present");
        } else {
            say(pkg, &format!("missing ({why})"));
            missing.push(*pkg);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    println!("[setup] installing {}", missing.join(" "));
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("while running apt-get update")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("while installing {}", missing.join(" ")))?;
    for pkg in &missing {
        say(pkg, "installed");
    }
    Ok(())
}

fn nightly() -> anyhow::Result<()> {
    if which("rustup").is_none() {
        return Err(Precondition(
            "rustup is not on PATH, and the eBPF crate needs its nightly toolchain; \
             install rustup from https://rustup.rs (or add ~/.cargo/bin to PATH)"
                .into(),
        )
        .into());
    }
    let toolchains = capture(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        say("nightly toolchain", "installing ...");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context("while installing the nightly toolchain")?;
        say("nightly toolchain", "installed");
    } else {
        say("nightly toolchain", "present");
    }
    let components = capture(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    // Installed components are listed with their target triple, rust-src without.
    if components.lines().any(|l| l.trim() == "rust-src") {
        say("rust-src (nightly)", "present");
    } else {
        say("rust-src (nightly)", "installing ...");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("while adding rust-src to the nightly toolchain")?;
        say("rust-src (nightly)", "installed");
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    // Also a broken install (libLLVM gone) fails here, and gets rebuilt.
    if let Ok(v) = capture(Command::new("bpf-linker").arg("--version")) {
        say("bpf-linker", &format!("present ({})", v.trim()));
        return Ok(());
    }
    say(
        "bpf-linker",
        "installing (builds against LLVM 22, a few minutes) ...",
    );
    // Without LLVM 22's bin dir first, bpf-linker's build finds no llvm-config and
    // fails with "unable to find -lLLVM".
    let path = prepend_path(&[PathBuf::from(LLVM_BIN)]);
    run(Command::new(cargo())
        .args([
            "install",
            "bpf-linker",
            "--version",
            "~0.13",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("PATH", path))
    .context("while building bpf-linker against LLVM 22")?;
    let v = capture(Command::new("bpf-linker").arg("--version")).context(
        "bpf-linker was installed but does not run; is the cargo bin directory on PATH?",
    )?;
    say("bpf-linker", &format!("installed ({})", v.trim()));
    Ok(())
}

fn bpffs() -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("while reading /proc/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let f: Vec<_> = l.split_whitespace().collect();
        f.get(1) == Some(&BPFFS) && f.get(2) == Some(&"bpf")
    });
    if mounted {
        say("bpffs at /sys/fs/bpf", "present");
        return Ok(());
    }
    say("bpffs at /sys/fs/bpf", "mounting ...");
    if !Path::new(BPFFS).is_dir() {
        return Err(Precondition(format!(
            "{BPFFS} does not exist, so bpffs cannot be mounted: this kernel has no BPF \
             filesystem (CONFIG_BPF_SYSCALL) or /sys is not sysfs; use a kernel with BPF"
        ))
        .into());
    }
    run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS])).map_err(|e| {
        Precondition(format!(
            "mounting bpffs at {BPFFS} failed ({e:#}); a container needs CAP_SYS_ADMIN \
             (or a bind-mounted bpffs) for netfast"
        ))
    })?;
    say("bpffs at /sys/fs/bpf", "mounted");
    Ok(())
}

fn kernel() -> anyhow::Result<()> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        return Err(Precondition(format!(
            "kernel {} has no bpf() syscall (CONFIG_BPF_SYSCALL is off), so netfast cannot \
             load its datapath; use a kernel built with BPF",
            release.trim()
        ))
        .into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(Precondition(format!(
            "kernel {} has no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF is off), which \
             the datapath needs; use a kernel built with BTF",
            release.trim()
        ))
        .into());
    }
    say("kernel", &format!("{} with BPF and BTF", release.trim()));
    Ok(())
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// PATH with the cargo bin directory added, so tools installed by `cargo install`
/// and rustup are found under sudo too, plus `extra` in front.
pub fn prepend_path(extra: &[PathBuf]) -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    if let Some(bin) = cargo_bin()
        && !env::split_paths(&current).any(|d| d == bin)
    {
        dirs.push(bin);
    }
    dirs.extend(env::split_paths(&current));
    env::join_paths(dirs).unwrap_or(current)
}

fn cargo_bin() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin"))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
