//! `netfast stats [--watch SECONDS]`: counters, rates, map fill, SNAT retries.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use netfast::bpf::pinned::{MapFill, PinnedInstance};

use super::render;
use netfast_common::Counter;

use super::target::Target;

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print again every SECONDS (1 to 3600), with per-second rates, until Ctrl-C
    /// (or --count).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true,
          value_parser = super::number::<u64>(1, 3600))]
    pub watch: Option<u64>,
    /// With --watch: stop after this many samples (1 to 1000000000).
    #[arg(long, value_name = "N", requires = "watch", allow_negative_numbers = true,
          value_parser = super::number::<u64>(1, 1_000_000_000))]
    pub count: Option<u64>,
    /// Print JSON instead of tables (one object per line with --watch).
    #[arg(long)]
    pub json: bool,
}

/// One reading: every counter and every map's fill.
type Sample = (Vec<(Counter, u64)>, Vec<MapFill>);

fn sample(inst: &PinnedInstance) -> anyhow::Result<Sample> {
    let counters = inst.counters().context("while reading COUNTERS")?;
    let fill = inst.map_fill().context("while reading the maps' fill")?;
    Ok((counters, fill))
}

pub fn run(args: &StatsArgs) -> anyhow::Result<ExitCode> {
    let (inst, _) = args.target.open()?;
    let Some(every) = args.watch else {
        let (counters, fill) = sample(&inst)?;
        super::print(
            &render::stats_view(inst.name(), &counters, None, &fill),
            args.json,
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    let (mut previous, _) = sample(&inst)?;
    let mut at = Instant::now();
    let mut n = 0u64;
    // Ctrl-C's default action ends the loop; --count bounds it for scripts.
    while args.count.is_none_or(|c| n < c) {
        std::thread::sleep(Duration::from_secs(every));
        let (counters, fill) = sample(&inst)?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let view = render::stats_view(inst.name(), &counters, Some((&previous, secs)), &fill);
        if args.json {
            super::emit_line(&serde_json::to_string(&view).context("while encoding JSON")?)?;
        } else {
            super::emit(&format!("--- {} every {every}s ---\n{view}", inst.name()))?;
        }
        previous = counters;
        n += 1;
    }
    Ok(ExitCode::SUCCESS)
}
