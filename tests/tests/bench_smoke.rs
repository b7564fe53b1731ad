//! The benchmark's quick mode as a smoke test: every lane comes up and carries every
//! scenario, and the report is well formed. It never checks a speed.

#[allow(
    dead_code,
    reason = "each test binary uses its own part of the shared support"
)]
mod support;

use std::{collections::BTreeSet, path::PathBuf};

use netfast_bench::{Options, lanes::LaneKind, names, report};

#[test]
fn quick_bench_runs_every_lane_and_scenario() {
    support::require_root();
    let out = std::env::temp_dir().join(format!("netfast-bench-smoke-{}", std::process::id()));
    let opts = Options::quick(support::netfast_bin(), out.clone());
    let r = netfast_bench::run(&opts).expect("the quick benchmark runs");
    let written = report::write(&r).expect("the report is written");
    assert!(
        r.errors.is_empty(),
        "errors during the run: {:#?}",
        r.errors
    );

    let lanes: BTreeSet<&str> = r.lanes.iter().map(|l| l.name.as_str()).collect();
    let all: BTreeSet<&str> = LaneKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(lanes, all, "every lane is in the report");

    // Every scenario and metric, for every lane, at every size it applies to.
    let expect: &[(&str, &[&str], &[usize])] = &[
        (
            names::CONN,
            &["connections/s", "connect p50", "connect p99"],
            &[1],
        ),
        (names::RR, &["p50", "p99", "p99.9"], &[1]),
        (
            names::UDP_NEW,
            &["delivered pps", "loss", "CPU per packet"],
            &[1],
        ),
        (
            names::UDP_EST,
            &["delivered pps", "loss", "CPU per packet"],
            &[1],
        ),
        (names::IPERF, &["throughput"], &[1]),
        (
            names::CONN_ONE_CPU,
            &["connections/s", "connect p50", "connect p99"],
            &[1],
        ),
        (names::RR_ONE_CPU, &["p50", "p99", "p99.9"], &[1]),
        (names::IPERF_ONE_CPU, &["throughput"], &[1]),
        (names::SCALING, &["connections/s"], &opts.rule_sizes),
        (names::SCALING_UDP, &["delivered pps"], &opts.rule_sizes),
    ];
    for (scenario, metrics, sizes) in expect {
        for metric in *metrics {
            for lane in &all {
                for rules in *sizes {
                    // Plain routing has no rules to scale; it is measured beside them.
                    let f = r
                        .figures
                        .iter()
                        .find(|f| {
                            f.scenario == *scenario
                                && f.metric == *metric
                                && f.lane == *lane
                                && f.rules == *rules
                        })
                        .unwrap_or_else(|| {
                            panic!("no figure for {scenario} / {metric} / {lane} / {rules} ports")
                        });
                    assert!(
                        f.summary.n > 0 && f.summary.median.is_finite(),
                        "{scenario} / {metric} / {lane}: not a finite number: {:?}",
                        f.summary
                    );
                    // A ratio exists wherever the reference is not zero (loss often is).
                    if *lane != "iptables-nft" && *metric != "loss" {
                        assert!(
                            f.vs_iptables_nft
                                .as_ref()
                                .is_some_and(|s| s.median.is_finite())
                        );
                    }
                }
            }
        }
    }
    for f in &r.figures {
        assert!(f.summary.median.is_finite(), "{f:?}");
    }

    // 6 classes on each ingress program (miss, new-flow and established DNAT, reverse
    // SNAT, ICMP error, later fragment), 2 on egress, and the 2 raw map floors.
    assert_eq!(r.prog_cost.len(), 16, "every program cost class");
    assert!(
        r.prog_cost
            .iter()
            .any(|c| c.class == netfast_bench::progcost::MAP_FLOOR_CLASS),
        "the map floor is measured beside the new-flow classes"
    );
    for c in &r.prog_cost {
        assert!(c.raw_ns.median.is_finite() && c.net_ns.is_finite(), "{c:?}");
    }
    assert!(!r.conntrack_checks.is_empty());
    assert!(r.conntrack_checks.iter().all(|c| c.entries == 0));

    // The files: JSON that parses back with the same lanes, Markdown with its tables,
    // and three SVGs.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    assert_eq!(json["lanes"].as_array().map(Vec::len), Some(7));
    for key in [
        "machine",
        "kernel",
        "date",
        "figures",
        "prog_cost",
        "blocks",
    ] {
        assert!(!json[key].is_null(), "report.json has {key}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    for heading in [
        "## Lanes",
        "## Summary",
        "## Rule scaling",
        "## Per-packet program cost",
    ] {
        assert!(md.contains(heading), "report.md has {heading}");
    }
    let svgs: Vec<&PathBuf> = written
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .collect();
    assert_eq!(svgs.len(), 3);
    for p in svgs {
        let text = std::fs::read_to_string(p).expect("svg");
        assert!(text.contains("<svg"), "{} is an SVG", p.display());
    }
    let _ = std::fs::remove_dir_all(&out);
}
