//! `netfast run --config FILE [--keep] [--metrics ADDR]`: the foreground daemon.
//! `netfast run --instance NAME [--metrics ADDR]` watches an instance that is up
//! already (one a CNI network brought up has no config file): the same loop, with the
//! timeouts of the file that brought it up if there is one (else nf_conntrack's
//! defaults), and no `up` or `down`.
//!
//! It runs `up` (the same code path as `netfast up`), then, until SIGINT or SIGTERM:
//! garbage-collects conntrack every `[conntrack] gc_interval`, drains the datapath's
//! aya-log ring buffer, prints a one-line counter summary every `--interval`, and
//! with `--metrics` serves `GET /metrics` for Prometheus (`netfast::metrics`).
//! On exit it runs `down` unless `--keep` is given. The datapath is pinned, so a
//! `kill -9` leaves it forwarding; only GC and the log stop.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use aya_log::EbpfLogger;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, header::CONTENT_TYPE};
use netfast::{
    bpf::{self, DatapathError, PinnedInstance},
    config::{Config, DEFAULT_GC_INTERVAL},
    conntrack::Timeouts,
    gc::{self, GcError, GcReport},
    metrics::{self, GcTotals, Snapshot},
};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

/// How often the log ring buffer is drained, and the attached program checked.
const LOG_EVERY: Duration = Duration::from_millis(500);

/// The instance a daemon looks after, and how its GC runs.
pub(super) struct Watched {
    pub instance: String,
    pub gc_interval: Duration,
    pub timeouts: Timeouts,
    /// CONNTRACK's entries, for the summary's fill figure.
    pub capacity: u32,
}

impl Watched {
    pub fn of_config(cfg: &Config) -> Watched {
        Watched {
            instance: cfg.instance.clone(),
            gc_interval: cfg.conntrack.gc_interval,
            timeouts: cfg.conntrack.timeouts,
            capacity: cfg.conntrack.capacity,
        }
    }
}

/// What the daemon does to the instance when it stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// `down`, as `run --config` does by default.
    Down,
    /// Nothing: `run --config --keep`.
    Keep,
    /// Nothing, ever: `run --instance` did not bring the instance up.
    Watch,
}

/// `run --instance NAME`: GC, log, summaries and metrics for an instance that is up
/// already, until SIGINT or SIGTERM; the instance stays up after. Errors: a bad name,
/// an instance that is not pinned, another daemon on it, a metrics port in use.
pub fn run_instance(
    name: &str,
    interval: Duration,
    metrics_addr: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    if let Some(why) = bpf::pins::instance_name_problem(name) {
        return Err(bpf::PinnedError::BadName {
            name: name.to_owned(),
            why,
        }
        .into());
    }
    // The capacity only: `map_fill` would walk every map's keys for it.
    let capacity = PinnedInstance::open(name)?
        .conntrack(netfast::conntrack::Table::Assured)
        .context("while opening the conntrack map")?
        .capacity();
    let state = netfast::instance::state_dir(name);
    std::fs::create_dir_all(&state)
        .with_context(|| format!("while creating {}", state.display()))?;
    let _one_daemon = netfast::lock::daemon(name, &state)?;
    let metrics_listener = metrics_addr.map(bind_metrics).transpose()?;
    // An instance `up` made from a file GCs with that file's [conntrack]; a CNI
    // network's has none, and gets nf_conntrack's defaults.
    let file = netfast::instance::load_manifest(name)
        .ok()
        .flatten()
        .and_then(|m| m.owner)
        .and_then(|o| o.config);
    let (gc_interval, timeouts, whence) = match file.as_deref().map(|f| (f, Config::from_file(f))) {
        Some((f, Ok(cfg))) => (
            cfg.conntrack.gc_interval,
            cfg.conntrack.timeouts,
            format!("the [conntrack] of {}", f.display()),
        ),
        Some((f, Err(e))) => (
            DEFAULT_GC_INTERVAL,
            Timeouts::default(),
            format!(
                "nf_conntrack's defaults: {}, which brought the instance up, cannot be read \
                 ({e})",
                f.display()
            ),
        ),
        None => (
            DEFAULT_GC_INTERVAL,
            Timeouts::default(),
            "nf_conntrack's defaults".to_owned(),
        ),
    };
    let _ = super::emit_line(&format!("netfast: conntrack timeouts: {whence}"));
    let watched = Watched {
        instance: name.to_owned(),
        gc_interval,
        timeouts,
        capacity,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("while starting the daemon's runtime")?;
    let reason = rt.block_on(serve(&watched, interval, Ending::Watch, metrics_listener))?;
    let _ = super::emit_line(&format!(
        "netfast: {reason}; instance {name} stays up (`netfast down --instance {name}` takes it down)"
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn run(
    config: &Path,
    keep: bool,
    interval: Duration,
    metrics_addr: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::from_file(config)?;
    // One daemon per instance, decided before anything else: a second one must not
    // even run the (idempotent) `up`, which would swap the attached programs.
    let state = netfast::instance::state_dir(&cfg.instance);
    let created = !state.exists();
    std::fs::create_dir_all(&state)
        .with_context(|| format!("while creating {}", state.display()))?;
    let _one_daemon = netfast::lock::daemon(&cfg.instance, &state)?;
    // The metrics port is taken before `up`, so a port in use leaves nothing made.
    let metrics_listener = match metrics_addr.map(bind_metrics).transpose() {
        Ok(listener) => listener,
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir(&state);
            }
            return Err(e);
        }
    };
    // The same code path, and the same report, as `netfast up`.
    let report = super::up::bring_up(config);
    if let Ok(text) = &report {
        // A closed stdout stops the daemon at its first line, which then takes the
        // instance down: nothing is lost by not printing here.
        let _ = super::emit(text);
    }
    if let Err(e) = report {
        // A refused or rolled-back `up` leaves no state directory behind; remove_dir
        // only removes it empty.
        if created {
            let _ = std::fs::remove_dir(&state);
        }
        return Err(e);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("while starting the daemon's runtime")?;
    let ending = if keep { Ending::Keep } else { Ending::Down };
    let outcome = rt.block_on(serve(
        &Watched::of_config(&cfg),
        interval,
        ending,
        metrics_listener,
    ));
    drop(rt);
    let reason = match outcome {
        Ok(reason) => reason,
        Err(e) => {
            eprintln!("netfast: the daemon stopped on an error; the datapath stays pinned: {e:#}");
            return Err(e);
        }
    };
    if keep {
        let _ = super::emit_line(&format!(
            "netfast: {reason}; --keep: instance {} stays up, pins in {}",
            cfg.instance,
            bpf::pins::pin_dir(&cfg.instance).display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    // The reason may be a closed stdout: what cannot be printed is not said.
    let _ = super::emit_line(&format!(
        "netfast: {reason}; taking instance {} down",
        cfg.instance
    ));
    super::down::run_config(config)
}

/// The reason the daemon stops when its output can no longer be written (`netfast run
/// | head`): as on a signal, it stops and (without `--keep`) takes the instance down.
const STDOUT_CLOSED: &str = "stdout closed";

/// Prints a line of the daemon's running output; false when stdout is gone.
fn say(text: &str) -> bool {
    super::emit_line(text).is_ok()
}

/// Binds the `--metrics` address; the error names it and the fix.
fn bind_metrics(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!(
            "cannot serve metrics on {addr}: {e}; give --metrics a free port of an address of \
             this namespace (nothing was brought up)"
        )
    })?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("while preparing the metrics socket on {addr}"))?;
    Ok(listener)
}

/// Answers one HTTP request: `GET /metrics` with the instance's figures read now, 503
/// when they cannot be read (the instance was taken down), 404 and 405 otherwise.
async fn scrape(
    req: Request<hyper::body::Incoming>,
    instance: Arc<str>,
    gc: Arc<Mutex<GcTotals>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let plain = |status: StatusCode, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        response
    };
    if req.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "netfast serves its metrics at /metrics\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /metrics\n".into(),
        ));
    }
    // A poisoned lock still holds whole totals: each update is one assignment.
    let totals = *gc.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let text = Snapshot::read(&instance, totals)
        .map_err(anyhow::Error::new)
        .and_then(|snapshot| snapshot.encode().map_err(anyhow::Error::new));
    Ok(match text {
        Ok(text) => {
            let mut response = plain(StatusCode::OK, text);
            if let Ok(value) = metrics::CONTENT_TYPE.parse() {
                response.headers_mut().insert(CONTENT_TYPE, value);
            }
            response
        }
        Err(e) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("netfast: cannot read instance {instance}: {e:#}\n"),
        ),
    })
}

/// The next connection on the metrics listener; never, without one.
async fn next_scrape(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Runs until a signal arrives; returns which one.
async fn serve(
    cfg: &Watched,
    interval: Duration,
    ending: Ending,
    metrics_listener: Option<std::net::TcpListener>,
) -> anyhow::Result<&'static str> {
    let metrics_listener = metrics_listener
        .map(TcpListener::from_std)
        .transpose()
        .context("while serving the metrics socket")?;
    if let Some(listener) = &metrics_listener {
        let addr = listener
            .local_addr()
            .context("while reading the metrics socket's address")?;
        if !say(&format!("netfast: metrics on http://{addr}/metrics")) {
            return Ok(STDOUT_CLOSED);
        }
    }
    let instance: Arc<str> = Arc::from(cfg.instance.as_str());
    let gc_totals = Arc::new(Mutex::new(GcTotals::default()));
    let mut sigint =
        signal(SignalKind::interrupt()).context("while installing a SIGINT handler")?;
    let mut sigterm =
        signal(SignalKind::terminate()).context("while installing a SIGTERM handler")?;
    let gc_every = cfg.gc_interval;
    let running = format!(
        "netfast: running instance {}: conntrack GC every {} s, summary every {} s; Ctrl-C {}",
        cfg.instance,
        gc_every.as_secs(),
        interval.as_secs(),
        match ending {
            Ending::Down => "takes the instance down",
            Ending::Keep => "stops the daemon and keeps the instance up (--keep)",
            Ending::Watch => "stops the daemon; the instance stays up",
        }
    );
    if !say(&running) {
        return Ok(STDOUT_CLOSED);
    }
    let mut log = DatapathLog::default();
    log.refresh(&cfg.instance);

    let started = Instant::now();
    let width = super::render::live_width();
    let mut gc_tick = tokio::time::interval(gc_every);
    let mut summary_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut log_tick = tokio::time::interval(LOG_EVERY);
    for tick in [&mut gc_tick, &mut summary_tick, &mut log_tick] {
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut last_gc: Option<GcReport> = None;
    let mut previous: Option<Vec<(netfast_common::Counter, u64)>> = None;
    loop {
        tokio::select! {
            _ = sigint.recv() => return Ok("SIGINT"),
            _ = sigterm.recv() => return Ok("SIGTERM"),
            _ = log_tick.tick() => {
                log.refresh(&cfg.instance);
                log.drain();
            }
            accepted = next_scrape(metrics_listener.as_ref()) => {
                // A failed accept (a client gone, fds short) costs that client only.
                if let Ok((stream, _)) = accepted {
                    let (instance, gc) = (instance.clone(), gc_totals.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            scrape(req, instance.clone(), gc.clone())
                        });
                        // A client that hangs up mid-answer is its own business.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
            _ = gc_tick.tick() => {
                let report = collect(cfg)?;
                gc_totals
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .add(&report);
                if report.expired > 0 && !say(&format!("netfast: gc: {report}")) {
                    return Ok(STDOUT_CLOSED);
                }
                last_gc = Some(report);
            }
            _ = summary_tick.tick() => {
                let counters = bpf::maps::read_counters(&cfg.instance)
                    .context("while reading the counters")?;
                let lines = summary(
                    started.elapsed(),
                    &counters,
                    previous.as_deref(),
                    interval,
                    last_gc,
                    cfg.capacity,
                    width,
                );
                if !say(&lines.join("\n")) {
                    return Ok(STDOUT_CLOSED);
                }
                previous = Some(counters);
            }
        }
    }
}

/// One GC pass over both conntrack maps of `cfg`'s instance, with its timeouts.
pub(super) fn collect(cfg: &Watched) -> anyhow::Result<GcReport> {
    let pass = gc::CONNTRACK_MAPS
        .iter()
        .try_fold(GcReport::default(), |sum, name| {
            let mut map = gc::open_conntrack(&cfg.instance, name)?;
            Ok(sum + gc::collect(&mut map, &cfg.timeouts)?)
        });
    match pass {
        Ok(report) => Ok(report),
        Err(GcError::Datapath(e @ DatapathError::NotPinned { .. })) => {
            Err(anyhow::Error::new(e)).context("the instance was taken down under the daemon")
        }
        Err(e) => Err(anyhow::Error::new(e)).context("while garbage-collecting conntrack"),
    }
}

/// A summary: a line with the uptime, conntrack fill, drops in total and the last GC
/// pass, then the counters, wrapped at `width` and indented under it: the first
/// summary lists every counter that is not 0, the later ones those that moved since
/// the one before, with their rate over the interval.
fn summary(
    uptime: Duration,
    counters: &[(netfast_common::Counter, u64)],
    previous: Option<&[(netfast_common::Counter, u64)]>,
    interval: Duration,
    gc: Option<GcReport>,
    capacity: u32,
    width: usize,
) -> Vec<String> {
    let mut head = format!("[{:>6}s]", uptime.as_secs());
    if let Some(gc) = gc {
        head += &format!(
            " conntrack {}/{} ({:.1}%)",
            gc.scanned,
            capacity,
            gc.scanned as f64 * 100.0 / f64::from(capacity.max(1))
        );
    }
    let drops: u64 = counters
        .iter()
        .filter(|(c, _)| c.is_drop())
        .map(|(_, v)| v)
        .sum();
    head += &format!(" drops={drops}");
    if let Some(gc) = gc {
        head += &format!(
            " | gc: {} expired, {} deleted, {:.1} ms",
            gc.expired,
            gc.deleted,
            gc.duration.as_secs_f64() * 1e3
        );
    }
    let secs = interval.as_secs_f64().max(0.001);
    let items = super::render::live_counter_items(counters, previous, |change| {
        let rate = change as f64 / secs;
        if rate < 10.0 {
            format!("+{rate:.1}/s")
        } else {
            format!("+{rate:.0}/s")
        }
    });
    let indent = " ".repeat(head.find(']').map_or(0, |i| i + 2));
    std::iter::once(head)
        .chain(super::render::wrap_items(&indent, &items, width))
        .collect()
}

/// The aya-log ring buffer of the programs attached now. Another `up` (by the
/// operator, while the daemon runs) swaps the programs and with them the buffer, so
/// the attached program id is checked on every drain.
#[derive(Default)]
struct DatapathLog {
    prog_id: Option<u32>,
    logger: Option<EbpfLogger<Stderr>>,
    warned: bool,
}

impl DatapathLog {
    fn refresh(&mut self, instance: &str) {
        let id = match bpf::loader::ingress_prog_id(instance) {
            Ok(id) => id,
            Err(e) => {
                self.warn(&format!("cannot find the attached program: {e}"));
                return;
            }
        };
        if self.prog_id == Some(id) {
            return;
        }
        // Drain what the old programs logged before switching.
        self.drain();
        self.prog_id = Some(id);
        match EbpfLogger::init_from_id_with_logger(id, Stderr) {
            Ok(logger) => {
                self.logger = Some(logger);
                self.warned = false;
            }
            Err(e) => {
                self.logger = None;
                self.warn(&format!("no aya-log buffer on program {id}: {e}"));
            }
        }
    }

    fn drain(&mut self) {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
    }

    /// Once per problem, not once per tick.
    fn warn(&mut self, what: &str) {
        if !self.warned {
            eprintln!("netfast: datapath log unavailable ({what}); counters still count");
            self.warned = true;
        }
    }
}

/// Prints the datapath's log records on stderr.
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!(
            "netfast: datapath {}: {}",
            record.level().as_str().to_lowercase(),
            record.args()
        );
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {

    use crate::cli::render::tests::sample;

    use super::*;

    /// The daemon's summary: a short head line, then the counters under it, wrapped;
    /// later summaries list only the counters that moved, with their rate.
    #[test]
    fn summaries_are_a_head_line_and_the_counters_that_moved() {
        let gc = GcReport {
            scanned: 4,
            expired: 1,
            deleted: 2,
            duration: Duration::from_micros(800),
            ..GcReport::default()
        };
        let first = sample(&[("snat_new", 2), ("snat_established", 9), ("snat_reply", 10)]);
        let lines = summary(
            Duration::from_secs(2),
            &first,
            None,
            Duration::from_secs(1),
            Some(gc),
            262_144,
            100,
        );
        assert_eq!(
            lines,
            [
                "[     2s] conntrack 4/262144 (0.0%) drops=0 | gc: 1 expired, 2 deleted, 0.8 ms",
                "          snat_new=2  snat_established=9  snat_reply=10",
            ]
        );
        let next = sample(&[
            ("snat_new", 2),
            ("snat_established", 19),
            ("snat_reply", 60),
        ]);
        let lines = summary(
            Duration::from_secs(4),
            &next,
            Some(&first),
            Duration::from_secs(2),
            None,
            262_144,
            100,
        );
        assert_eq!(
            lines,
            [
                "[     4s] drops=0",
                "          snat_established=19 (+5.0/s)  snat_reply=60 (+25/s)",
            ]
        );
        // Nothing moved: the head line alone.
        let quiet = summary(
            Duration::from_secs(6),
            &next,
            Some(&next),
            Duration::from_secs(2),
            None,
            262_144,
            100,
        );
        assert_eq!(quiet, ["[     6s] drops=0"]);
    }
}
