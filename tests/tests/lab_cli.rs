//! `netfast lab` itself, as root: its live loop collects conntrack (flows expire), and
//! a second lab with the same prefix is refused with exit 2, changing nothing.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use support::{netfast, netfast_bin, require_root, succeeded, text, unique_prefix};

/// A running `netfast lab`; dropping it sends SIGINT (its teardown) and waits.
struct RunningLab {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl RunningLab {
    fn start(prefix: &str) -> RunningLab {
        let mut child = Command::new(netfast_bin())
            .args(["lab", "--prefix", prefix])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn netfast lab");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        RunningLab { child, lines }
    }

    /// Waits for a line containing `needle`, bounded; returns it.
    fn expect_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!(
            "no line with {needle:?} within {limit:?}; lab printed:\n{}",
            seen.join("\n")
        );
    }
}

impl Drop for RunningLab {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lab's flows of protocol `proto`, from `ct list --json` in its host namespace.
fn flows(prefix: &str, proto: &str) -> Vec<serde_json::Value> {
    let out = netfast(
        Some(&format!("{prefix}-host")),
        &[
            "ct",
            "list",
            "--instance",
            prefix,
            "--proto",
            proto,
            "--json",
        ],
    );
    let json: serde_json::Value =
        serde_json::from_str(&succeeded(&out, "ct list")).expect("ct list JSON");
    json.as_array().expect("an array").clone()
}

#[test]
fn lab_collects_conntrack_and_a_second_lab_is_refused() {
    require_root();
    let prefix = unique_prefix("lb");
    let lab = RunningLab::start(&prefix);
    lab.expect_line("lab: live counters", Duration::from_secs(120));
    // The live view: a stamped line of the counters that are not 0, wrapped under the
    // stamp at 100 columns (stdout is a pipe here), never one line of everything.
    lab.expect_line("Ctrl-C tears everything down", Duration::from_secs(5));
    let first = lab.expect_line("[", Duration::from_secs(10));
    assert!(
        first.starts_with("[    2s] dnat_new=1  dnat_established="),
        "the first tick lists the counters that are not 0: {first:?}"
    );
    let mut tick = vec![first];
    while let Ok(line) = lab.lines.recv_timeout(Duration::from_millis(500)) {
        if !line.starts_with("         ") {
            break;
        }
        tick.push(line);
    }
    assert!(tick.len() > 1, "wrapped: {tick:#?}");
    assert!(
        tick.iter().all(|l| l.chars().count() <= 100),
        "no line over 100 columns: {tick:#?}"
    );
    let joined = tick.join(" ");
    for counter in ["snat_new=2", "host_local_rewritten=1", "conntrack_assured="] {
        assert!(joined.contains(counter), "{counter} missing from {tick:#?}");
    }
    assert!(
        !joined.contains("=0 "),
        "a counter at 0 is listed: {tick:#?}"
    );

    // A second lab with the prefix: exit 2, naming the namespace, nothing changed.
    let config = std::env::temp_dir().join(format!("netfast-lab-{prefix}.toml"));
    let config_before = std::fs::read(&config).expect("the first lab's config");
    let ns_before = netfast_tests::snapshot::namespaces(&prefix);
    let second = Command::new(netfast_bin())
        .args(["lab", "--prefix", &prefix, "--once"])
        .output()
        .expect("run a second lab");
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "second lab: {err}");
    assert!(
        err.contains(&format!("{prefix}-host")) && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(
        netfast_tests::snapshot::namespaces(&prefix),
        ns_before,
        "the second lab changed namespaces"
    );
    assert_eq!(
        std::fs::read(&config).ok(),
        Some(config_before),
        "it rewrote the config"
    );

    // The live loop is the instance's daemon: a `netfast run` of it exits 2, and the
    // programs it would have re-attached keep their ids.
    let links = || {
        netfast::bpf::PinnedInstance::open(&prefix)
            .expect("the lab's pins")
            .links()
            .expect("the lab's links")
            .into_iter()
            .map(|l| (l.link_id, l.prog_id))
            .collect::<Vec<_>>()
    };
    let before = links();
    let run = netfast(
        Some(&format!("{prefix}-host")),
        &["run", "--config", config.to_str().expect("utf-8 path")],
    );
    let err = text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "run beside the lab: {err}");
    assert!(err.contains("already has a running"), "{err}");
    assert_eq!(links(), before, "the refused run re-attached the programs");

    // The table has an EXPIRES column and ends with a count line, as `conntrack -L`.
    let table = succeeded(
        &netfast(
            Some(&format!("{prefix}-host")),
            &["ct", "list", "--instance", &prefix],
        ),
        "ct list",
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains(" IDLE  EXPIRES "), "{table}");
    let last = lines.last().expect("a count line");
    let n = lines.len() - 2;
    assert!(
        last.starts_with(&format!("{n} flows ("))
            && last.contains("assured, ")
            && last.contains("default timeouts"),
        "{table}"
    );

    // The seed checks pinged through the masquerade: an ICMP flow, 30 s timeout.
    let icmp = flows(&prefix, "icmp");
    assert!(!icmp.is_empty(), "the seed checks leave an ICMP flow");
    let expires = icmp[0]["expires_ms"].as_u64().expect("expires_ms");
    assert!(
        expires <= 30_000,
        "ICMP expires within its 30 s timeout: {expires}"
    );
    assert_eq!(icmp[0]["timeouts"], "defaults");
    // The lab's GC removes it once idle past 30 s (it passes every 2 s).
    let deadline = Instant::now() + Duration::from_secs(45);
    while !flows(&prefix, "icmp").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the lab never collected the ICMP flow: {:?}",
            flows(&prefix, "icmp")
        );
        thread::sleep(Duration::from_secs(1));
    }
    lab.expect_line("expired", Duration::from_secs(5));
}
