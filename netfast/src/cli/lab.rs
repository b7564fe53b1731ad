//! `netfast lab`: the seed topology in a sandbox, the seed checks, then live counters.
//!
//! The sandbox is a [`Lab`]: namespaces `<prefix>-host` and `<prefix>-lan`. `up` and
//! `down` run as this very binary re-executed with `--netns <prefix>-host`, so the lab
//! exercises the same path an operator uses. Teardown (down, then removing the
//! namespaces and pins) always runs: on success, on failure, and on Ctrl-C or SIGTERM,
//! which are caught from the start.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{Context, bail};
use netfast::{
    bpf,
    config::IngressMode,
    host::netns,
    lab::{self, Lab},
};
use tokio::signal::unix::{Signal, SignalKind, signal};

struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Waits up to `d`; true when SIGINT or SIGTERM arrived (also one that arrived earlier).
    fn wait(&mut self, rt: &tokio::runtime::Runtime, d: Duration) -> bool {
        rt.block_on(async {
            tokio::select! {
                biased;
                _ = self.int.recv() => true,
                _ = self.term.recv() => true,
                _ = tokio::time::sleep(d) => false,
            }
        })
    }
}

/// Always-run teardown: `down` inside the host namespace, then the lab's namespaces.
struct Teardown {
    lab: Option<Lab>,
    exe: PathBuf,
    config: PathBuf,
    up_started: bool,
}

impl Teardown {
    fn run(&mut self) {
        let Some(lab) = self.lab.take() else {
            return;
        };
        if self.up_started {
            println!("teardown: netfast down in {}", lab.host_ns());
            match netfast_in(&self.exe, &lab.host_ns(), "down", &self.config) {
                Ok(()) => {}
                Err(e) => eprintln!("teardown: {e:#}; removing the namespaces anyway"),
            }
        }
        drop(lab);
        let _ = std::fs::remove_file(&self.config);
        println!("teardown: lab namespaces removed");
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.run();
    }
}

/// Runs `netfast --netns NS <cmd> --config FILE` in its own process group, so a Ctrl-C
/// at the terminal reaches only us and never interrupts it half-way.
fn netfast_in(exe: &Path, ns: &str, cmd: &str, config: &Path) -> anyhow::Result<()> {
    let status = Command::new(exe)
        .arg("--netns")
        .arg(ns)
        .arg(cmd)
        .arg("--config")
        .arg(config)
        .process_group(0)
        .status()
        .with_context(|| format!("while starting {}", exe.display()))?;
    if !status.success() {
        bail!("`netfast --netns {ns} {cmd}` failed ({status})");
    }
    Ok(())
}

pub fn run(prefix: &str, ingress: IngressMode, once: bool) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("while starting the tokio runtime")?;
    let mut signals = {
        let _entered = rt.enter();
        Signals {
            int: signal(SignalKind::interrupt()).context("while installing the Ctrl-C handler")?,
            term: signal(SignalKind::terminate())
                .context("while installing the SIGTERM handler")?,
        }
    };

    let text = lab::seed_config_toml(prefix, ingress);
    // Parse it here too, so a bad --prefix is refused before anything is created; the
    // live loop's conntrack GC takes its timeouts from it.
    let cfg = lab::seed_config(prefix, ingress).with_context(|| format!("--prefix {prefix:?}"))?;
    let exe = std::env::current_exe().context("while locating the netfast binary")?;
    // The namespaces first: a lab with this prefix that is still running keeps its
    // config file (exit 2, nothing changed). Dropping `lab` removes them on failure.
    let lab = Lab::create(prefix).context("while creating the lab namespaces")?;
    let config = std::env::temp_dir().join(format!("netfast-lab-{prefix}.toml"));
    std::fs::write(&config, &text)
        .with_context(|| format!("while writing the lab config {}", config.display()))?;
    let host = lab.host_ns();
    println!(
        "lab: {host} (eth0 {}/{}) <-> {} (eth0 {}/{}); config {}",
        lab::HOST_ADDR,
        lab::UPLINK_PREFIX,
        lab.lan_ns(),
        lab::LAN_ADDR,
        lab::UPLINK_PREFIX,
        config.display()
    );
    let mut teardown = Teardown {
        lab: Some(lab),
        exe,
        config,
        up_started: false,
    };
    if signals.wait(&rt, Duration::ZERO) {
        println!("interrupted");
        return Ok(ExitCode::from(130));
    }

    teardown.up_started = true;
    println!(
        "lab: netfast --netns {host} up ({} ingress)",
        ingress.as_str()
    );
    netfast_in(&teardown.exe, &host, "up", &teardown.config)
        .context("while bringing up the seed topology")?;
    if signals.wait(&rt, Duration::ZERO) {
        println!("interrupted");
        return Ok(ExitCode::from(130));
    }

    println!("lab: seed checks");
    let checks = lab::run_seed_checks(prefix);
    for c in &checks {
        println!("  {c}");
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    println!(
        "lab: {} of {} checks passed",
        checks.len() - failed,
        checks.len()
    );

    if once {
        teardown.run();
        return Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    // The live loop is the instance's daemon (it collects conntrack as `netfast run`
    // does), so it holds the daemon lock: a `netfast run` of the lab's instance is
    // refused with exit 2 instead of running a second GC and a `down` on exit.
    let one_daemon = netfast::lock::daemon(prefix, &netfast::instance::state_dir(prefix))?;
    println!("lab: live counters every 2 s: those not 0, then those that moved (+change)");
    println!(
        "lab: conntrack GC with the default timeouts, as `netfast run`; Ctrl-C tears \
         everything down"
    );
    let width = super::render::live_width();
    let watched = super::run::Watched::of_config(&cfg);
    let started = std::time::Instant::now();
    let mut previous: Option<Vec<(netfast_common::Counter, u64)>> = None;
    while !signals.wait(&rt, Duration::from_secs(2)) {
        let stamp = format!("[{:>5}s] ", started.elapsed().as_secs());
        // As the daemon does: without it, flows would stay listed past their timeouts.
        let gc = match super::run::collect(&watched) {
            Ok(r) if r.expired == 0 => None,
            Ok(r) => Some(format!(
                "gc: {} expired",
                netfast::count(r.expired as u64, "flow", "flows")
            )),
            Err(e) => Some(format!("gc failed: {e:#}")),
        };
        let instance = prefix.to_string();
        let mut items = match netns::run_in(&host, move || bpf::maps::read_counters(&instance)) {
            Ok(Ok(counters)) => {
                let items =
                    super::render::live_counter_items(&counters, previous.as_deref(), |change| {
                        format!("+{change}")
                    });
                previous = Some(counters);
                items
            }
            Ok(Err(e)) => vec![format!("counters unavailable: {e}")],
            Err(e) => vec![format!("counters unavailable: {e}")],
        };
        items.extend(gc);
        for line in super::render::wrap_items(&stamp, &items, width) {
            println!("{line}");
        }
    }
    println!();
    drop(one_daemon);
    teardown.run();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
