//! Reproduces the failed connections the benchmark sees in the netfast lanes: one lane,
//! three 2 s connection-rate trials (the client starts reusing TIME_WAIT ports during
//! the second), then netfast's counters and every namespace's non-zero TCP reset,
//! drop and error counters.
//!
//! `cargo build --release -p netfast -p netfast-bench --bins --examples &&
//!  target/release/examples/conn_failures [tc|xdp]` (as root).

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::Context as _;
use netfast_bench::{
    lanes::{self, Lane, LaneKind},
    traffic,
};

fn main() -> anyhow::Result<()> {
    let kind = match std::env::args().nth(1).as_deref() {
        Some("tc") => LaneKind::NetfastTc,
        _ => LaneKind::NetfastXdp,
    };
    let bin = PathBuf::from("target/release/netfast");
    let lane = Lane::build(kind, "rp", &bin, &std::env::temp_dir())
        .with_context(|| format!("while building lane {kind}"))?;
    for _ in 0..3 {
        let r = traffic::conn_rate(
            &lane.container(),
            &lane.client(),
            lane.targets().tcp,
            lanes::TCP_BACKEND,
            Duration::from_secs(2),
            1_000_000,
            traffic::Placement::Split,
        )
        .context("while running a connection-rate trial")?;
        println!(
            "{kind}: {} connections, {} failed, in {:.2} s",
            r.connections,
            r.failures,
            r.elapsed.as_secs_f64()
        );
    }
    let counters = netfast::bpf::maps::read_counters(lane.prefix())
        .context("while reading netfast's counters")?;
    for (c, v) in counters.into_iter().filter(|(_, v)| *v > 0) {
        println!("netfast {}: {v}", c.name());
    }
    for (role, ns) in [
        ("client", lane.client()),
        ("host", lane.host()),
        ("container", lane.container()),
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "nstat", "-az"])
            .output()
            .context("while running nstat")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let interesting = ["Rst", "Reset", "Drop", "Err", "Fail", "Retrans", "TW"]
                .iter()
                .any(|w| line.contains(w));
            if f.len() > 1 && f[1] != "0" && interesting {
                println!("{role} {}: {}", f[0], f[1]);
            }
        }
    }
    Ok(())
}
