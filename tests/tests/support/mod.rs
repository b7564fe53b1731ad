//! Sandboxes for end-to-end tests: the seed lab (host and LAN namespaces), an
//! instance brought up by the real `netfast` binary, and real tools run inside the
//! namespaces with `ip netns exec`. Everything is removed on drop, also on failure.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use netfast::{config::IngressMode, lab};

/// The `netfast` binary next to this test's own directory (`target/<profile>/netfast`).
pub fn netfast_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("netfast"))
        .expect("test binary lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p netfast` (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// The `netfast-cni` plugin beside `netfast` (`target/<profile>/netfast-cni`), which
/// `cargo build` and `cargo xtask test` build.
pub fn netfast_cni_bin() -> PathBuf {
    let bin = netfast_bin().with_file_name("netfast-cni");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p netfast-cni` (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// Fails loudly, never skips silently: these tests need root for namespaces and BPF.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "end-to-end tests need root (namespaces, tcx/XDP, bpffs); run them with `cargo xtask test` as root"
    );
}

/// A short prefix unique to this process and call, so tests can run side by side.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("nft{}{}{n}", std::process::id() % 100_000, tag)
}

/// Runs `netfast [--netns NS] ARGS...`.
pub fn netfast(netns: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(netfast_bin());
    if let Some(ns) = netns {
        cmd.args(["--netns", ns]);
    }
    cmd.args(args).output().expect("run netfast")
}

/// Asserts that a command (`what`, for the message) succeeded and returns its stdout.
pub fn succeeded(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `argv` in namespace `ns` as a member of `cgroup` (None: this process's own
/// cgroup). The process writes its own pid to `cgroup.procs` before it execs, so
/// every socket call it makes meets the programs attached there. It enters the
/// namespace with `nsenter --net` because `ip netns exec` remounts /sys, which hides
/// the cgroup2 mount.
pub fn exec_in_cgroup(ns: &str, cgroup: Option<&std::path::Path>, argv: &[&str]) -> Output {
    let join = cgroup.map_or_else(String::new, |cg| {
        format!("echo $$ > '{}/cgroup.procs' && ", cg.display())
    });
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["sh", "-c", &format!("{join}exec \"$@\""), "sh"])
        .args(argv)
        .output()
        .unwrap_or_else(|e| panic!("nsenter --net=/run/netns/{ns} {argv:?}: {e}"))
}

/// Runs a tool inside a namespace and returns its output.
pub fn exec(ns: &str, argv: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {ns} {argv:?}: {e}"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns stdout.
pub fn exec_ok(ns: &str, argv: &[&str]) -> String {
    succeeded(&exec(ns, argv), &format!("`{}` in {ns}", argv.join(" ")))
}

/// A background process in a namespace, killed on drop.
pub struct Background {
    child: Child,
    what: String,
}

impl Background {
    pub fn spawn(ns: &str, argv: &[&str]) -> Background {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?} in {ns}: {e}"));
        Background {
            child,
            what: format!("{argv:?} in {ns}"),
        }
    }

    /// Kills the process and returns what it printed (stdout, stderr).
    pub fn finish(mut self) -> (String, String) {
        let _ = self.child.kill();
        let child = std::mem::replace(
            &mut self.child,
            Command::new("true").spawn().expect("spawn true"),
        );
        let out = child.wait_with_output().expect("collect output");
        (text(&out.stdout), text(&out.stderr))
    }

    /// Waits until the process exits by itself, bounded.
    pub fn wait(mut self, limit: Duration) -> (String, String) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.finish();
            }
            thread::sleep(Duration::from_millis(50));
        }
        let what = self.what.clone();
        let (out, err) = self.finish();
        panic!("{what} did not finish within {limit:?}\nstdout: {out}\nstderr: {err}");
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms for up to `limit`, then asks once more: true as soon as
/// `f` holds.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Polls until `port` is bound for TCP or UDP in `ns` (`ss`), bounded.
pub fn wait_listening(ns: &str, proto: &str, port: u16) {
    let flag = if proto == "udp" { "-uln" } else { "-tln" };
    let deadline = Instant::now() + Duration::from_secs(10);
    let needle = format!(":{port} ");
    while Instant::now() < deadline {
        if text(&exec(ns, &["ss", flag]).stdout).contains(&needle) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listened on {proto} port {port} in {ns} within 10 s");
}

/// The seed lab with an instance up in its host namespace. Drop runs `netfast down`
/// and then removes the lab's namespaces.
pub struct Sandbox {
    pub prefix: String,
    pub config: PathBuf,
    // Dropped after `Drop::drop` ran `down`.
    _lab: lab::Lab,
}

impl Sandbox {
    /// Brings up the seed topology plus `extra_toml` (more `[[publish]]` entries).
    pub fn up(tag: &str, ingress: IngressMode, extra_toml: &str) -> Sandbox {
        Self::up_with(tag, ingress, "", extra_toml)
    }

    /// [`Sandbox::up`] with `top_toml` (top-level keys such as `fast_path = false`)
    /// in front of the seed config, where TOML wants keys that belong to no table.
    pub fn up_with(tag: &str, ingress: IngressMode, top_toml: &str, extra_toml: &str) -> Sandbox {
        require_root();
        let prefix = unique_prefix(tag);
        let lab = lab::Lab::create(&prefix).expect("create the lab namespaces");
        let config = std::env::temp_dir().join(format!("netfast-test-{prefix}.toml"));
        let toml = format!(
            "{top_toml}\n{}{extra_toml}",
            lab::seed_config_toml(&prefix, ingress)
        );
        std::fs::write(&config, toml).expect("write config");
        let sandbox = Sandbox {
            prefix,
            config,
            _lab: lab,
        };
        let out = sandbox.netfast(&["up", "--config", sandbox.config_str()]);
        assert!(
            out.status.success(),
            "netfast up failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        sandbox
    }

    pub fn config_str(&self) -> &str {
        self.config.to_str().expect("utf-8 temp path")
    }

    /// `netfast --netns <prefix>-host ARGS...`
    pub fn netfast(&self, args: &[&str]) -> Output {
        netfast(Some(&self.host()), args)
    }

    pub fn host(&self) -> String {
        lab::host_ns(&self.prefix)
    }

    pub fn lan(&self) -> String {
        lab::lan_ns(&self.prefix)
    }

    pub fn container(&self, n: u8) -> String {
        lab::container_ns(&self.prefix, n)
    }

    /// The lab's own cgroup2 directory, where the seed config attaches the host-local
    /// programs (never the machine's root cgroup). Fails loudly without cgroup2.
    pub fn cgroup(&self) -> PathBuf {
        self._lab
            .cgroup()
            .map(PathBuf::from)
            .expect("the lab has no cgroup2 directory: host-local tests need a cgroup2 mount")
    }

    /// Sum of one counter over all CPUs, read from the pinned map.
    pub fn counter(&self, name: &str) -> u64 {
        netfast::bpf::maps::read_counters(&self.prefix)
            .expect("read counters")
            .into_iter()
            .find(|(counter, _)| counter.name() == name)
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("no counter {name}"))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let out = self.netfast(&["down", "--config", self.config_str()]);
        if !out.status.success() {
            eprintln!(
                "netfast down failed for {}: {}{}",
                self.prefix,
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        let _ = std::fs::remove_file(&self.config);
    }
}
