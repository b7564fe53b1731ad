//! The report: `report.json` (every figure with its samples and spread) and
//! `report.md` (the same as tables), plus the charts.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::PathBuf};

use serde::Serialize;

use crate::{BenchError, Options, names, progcost::ClassCost, stats::Summary};

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_mib: u64,
    pub hostname: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LaneInfo {
    pub name: String,
    pub description: String,
    /// MTU and offloads of every link on the path.
    pub links: BTreeMap<String, String>,
    /// Link settings that differ from the base lane's (should be none).
    pub differs_from_base: Vec<String>,
    /// netfast lanes: every counter that moved during the run (summed over CPUs), read
    /// just before teardown, in `Counter::ALL` order: which path the packets took
    /// (the fast path, XDP or the tc program behind it), and every drop.
    pub counters: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    /// "higher" or "lower" is better.
    pub better: String,
    pub lane: String,
    /// Published ports configured when it was measured.
    pub rules: usize,
    /// One value per block (NaN, written as null, where a trial failed).
    pub samples: Vec<f64>,
    pub summary: Summary,
    /// Per-block lane ÷ iptables-nft.
    pub vs_iptables_nft: Option<Summary>,
    /// Per-block lane ÷ base.
    pub vs_base: Option<Summary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BlockNoise {
    pub name: String,
    /// Where the block's base-lane reference figure is.
    pub scenario: String,
    pub rules: usize,
    pub index: usize,
    pub steal_pct: f64,
    pub softirq_pct: f64,
    pub irq_pct: f64,
    /// The base lane's connection rate in this block against its median over the
    /// phase's blocks, in percent: the shared machine's drift.
    pub base_drift_pct: f64,
    pub loadavg_at_start: f64,
    pub noisy: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConntrackCheck {
    pub lane: String,
    pub phase: String,
    pub entries: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleLoad {
    pub lane: String,
    pub rules: usize,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: String,
    pub mode: String,
    pub command: String,
    pub date: String,
    pub kernel: String,
    pub machine: Machine,
    pub loadavg_at_start: f64,
    pub duration_seconds: f64,
    pub options: Options,
    pub lanes: Vec<LaneInfo>,
    pub figures: Vec<Figure>,
    pub prog_cost: Vec<ClassCost>,
    pub blocks: Vec<BlockNoise>,
    pub conntrack_checks: Vec<ConntrackCheck>,
    pub rule_load_seconds: Vec<RuleLoad>,
    pub errors: Vec<String>,
}

impl Report {
    pub fn new(opts: &Options) -> Report {
        Report {
            tool: "netfast-bench".into(),
            mode: if opts.quick { "quick" } else { "full" }.into(),
            command: opts.command.clone(),
            date: utc_now(),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            machine: machine(),
            loadavg_at_start: crate::sys::loadavg(),
            duration_seconds: 0.0,
            options: opts.clone(),
            lanes: Vec::new(),
            figures: Vec::new(),
            prog_cost: Vec::new(),
            blocks: Vec::new(),
            conntrack_checks: Vec::new(),
            rule_load_seconds: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn figure(&self, scenario: &str, metric: &str, lane: &str, rules: usize) -> Option<&Figure> {
        self.figures.iter().find(|f| {
            f.scenario == scenario && f.metric == metric && f.lane == lane && f.rules == rules
        })
    }

    fn lane_names(&self) -> Vec<String> {
        self.lanes.iter().map(|l| l.name.clone()).collect()
    }

    /// (scenario, metric, unit, better) in the order they were first seen.
    fn metrics(&self, rules: Option<usize>) -> Vec<(String, String, String, String)> {
        let mut seen: Vec<(String, String, String, String)> = Vec::new();
        for f in &self.figures {
            if rules.is_some_and(|r| r != f.rules) {
                continue;
            }
            let key = (
                f.scenario.clone(),
                f.metric.clone(),
                f.unit.clone(),
                f.better.clone(),
            );
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
        let order = [
            names::CONN,
            names::RR,
            names::UDP_NEW,
            names::UDP_EST,
            names::IPERF,
            names::CONN_ONE_CPU,
            names::RR_ONE_CPU,
            names::IPERF_ONE_CPU,
            names::SCALING,
            names::SCALING_UDP,
        ];
        seen.sort_by_key(|(s, ..)| order.iter().position(|o| o == s).unwrap_or(99));
        seen
    }

    /// The headline table: one row per main-phase metric, one column per lane.
    /// The netfast lanes' counters side by side: a row per counter that moved in any
    /// of them; empty without a netfast lane.
    pub fn counters_table(&self) -> String {
        let lanes: Vec<&LaneInfo> = self
            .lanes
            .iter()
            .filter(|l| !l.counters.is_empty())
            .collect();
        if lanes.is_empty() {
            return String::new();
        }
        let mut names: Vec<&str> = Vec::new();
        for l in &lanes {
            for (name, _) in &l.counters {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        let mut s = String::from(
            "\nnetfast's counters over the whole run, per lane (which path the packets took, and every drop):\n\n| counter |",
        );
        for l in &lanes {
            let _ = write!(s, " {} |", l.name);
        }
        s += "\n|---|";
        s += &"---:|".repeat(lanes.len());
        s += "\n";
        for name in names {
            let _ = write!(s, "| {name} |");
            for l in &lanes {
                let value = l
                    .counters
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0, |(_, v)| *v);
                let _ = write!(s, " {value} |");
            }
            s += "\n";
        }
        s
    }

    pub fn summary_table(&self) -> String {
        let lanes = self.lane_names();
        let rules0 = self.options.rule_sizes.first().copied().unwrap_or(1);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| scenario | metric | {} | best NAT lane |",
            lanes.join(" | ")
        );
        let _ = writeln!(s, "|{}", "---|".repeat(lanes.len() + 3));
        for (scenario, metric, unit, better) in self.metrics(Some(rules0)) {
            if scenario == names::SCALING || scenario == names::SCALING_UDP {
                continue;
            }
            let mut cells = Vec::new();
            let mut best: Option<(f64, &str)> = None;
            for lane in &lanes {
                let Some(f) = self.figure(&scenario, &metric, lane, rules0) else {
                    cells.push("–".to_string());
                    continue;
                };
                let mut c = fmt_num(f.summary.median);
                if let Some(r) = &f.vs_iptables_nft
                    && lane != "iptables-nft"
                {
                    let _ = write!(c, " (×{:.2})", r.median);
                }
                cells.push(c);
                let m = f.summary.median;
                if lane != "base" && m.is_finite() {
                    let better_than = |b: f64| if better == "higher" { m > b } else { m < b };
                    if best.is_none_or(|(b, _)| better_than(b)) {
                        best = Some((m, lane.as_str()));
                    }
                }
            }
            // Every NAT lane within 2% of the best median shares the win.
            let near = |m: f64, b: f64| {
                if b == 0.0 {
                    m == 0.0
                } else {
                    ((m - b) / b).abs() < 0.02
                }
            };
            let nat: Vec<(&str, f64)> = lanes
                .iter()
                .filter(|l| *l != "base")
                .filter_map(|l| {
                    self.figure(&scenario, &metric, l, rules0)
                        .map(|f| (l.as_str(), f.summary.median))
                })
                .filter(|(_, m)| m.is_finite())
                .collect();
            let best = match best {
                None => "–".to_string(),
                Some((b, _)) => {
                    let winners: Vec<&str> = nat
                        .iter()
                        .filter(|(_, m)| near(*m, b))
                        .map(|(l, _)| *l)
                        .collect();
                    if winners.len() == nat.len() {
                        "tie (within 2%)".to_string()
                    } else {
                        winners.join(", ")
                    }
                }
            };
            let _ = writeln!(
                s,
                "| {scenario} | {metric} ({unit}, {better} is better) | {} | {best} |",
                cells.join(" | ")
            );
        }
        s
    }

    pub fn scaling_table(&self) -> String {
        let mut s = String::new();
        let sizes = &self.options.rule_sizes;
        for (scenario, metric) in [
            (names::SCALING, "connections/s"),
            (names::SCALING_UDP, "delivered pps"),
            (names::SCALING_UDP, "CPU per packet"),
        ] {
            let unit = self
                .figures
                .iter()
                .find(|f| f.scenario == scenario && f.metric == metric)
                .map_or("", |f| f.unit.as_str());
            let _ = writeln!(s, "\n{scenario}: {metric} ({unit}), median [p25–p75]\n");
            let head: Vec<String> = sizes.iter().map(|n| format!("{n} ports")).collect();
            let _ = writeln!(s, "| lane | {} |", head.join(" | "));
            let _ = writeln!(s, "|---|{}", "---|".repeat(sizes.len()));
            for lane in self.lane_names() {
                let cells: Vec<String> = sizes
                    .iter()
                    .map(|&n| {
                        self.figure(scenario, metric, &lane, n)
                            .map_or("–".into(), |f| fmt_spread(&f.summary))
                    })
                    .collect();
                let _ = writeln!(s, "| {lane} | {} |", cells.join(" | "));
            }
        }
        s
    }

    pub fn prog_cost_table(&self) -> String {
        let mut s = String::from(
            "| program | class | counter checked | raw median ns [p25–p75] | empty program ns | net ns | net ns, repeat=N |\n|---|---|---|---|---|---|---|\n",
        );
        for c in &self.prog_cost {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                c.program,
                c.class,
                c.counter,
                fmt_spread(&c.raw_ns),
                fmt_num(c.empty_ns.median),
                fmt_num(c.net_ns),
                c.net_ns_repeat.map_or("–".into(), fmt_num)
            );
        }
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# netfast benchmark ({} run)\n", self.mode);
        let _ = writeln!(s, "- date: {}", self.date);
        let _ = writeln!(
            s,
            "- machine: {}, {} CPUs, {} MiB RAM ({})",
            self.machine.cpu_model,
            self.machine.cpus,
            self.machine.memory_mib,
            self.machine.hostname
        );
        let _ = writeln!(s, "- kernel: {}", self.kernel);
        let _ = writeln!(s, "- command: `{}`", self.command);
        let _ = writeln!(
            s,
            "- took {:.0} s; load average at start {:.2}",
            self.duration_seconds, self.loadavg_at_start
        );
        let o = &self.options;
        let _ = writeln!(
            s,
            "- method: {} blocks; in each block every scenario runs once per lane, lanes in a random order; trials of {:.1} s; UDP offered at {} pkt/s (64-byte frames); iperf3 {} s; rule scaling at {:?} published ports in {} more blocks; medians over blocks, spread as [p25–p75]; ratios are paired per block (lane ÷ reference in the same block)",
            o.blocks,
            o.trial.as_secs_f64(),
            o.udp_pps,
            o.iperf_seconds,
            o.rule_sizes,
            o.scaling_blocks
        );
        let noisy = self.blocks.iter().filter(|b| b.noisy).count();
        let _ = writeln!(
            s,
            "- noise: {noisy} of {} blocks flagged noisy (steal > 2%, or the base lane's connection rate more than 10% off its median)",
            self.blocks.len()
        );
        let nonzero = self
            .conntrack_checks
            .iter()
            .filter(|c| c.entries != 0)
            .count();
        let _ = writeln!(
            s,
            "- nf_conntrack in the netfast lanes' host namespaces: {} checks, {} with entries",
            self.conntrack_checks.len(),
            nonzero
        );
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\n## Errors\n");
            for e in &self.errors {
                let _ = writeln!(s, "- {e}");
            }
        }
        let _ = writeln!(s, "\n## Lanes\n");
        let _ = writeln!(s, "| lane | what | link settings vs base |\n|---|---|---|");
        for l in &self.lanes {
            let d = if l.differs_from_base.is_empty() {
                "identical".to_string()
            } else {
                l.differs_from_base.join("; ")
            };
            let _ = writeln!(s, "| {} | {} | {d} |", l.name, l.description);
        }
        s += &self.counters_table();
        let _ = writeln!(
            s,
            "\n## Summary\n\nMedian over blocks; (×N) is the paired ratio to iptables-nft. \"best NAT lane\" excludes base.\n"
        );
        s += &self.summary_table();
        let _ = writeln!(s, "\n## Rule scaling\n");
        s += &self.scaling_table();
        let _ = writeln!(s, "\n## Per-packet program cost (BPF_PROG_TEST_RUN)\n");
        let _ = writeln!(
            s,
            "Stateful classes run with repeat=1, one syscall per packet (the kernel reuses the buffer across repeats, so a second repeat of a DNAT hit would be a miss); each class's counter is checked to have moved once per run. The empty program is `r0 = verdict; exit`, loaded by the bench itself, measured the same way and subtracted.\n"
        );
        s += &self.prog_cost_table();
        let _ = writeln!(s, "\n## Every figure\n");
        let _ = writeln!(
            s,
            "| scenario | metric | ports | lane | median | [p25–p75] | min–max | n | ÷ iptables-nft [p25–p75] | ÷ base [p25–p75] |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for (scenario, metric, unit, _) in self.metrics(None) {
            for f in self
                .figures
                .iter()
                .filter(|f| f.scenario == scenario && f.metric == metric)
            {
                let r = |x: &Option<Summary>| {
                    x.as_ref().map_or("–".into(), |r| {
                        format!("{:.3} [{:.3}–{:.3}]", r.median, r.p25, r.p75)
                    })
                };
                let _ = writeln!(
                    s,
                    "| {scenario} | {metric} ({unit}) | {} | {} | {} | [{}–{}] | {}–{} | {} | {} | {} |",
                    f.rules,
                    f.lane,
                    fmt_num(f.summary.median),
                    fmt_num(f.summary.p25),
                    fmt_num(f.summary.p75),
                    fmt_num(f.summary.min),
                    fmt_num(f.summary.max),
                    f.summary.n,
                    r(&f.vs_iptables_nft),
                    r(&f.vs_base)
                );
            }
        }
        let _ = writeln!(s, "\n## Blocks\n");
        let _ = writeln!(
            s,
            "| block | steal % | softirq % | irq % | base drift % | load at start | noisy |\n|---|---|---|---|---|---|---|"
        );
        for b in &self.blocks {
            let _ = writeln!(
                s,
                "| {} | {:.1} | {:.1} | {:.1} | {:+.1} | {:.2} | {} |",
                b.name,
                b.steal_pct,
                b.softirq_pct,
                b.irq_pct,
                b.base_drift_pct,
                b.loadavg_at_start,
                if b.noisy { "yes" } else { "no" }
            );
        }
        if !self.rule_load_seconds.is_empty() {
            let _ = writeln!(s, "\n## Time to load the published ports\n");
            let _ = writeln!(s, "| lane | ports | seconds |\n|---|---|---|");
            for r in &self.rule_load_seconds {
                let _ = writeln!(s, "| {} | {} | {:.2} |", r.lane, r.rules, r.seconds);
            }
        }
        s
    }
}

/// Writes report.json, report.md and the charts into the output directory.
pub fn write(report: &Report) -> Result<Vec<PathBuf>, BenchError> {
    let dir = &report.options.out_dir;
    fs::create_dir_all(dir).map_err(|source| BenchError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let json = serde_json::to_string_pretty(report).map_err(|e| BenchError::Check {
        what: format!("serialising the report: {e}"),
    })?;
    let mut written = Vec::new();
    for (name, text) in [("report.json", json), ("report.md", report.markdown())] {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|source| BenchError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        written.push(path);
    }
    written.extend(crate::charts::draw(report, dir)?);
    Ok(written)
}

pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let n = x.round() as i64;
        let digits = n.abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(' ');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_spread(s: &Summary) -> String {
    format!(
        "{} [{}–{}]",
        fmt_num(s.median),
        fmt_num(s.p25),
        fmt_num(s.p75)
    )
}

fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let memory_mib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024);
    Machine {
        cpu_model,
        cpus: crate::sys::online_cpus(),
        memory_mib,
        hostname: fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// "YYYY-MM-DD HH:MM UTC" without a date crate (civil-from-days, H. Hinnant).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(1_234_567.4), "1 234 567");
        assert_eq!(fmt_num(123.4), "123");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(1.234), "1.23");
        assert_eq!(fmt_num(f64::NAN), "–");
    }

    #[test]
    fn date_shape() {
        let d = utc_now();
        assert!(d.ends_with(" UTC") && d.len() == 20, "{d}");
    }
}
