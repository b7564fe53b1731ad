//! What the issue-7 tests add to the seed sandbox: a far network behind a router, a
//! packet capture on the LAN wire, named checks that report every failure at once, and
//! small readers (counters, /proc/net/snmp, python output). Each thing created here is
//! removed on drop, also when the test panics.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

use crate::support::{Sandbox, exec, exec_ok, text};

/// The far network's router side (in the LAN namespace) and the far host.
pub const FAR_NET: &str = "10.0.2.0/24";
pub const FAR_ROUTER: &str = "10.0.2.1";
pub const FAR: &str = "10.0.2.2";
/// The MTU of the link between the LAN router and the far host.
pub const FAR_MTU: u32 = 1400;

/// Runs `ip ARGS...` from the test process (`ip -n NS` enters the namespace itself).
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            text(&out.stderr).trim()
        ))
    }
}

/// A router beyond the uplink: the LAN namespace forwards between the uplink's
/// 10.0.1.0/24 and `<prefix>-far` (10.0.2.2) over a veth with a 1400-byte MTU. The far
/// host's default route advertises MSS 1460 (`advmss`), as a host behind a tunnel whose
/// own link looks like Ethernet does, so TCP toward it relies on path MTU discovery.
/// The sandbox host gets a route to 10.0.2.0/24 via the LAN peer.
///
/// Drop removes the host's route, restores the LAN namespace's sysctls and deletes the
/// far namespace, which takes its veth pair with it.
pub struct FarNet {
    ns: String,
    host: String,
    lan: String,
}

impl FarNet {
    pub fn behind(sb: &Sandbox) -> FarNet {
        let ns = format!("{}-far", sb.prefix);
        assert!(
            !Path::new("/run/netns").join(&ns).exists(),
            "network namespace {ns} already exists; refusing to adopt it"
        );
        if let Err(e) = ip(&["netns", "add", &ns]) {
            panic!("{e}");
        }
        // From here on, Drop cleans up whatever exists.
        let far = FarNet {
            ns,
            host: sb.host(),
            lan: sb.lan(),
        };
        let (lan, host, ns) = (far.lan.as_str(), far.host.as_str(), far.ns.as_str());
        let mtu = FAR_MTU.to_string();
        let (router, far_host) = (format!("{FAR_ROUTER}/24"), format!("{FAR}/24"));
        let steps: &[&[&str]] = &[
            &[
                "-n", lan, "link", "add", "far0", "type", "veth", "peer", "name", "eth0", "netns",
                ns,
            ],
            &["-n", lan, "link", "set", "far0", "mtu", &mtu, "up"],
            &["-n", lan, "addr", "add", &router, "dev", "far0"],
            &["-n", ns, "link", "set", "lo", "up"],
            &["-n", ns, "link", "set", "eth0", "mtu", &mtu, "up"],
            &["-n", ns, "addr", "add", &far_host, "dev", "eth0"],
            &[
                "-n", ns, "route", "add", "default", "via", FAR_ROUTER, "advmss", "1460",
            ],
            &["-n", host, "route", "add", FAR_NET, "via", "10.0.1.26"],
        ];
        for step in steps {
            if let Err(e) = ip(step) {
                panic!("building the far network: {e}");
            }
        }
        // The LAN peer becomes a router. No rate limit on the ICMP errors it and the far
        // host send: a test provokes several within a second, and each must be sent.
        for (ns, settings) in [
            (
                lan,
                &["net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"][..],
            ),
            (ns, &["net.ipv4.icmp_ratelimit=0"][..]),
        ] {
            for setting in settings {
                exec_ok(ns, &["sysctl", "-qw", setting]);
            }
        }
        far
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }
}

impl Drop for FarNet {
    fn drop(&mut self) {
        let _ = ip(&[
            "-n",
            &self.host,
            "route",
            "del",
            FAR_NET,
            "via",
            "10.0.1.26",
        ]);
        for setting in ["net.ipv4.ip_forward=0", "net.ipv4.icmp_ratelimit=1000"] {
            let _ = exec(&self.lan, &["sysctl", "-qw", setting]);
        }
        if let Err(e) = ip(&["netns", "del", &self.ns]) {
            eprintln!("could not delete network namespace {}: {e}", self.ns);
        }
    }
}

/// `tcpdump -w` on one interface of one namespace, for the whole life of the guard.
/// Drop stops tcpdump and removes the file.
pub struct Capture {
    ns: String,
    file: PathBuf,
    tcpdump: Option<Child>,
}

impl Capture {
    /// Starts capturing and returns once tcpdump has written the file's header, that is,
    /// once the capture is live.
    pub fn start(ns: &str, iface: &str, name: &str) -> Capture {
        let file = std::env::temp_dir().join(format!("netfast-{name}.pcap"));
        let _ = fs::remove_file(&file);
        let path = file.to_str().expect("utf-8 temp path");
        // tcpdump's own words, for `summary` when a capture comes back empty.
        // --immediate-mode: without it libpcap hands packets over a TPACKET_V3 block
        // at a time, after up to 1 s, and a stop within that second loses the block
        // ("received by filter" but not "captured"): one CI run saw 0 ICMP errors so.
        let log = fs::File::create(file.with_extension("log"))
            .unwrap_or_else(|e| panic!("tcpdump log next to {path}: {e}"));
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "tcpdump", "-i", iface, "-U", "-Z", "root",
            ])
            .arg("--immediate-mode")
            .args(["-s", "256", "-w", path])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("tcpdump in {ns}: {e} (cargo xtask setup installs it)"));
        let capture = Capture {
            ns: ns.to_string(),
            file,
            tcpdump: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::metadata(&capture.file).map_or(0, |m| m.len()) < 24 {
            assert!(
                Instant::now() < deadline,
                "tcpdump on {iface} in {ns} did not start within 5 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
        capture
    }

    /// Stops tcpdump (SIGINT, so that it flushes), bounded.
    pub fn stop(&mut self) {
        let Some(mut child) = self.tcpdump.take() else {
            return;
        };
        // Let frames in flight reach the ring before tcpdump reads its last.
        thread::sleep(Duration::from_millis(300));
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        let _ = nix::sys::signal::kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The capture file's size and what tcpdump printed (its packet counts once
    /// stopped), to tell an empty capture from a missing one.
    pub fn summary(&self) -> String {
        let size = fs::metadata(&self.file).map_or(0, |m| m.len());
        let said = fs::read_to_string(self.file.with_extension("log")).unwrap_or_default();
        format!(
            "pcap {size} bytes; tcpdump said: {}",
            said.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    }

    /// The captured frames that match a pcap `filter`, as `tcpdump -nn -r` prints them.
    pub fn read(&mut self, filter: &str) -> Vec<String> {
        self.stop();
        let path = self.file.to_str().expect("utf-8 temp path");
        let out = exec_ok(&self.ns, &["tcpdump", "-nn", "-r", path, filter]);
        out.lines().map(str::to_string).collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_file(&self.file);
        let _ = fs::remove_file(self.file.with_extension("log"));
    }
}

/// The named checks of one test. Every small input is tried even when an earlier one
/// failed, each result is printed as it comes, and [`Checks::finish`] fails the test
/// listing every check that failed.
#[must_use = "call finish(), or failures go unreported"]
pub struct Checks {
    test: String,
    passed: usize,
    failed: Vec<String>,
}

impl Checks {
    pub fn new(test: &str) -> Checks {
        Checks {
            test: test.to_string(),
            passed: 0,
            failed: Vec::new(),
        }
    }

    pub fn check(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => {
                eprintln!("[{}] PASS  {name}: {detail}", self.test);
                self.passed += 1;
            }
            Err(detail) => {
                eprintln!("[{}] FAIL  {name}: {detail}", self.test);
                self.failed.push(format!("{name}: {detail}"));
            }
        }
    }

    pub fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{}: {} of {} checks failed:\n  - {}",
            self.test,
            self.failed.len(),
            self.failed.len() + self.passed,
            self.failed.join("\n  - ")
        );
    }
}

/// `Ok(detail)` when `cond` holds, else `Err(detail)`.
pub fn verdict(cond: bool, detail: String) -> Result<String, String> {
    if cond { Ok(detail) } else { Err(detail) }
}

/// One datapath counter, summed over CPUs. Unlike `Sandbox::counter` it returns an
/// error for a name this build does not have, so a check can fail and the test go on.
pub fn counter(sb: &Sandbox, name: &str) -> Result<u64, String> {
    netfast::bpf::maps::read_counters(&sb.prefix)
        .map_err(|e| format!("reading counters: {e}"))?
        .into_iter()
        .find(|(c, _)| c.name() == name)
        .map(|(_, v)| v)
        .ok_or_else(|| format!("the datapath has no counter named {name}"))
}

/// Reads several counters at once; missing ones read as `None`.
pub fn counters(sb: &Sandbox, names: &[&str]) -> Vec<Option<u64>> {
    names.iter().map(|n| counter(sb, n).ok()).collect()
}

/// A check that each counter in `names` moved between `before` and now.
pub fn counters_moved(
    sb: &Sandbox,
    names: &[&str],
    before: &[Option<u64>],
) -> Result<String, String> {
    counters_compared(sb, names, before, |before, now| now > before)
}

/// A check that each counter in `names` still reads `before`.
pub fn counters_stayed(
    sb: &Sandbox,
    names: &[&str],
    before: &[Option<u64>],
) -> Result<String, String> {
    counters_compared(sb, names, before, |before, now| now == before)
}

/// A check that `holds(before, now)` for each counter in `names`; a counter missing
/// then or now fails it.
fn counters_compared(
    sb: &Sandbox,
    names: &[&str],
    before: &[Option<u64>],
    holds: impl Fn(u64, u64) -> bool,
) -> Result<String, String> {
    let mut report = Vec::new();
    let mut ok = true;
    for (name, before) in names.iter().zip(before) {
        match (before, counter(sb, name)) {
            (Some(b), Ok(now)) => {
                ok &= holds(*b, now);
                report.push(format!("{name} {b} -> {now}"));
            }
            (_, Err(e)) => {
                ok = false;
                report.push(e);
            }
            (None, Ok(now)) => {
                ok = false;
                report.push(format!("{name} appeared mid-test ({now})"));
            }
        }
    }
    verdict(ok, report.join(", "))
}

/// Prints every counter that is not zero, for the log of a test.
pub fn print_counters(sb: &Sandbox, test: &str) {
    match netfast::bpf::maps::read_counters(&sb.prefix) {
        Ok(all) => {
            let shown: Vec<String> = all
                .into_iter()
                .filter(|(_, v)| *v != 0)
                .map(|(c, v)| format!("{}={v}", c.name()))
                .collect();
            eprintln!("[{test}] counters: {}", shown.join(" "));
        }
        Err(e) => eprintln!("[{test}] counters: {e}"),
    }
}

/// A field of a protocol line pair in `/proc/net/snmp` of a namespace, e.g.
/// `("Tcp", "InCsumErrors")`.
pub fn snmp(ns: &str, proto: &str, field: &str) -> u64 {
    let table = exec_ok(ns, &["cat", "/proc/net/snmp"]);
    let tag = format!("{proto}:");
    let mut rows = table.lines().filter(|l| l.starts_with(&tag));
    let (names, values) = (rows.next(), rows.next());
    let (Some(names), Some(values)) = (names, values) else {
        panic!("no {proto} rows in /proc/net/snmp of {ns}:\n{table}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {proto} {field} in /proc/net/snmp of {ns}"))
}

/// `ethtool -K DEV tx on|off` in a namespace.
pub fn set_tx_csum(ns: &str, dev: &str, on: bool) {
    exec_ok(
        ns,
        &["ethtool", "-K", dev, "tx", if on { "on" } else { "off" }],
    );
}

/// Runs a python program from [`super::scripts`] in `ns`, bounded by `timeout`, and
/// parses the JSON line it prints last.
pub fn python_json(ns: &str, script: &str, args: &[&str]) -> Result<Value, String> {
    let mut argv = vec!["timeout", "20", "python3", "-c", script];
    argv.extend_from_slice(args);
    let out = exec(ns, &argv);
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|_| {
        format!(
            "the probe in {ns} printed no result ({}): {stdout}{}",
            out.status,
            text(&out.stderr)
        )
    })
}

/// A JSON field as an integer, or -1 when absent (for messages and comparisons).
pub fn int(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(-1)
}

/// A JSON field as a string, or "" when absent.
pub fn string<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A JSON field as a bool, false when absent.
pub fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// A directory under the temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
