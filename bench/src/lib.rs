//! netfast's benchmark: the same sandbox built once per lane (plain routing, netfast
//! tcx, netfast XDP, iptables-nft, iptables-legacy, an nftables dnat map), short
//! trials interleaved across the lanes in blocks with a random lane order per block,
//! and a report with medians, spreads and paired ratios.
//!
//! [`run`] does it all and returns the [`Report`]; [`report::write`] puts it under
//! `target/bench/`. `--quick` ([`Options::quick`]) runs every scenario once, briefly.

pub mod charts;
pub mod lanes;
pub mod progcost;
pub mod report;
pub mod stats;
pub mod sys;
pub mod traffic;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lanes::{Lane, LaneKind};
use report::{BlockNoise, ConntrackCheck, Figure, LaneInfo, Report};
use serde::Serialize;
use stats::{Rng, Summary};
use traffic::{FlowCursor, Placement, UdpFlows};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "the benchmark needs root (namespaces, BPF, iptables); run it as root, e.g. `sudo -E cargo xtask bench`"
    )]
    NotRoot,
    #[error("interrupted; the lanes are being torn down")]
    Interrupted,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not run `{what}`: {source}; is it installed (`cargo xtask setup`)?")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{what}` failed ({status}): {stderr}")]
    Tool {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {detail}")]
    Bpf { what: String, detail: String },
    #[error("{what}")]
    Check { what: String },
    #[error(transparent)]
    Netns(#[from] netfast::host::netns::NetnsError),
    #[error(transparent)]
    Lab(#[from] netfast::lab::LabError),
    #[error(transparent)]
    Datapath(#[from] netfast::bpf::DatapathError),
    #[error("loading the datapath object: {0}")]
    Ebpf(#[from] aya::EbpfError),
}

/// How much to run.
#[derive(Clone, Debug, Serialize)]
pub struct Options {
    pub quick: bool,
    /// Blocks of the main phase (one trial per lane and scenario each).
    pub blocks: usize,
    /// Length of one connection-rate, latency or UDP trial.
    pub trial: Duration,
    /// Offered UDP rate, packets per second.
    pub udp_pps: u64,
    pub iperf_seconds: u32,
    /// Published-port counts for rule scaling; the first is the main phase's.
    pub rule_sizes: Vec<usize>,
    pub scaling_blocks: usize,
    /// BPF_PROG_TEST_RUN runs per class.
    pub progcost_runs: usize,
    pub lanes: Vec<LaneKind>,
    #[serde(skip)]
    pub netfast_bin: PathBuf,
    #[serde(skip)]
    pub out_dir: PathBuf,
    /// The command line to print in the report.
    pub command: String,
}

impl Options {
    pub fn full(netfast_bin: PathBuf, out_dir: PathBuf) -> Options {
        Options {
            quick: false,
            blocks: 7,
            trial: Duration::from_millis(1000),
            // More than any lane forwards on a 2-core machine: the generator's
            // sendmmsg carries the forwarding on its CPU, so what a lane cannot forward
            // shows as a lower delivered rate.
            udp_pps: 1_000_000,
            iperf_seconds: 2,
            rule_sizes: vec![1, 1_000, 10_000],
            scaling_blocks: 3,
            progcost_runs: 50_000,
            lanes: LaneKind::ALL.to_vec(),
            netfast_bin,
            out_dir,
            command: "cargo xtask bench".into(),
        }
    }

    pub fn quick(netfast_bin: PathBuf, out_dir: PathBuf) -> Options {
        Options {
            quick: true,
            blocks: 1,
            trial: Duration::from_millis(200),
            udp_pps: 20_000,
            iperf_seconds: 1,
            rule_sizes: vec![1, 10, 100],
            scaling_blocks: 1,
            progcost_runs: 200,
            command: "cargo xtask bench --quick".into(),
            ..Options::full(netfast_bin, out_dir)
        }
    }
}

/// Scenario and metric names, as they appear in the report.
pub mod names {
    pub const CONN: &str = "connection rate";
    pub const RR: &str = "request/response latency";
    pub const UDP_NEW: &str = "UDP, new flows";
    pub const UDP_EST: &str = "UDP, established flows";
    pub const IPERF: &str = "TCP throughput (iperf3)";
    /// The TCP scenarios again with client and server on one CPU
    /// ([`crate::traffic::Placement::OneCpu`]).
    pub const CONN_ONE_CPU: &str = "connection rate, one CPU";
    pub const RR_ONE_CPU: &str = "request/response latency, one CPU";
    pub const IPERF_ONE_CPU: &str = "TCP throughput (iperf3), one CPU";
    pub const SCALING: &str = "rule scaling";
    pub const SCALING_UDP: &str = "rule scaling, UDP new flows";
}

type Key = (String, String, LaneKind, usize);

/// Per-block samples, paired across lanes by block index.
#[derive(Default)]
struct Samples {
    values: BTreeMap<Key, Vec<f64>>,
    meta: BTreeMap<(String, String), (&'static str, &'static str)>,
}

impl Samples {
    #[expect(clippy::too_many_arguments, reason = "one figure's full key and value")]
    fn put(
        &mut self,
        scenario: &str,
        metric: &str,
        unit: &'static str,
        better: &'static str,
        lane: LaneKind,
        rules: usize,
        block: usize,
        value: f64,
    ) {
        self.meta
            .insert((scenario.into(), metric.into()), (unit, better));
        let v = self
            .values
            .entry((scenario.into(), metric.into(), lane, rules))
            .or_default();
        if v.len() <= block {
            v.resize(block + 1, f64::NAN);
        }
        v[block] = value;
    }
}

/// Builds the lanes, runs every scenario, tears the lanes down, returns the report.
pub fn run(opts: &Options) -> Result<Report, BenchError> {
    if !nix_is_root() {
        return Err(BenchError::NotRoot);
    }
    let started = Instant::now();
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| BenchError::Io {
        what: format!("creating {}", opts.out_dir.display()),
        source,
    })?;
    let mut report = Report::new(opts);
    let run_tag = format!("{}", std::process::id() % 10_000);

    // Every lane stays up for the whole run; dropping `lanes` tears them all down,
    // also on an error or Ctrl-C (which stops between trials).
    let mut lanes: Vec<Lane> = Vec::new();
    for &kind in &opts.lanes {
        sys::check_interrupt()?;
        eprintln!("bench: building lane {kind}");
        lanes.push(Lane::build(
            kind,
            &run_tag,
            &opts.netfast_bin,
            &opts.out_dir,
        )?);
    }
    let base_fp = lanes
        .iter()
        .find(|l| l.kind == LaneKind::Base)
        .map(|l| l.link_fingerprint());
    for lane in &lanes {
        let fp = lane.link_fingerprint();
        let differs = base_fp
            .as_ref()
            .map(|b| {
                fp.iter()
                    .filter(|(k, v)| b.get(*k) != Some(*v))
                    .map(|(k, v)| format!("{k}: {v} (base: {})", b.get(k).map_or("-", |s| s)))
                    .collect()
            })
            .unwrap_or_default();
        report.lanes.push(LaneInfo {
            name: lane.kind.name().into(),
            description: lane.kind.description().into(),
            links: fp,
            differs_from_base: differs,
            counters: Vec::new(),
        });
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(42);
    let mut rng = Rng::seeded(seed);
    let mut samples = Samples::default();
    let mut cursors: BTreeMap<LaneKind, FlowCursor> =
        opts.lanes.iter().map(|&k| (k, FlowCursor(0))).collect();
    let rules0 = opts.rule_sizes.first().copied().unwrap_or(1);

    // Main phase: every scenario at the first rule size.
    for block in 0..opts.blocks {
        eprintln!("bench: block {}/{}", block + 1, opts.blocks);
        let noise = NoiseMeter::start();
        for scenario in [
            names::CONN,
            names::RR,
            names::UDP_NEW,
            names::UDP_EST,
            names::IPERF,
            names::CONN_ONE_CPU,
            names::RR_ONE_CPU,
            names::IPERF_ONE_CPU,
        ] {
            let mut order: Vec<usize> = (0..lanes.len()).collect();
            rng.shuffle(&mut order);
            for i in order {
                sys::check_interrupt()?;
                let lane = &lanes[i];
                let cursor = cursors.entry(lane.kind).or_insert(FlowCursor(0));
                if let Err(e) = trial(
                    opts,
                    lane,
                    scenario,
                    scenario,
                    rules0,
                    block,
                    cursor,
                    &mut samples,
                ) {
                    if matches!(e, BenchError::Interrupted) {
                        return Err(e);
                    }
                    report.errors.push(format!(
                        "{scenario}, lane {}, block {block}: {e}",
                        lane.kind
                    ));
                }
                check_conntrack(lane, scenario, &mut report);
            }
        }
        report
            .blocks
            .push(noise.finish(format!("main {}", block + 1), names::CONN, rules0, block));
    }

    // Rule scaling: scenarios 1 and 3 (new flows) at every size, all lanes.
    for &n in &opts.rule_sizes {
        for lane in lanes.iter_mut().filter(|l| l.kind.has_rules()) {
            sys::check_interrupt()?;
            eprintln!("bench: lane {} with {n} published ports", lane.kind);
            let t = Instant::now();
            if let Err(e) = lane.set_rules(n) {
                report.errors.push(format!(
                    "rule scaling: lane {} with {n} ports: {e}",
                    lane.kind
                ));
                continue;
            }
            report.rule_load_seconds.push(report::RuleLoad {
                lane: lane.kind.name().into(),
                rules: n,
                seconds: t.elapsed().as_secs_f64(),
            });
        }
        for block in 0..opts.scaling_blocks {
            let noise = NoiseMeter::start();
            for scenario in [names::CONN, names::UDP_NEW] {
                let mut order: Vec<usize> = (0..lanes.len()).collect();
                rng.shuffle(&mut order);
                for i in order {
                    sys::check_interrupt()?;
                    let lane = &lanes[i];
                    let label = if scenario == names::CONN {
                        names::SCALING
                    } else {
                        names::SCALING_UDP
                    };
                    let cursor = cursors.entry(lane.kind).or_insert(FlowCursor(0));
                    if let Err(e) =
                        trial(opts, lane, scenario, label, n, block, cursor, &mut samples)
                    {
                        if matches!(e, BenchError::Interrupted) {
                            return Err(e);
                        }
                        report.errors.push(format!(
                            "{label}, {n} ports, lane {}, block {block}: {e}",
                            lane.kind
                        ));
                    }
                    check_conntrack(lane, label, &mut report);
                }
            }
            report.blocks.push(noise.finish(
                format!("scaling {n} ports, {}", block + 1),
                names::SCALING,
                n,
                block,
            ));
        }
    }

    for (info, lane) in report.lanes.iter_mut().zip(&lanes) {
        if !lane.kind.is_netfast() {
            continue;
        }
        match netfast::bpf::maps::read_counters(lane.prefix()) {
            Ok(counters) => {
                info.counters = counters
                    .into_iter()
                    .filter(|(_, value)| *value != 0)
                    .map(|(counter, value)| (counter.name().to_owned(), value))
                    .collect();
            }
            Err(e) => report
                .errors
                .push(format!("reading {}'s counters: {e}", lane.kind)),
        }
    }

    // Tear the lanes down before the in-process BPF measurements, so they run alone.
    eprintln!("bench: tearing the lanes down");
    drop(lanes);

    eprintln!("bench: per-packet program cost (BPF_PROG_TEST_RUN)");
    match progcost::measure(opts.progcost_runs, opts.blocks.max(1)) {
        Ok(c) => report.prog_cost = c,
        Err(e) => report.errors.push(format!("program cost: {e}")),
    }

    flag_noise(&mut report.blocks, &samples);
    report.figures = figures(&samples);
    report.duration_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn check_conntrack(lane: &Lane, phase: &str, report: &mut Report) {
    if !lane.kind.is_netfast() {
        return;
    }
    match lane.conntrack_count() {
        Ok(count) => {
            if count != 0 {
                report.errors.push(format!(
                    "lane {} ({phase}): {count} nf_conntrack entries in its host namespace; netfast must not touch netfilter",
                    lane.kind
                ));
            }
            report.conntrack_checks.push(ConntrackCheck {
                lane: lane.kind.name().into(),
                phase: phase.into(),
                entries: count,
            });
        }
        Err(e) => report
            .errors
            .push(format!("lane {}: conntrack -C: {e}", lane.kind)),
    }
}

/// One trial of `scenario` in `lane`, recorded under `label`.
#[expect(clippy::too_many_arguments, reason = "the trial's whole context")]
fn trial(
    opts: &Options,
    lane: &Lane,
    scenario: &str,
    label: &str,
    rules: usize,
    block: usize,
    cursor: &mut FlowCursor,
    samples: &mut Samples,
) -> Result<(), BenchError> {
    let t = lane.targets();
    let (ctr, cli) = (lane.container(), lane.client());
    let k = lane.kind;
    let (scenario, placement) = match scenario {
        names::CONN_ONE_CPU => (names::CONN, Placement::OneCpu),
        names::RR_ONE_CPU => (names::RR, Placement::OneCpu),
        names::IPERF_ONE_CPU => (names::IPERF, Placement::OneCpu),
        other => (other, Placement::Split),
    };
    match scenario {
        names::CONN => {
            let r = traffic::conn_rate(
                &ctr,
                &cli,
                t.tcp,
                lanes::TCP_BACKEND,
                opts.trial,
                1_000_000,
                placement,
            )?;
            if r.connections == 0 {
                return Err(BenchError::Check {
                    what: format!("no connection succeeded ({} failed)", r.failures),
                });
            }
            let rate = r.connections as f64 / r.elapsed.as_secs_f64();
            samples.put(
                label,
                "connections/s",
                "conn/s",
                "higher",
                k,
                rules,
                block,
                rate,
            );
            samples.put(
                label,
                "connect p50",
                "µs",
                "lower",
                k,
                rules,
                block,
                stats::quantile(&r.connect_us, 0.5),
            );
            samples.put(
                label,
                "connect p99",
                "µs",
                "lower",
                k,
                rules,
                block,
                stats::quantile(&r.connect_us, 0.99),
            );
            samples.put(
                label,
                "failed connections",
                "count",
                "lower",
                k,
                rules,
                block,
                r.failures as f64,
            );
        }
        names::RR => {
            let rtts = traffic::request_response(
                &ctr,
                &cli,
                t.tcp,
                lanes::TCP_BACKEND,
                opts.trial,
                2_000_000,
                placement,
            )?;
            for (metric, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
                samples.put(
                    label,
                    metric,
                    "µs",
                    "lower",
                    k,
                    rules,
                    block,
                    stats::quantile(&rtts, q),
                );
            }
        }
        names::UDP_NEW | names::UDP_EST => {
            let flows = if scenario == names::UDP_NEW {
                UdpFlows::New
            } else {
                UdpFlows::Established
            };
            if flows == UdpFlows::New {
                // A new-flow trial adds up to a few hundred thousand flows, more than
                // nf_conntrack (262144) or netfast's CONNTRACK holds. Every NAT lane
                // starts it from an empty table, and is emptied again after it, so no
                // other trial runs against a table this flood filled.
                lane.flush_conntrack()?;
            }
            let r = traffic::udp_pps(
                &ctr,
                &cli,
                lanes::CLIENT_ADDR,
                t.udp,
                lanes::UDP_BACKEND,
                flows,
                cursor,
                opts.udp_pps,
                opts.trial,
            );
            if flows == UdpFlows::New {
                lane.flush_conntrack()?;
            }
            let r = r?;
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            let delivered = r.received as f64 / secs;
            let loss = if r.sent > 0 {
                100.0 * (r.sent.saturating_sub(r.received)) as f64 / r.sent as f64
            } else {
                f64::NAN
            };
            let cpu_ns = if r.received > 0 {
                r.cpu.busy() as f64 * sys::ns_per_tick() / r.received as f64
            } else {
                f64::NAN
            };
            samples.put(
                label,
                "delivered pps",
                "pkt/s",
                "higher",
                k,
                rules,
                block,
                delivered,
            );
            samples.put(
                label,
                "sent pps",
                "pkt/s",
                "higher",
                k,
                rules,
                block,
                r.sent as f64 / secs,
            );
            samples.put(label, "loss", "%", "lower", k, rules, block, loss);
            samples.put(
                label,
                "CPU per packet",
                "ns",
                "lower",
                k,
                rules,
                block,
                cpu_ns,
            );
        }
        names::IPERF => {
            let bps = traffic::iperf3(&ctr, &cli, t.iperf, opts.iperf_seconds, placement)?;
            samples.put(
                label,
                "throughput",
                "Gbit/s",
                "higher",
                k,
                rules,
                block,
                bps / 1e9,
            );
        }
        other => {
            return Err(BenchError::Check {
                what: format!("unknown scenario {other}"),
            });
        }
    }
    Ok(())
}

/// Steal and softirq during a block, from /proc/stat.
struct NoiseMeter {
    cpu: sys::CpuTimes,
    load: f64,
}

impl NoiseMeter {
    fn start() -> NoiseMeter {
        NoiseMeter {
            cpu: sys::CpuTimes::read().unwrap_or_default(),
            load: sys::loadavg(),
        }
    }

    /// `scenario`/`rules`/`index` locate the block's base-lane connection rate, from
    /// which [`flag_noise`] later tells how far this block drifted.
    fn finish(self, name: String, scenario: &str, rules: usize, index: usize) -> BlockNoise {
        let d = sys::CpuTimes::read().unwrap_or_default().since(&self.cpu);
        let total = d.total().max(1) as f64;
        let pct = |x: u64| 100.0 * x as f64 / total;
        BlockNoise {
            name,
            scenario: scenario.into(),
            rules,
            index,
            steal_pct: pct(d.steal),
            softirq_pct: pct(d.softirq),
            irq_pct: pct(d.irq),
            loadavg_at_start: self.load,
            base_drift_pct: f64::NAN,
            noisy: false,
        }
    }
}

/// The machine is shared, so a block is judged by its own reference: the base lane's
/// connection rate in that block against the base median over the phase's blocks.
/// Noisy: drift beyond 10%, or steal above 2%.
fn flag_noise(blocks: &mut [BlockNoise], samples: &Samples) {
    for b in blocks.iter_mut() {
        let key = (
            b.scenario.clone(),
            "connections/s".to_string(),
            LaneKind::Base,
            b.rules,
        );
        if let Some(v) = samples.values.get(&key) {
            let median = stats::quantile(v, 0.5);
            if let Some(x) = v.get(b.index) {
                b.base_drift_pct = 100.0 * (x - median) / median;
            }
        }
        b.noisy = b.steal_pct > 2.0 || b.base_drift_pct.abs() > 10.0;
    }
}

/// Turns per-block samples into figures with paired ratios: in each block, lane ÷
/// iptables-nft and lane ÷ base of the same scenario, metric and rule count.
fn figures(samples: &Samples) -> Vec<Figure> {
    let mut out = Vec::new();
    for ((scenario, metric, lane, rules), values) in &samples.values {
        let (unit, better) = samples
            .meta
            .get(&(scenario.clone(), metric.clone()))
            .copied()
            .unwrap_or(("", ""));
        let paired = |reference: LaneKind| -> Option<Summary> {
            let r = samples
                .values
                .get(&(scenario.clone(), metric.clone(), reference, *rules))?;
            let ratios: Vec<f64> = values
                .iter()
                .zip(r)
                .map(|(a, b)| a / b)
                .filter(|x| x.is_finite())
                .collect();
            if ratios.is_empty() {
                None
            } else {
                Some(Summary::of(&ratios))
            }
        };
        out.push(Figure {
            scenario: scenario.clone(),
            metric: metric.clone(),
            unit: unit.into(),
            better: better.into(),
            lane: lane.name().into(),
            rules: *rules,
            summary: Summary::of(values),
            vs_iptables_nft: paired(LaneKind::IptablesNft),
            vs_base: paired(LaneKind::Base),
            samples: values.clone(),
        });
    }
    out
}

/// Where `cargo xtask bench` writes: `<target>/bench`.
pub fn default_out_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("bench")
}
