//! `netfast-bench`: builds the lanes, runs the scenarios, writes the report. Normally
//! started by `cargo xtask bench [--quick]`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;
use netfast_bench::{Options, lanes::LaneKind, report, sys};

#[derive(Parser)]
#[command(about = "netfast against iptables and nftables NAT, side by side")]
struct Cli {
    /// Every scenario once, briefly, at small sizes (the smoke test's mode).
    #[arg(long)]
    quick: bool,
    /// The netfast binary that brings the netfast lanes up.
    #[arg(long)]
    netfast: PathBuf,
    /// Where report.md, report.json and the charts go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Override the number of main-phase blocks.
    #[arg(long)]
    blocks: Option<usize>,
    /// Override the offered UDP rate (packets/s).
    #[arg(long)]
    udp_pps: Option<u64>,
    /// The command line to quote in the report.
    #[arg(long)]
    command: Option<String>,
    /// Only these lanes, comma-separated (e.g. `base,netfast-tc,iptables-nft`); every
    /// lane by default. Ratios need `iptables-nft` and `base` among them.
    #[arg(long, value_delimiter = ',', value_parser = parse_lane)]
    lanes: Option<Vec<LaneKind>>,
}

fn parse_lane(name: &str) -> Result<LaneKind, String> {
    LaneKind::ALL
        .into_iter()
        .find(|kind| kind.name() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = LaneKind::ALL.iter().map(|kind| kind.name()).collect();
            format!("no lane {name:?}; the lanes are {}", known.join(", "))
        })
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    sys::catch_interrupts();
    let netfast = cli.netfast.canonicalize().with_context(|| {
        format!(
            "while looking for the netfast binary {}",
            cli.netfast.display()
        )
    })?;
    let mut opts = if cli.quick {
        Options::quick(netfast, cli.out.clone())
    } else {
        Options::full(netfast, cli.out.clone())
    };
    if let Some(b) = cli.blocks {
        opts.blocks = b.max(1);
    }
    if let Some(r) = cli.udp_pps {
        opts.udp_pps = r.max(1);
    }
    if let Some(c) = cli.command {
        opts.command = c;
    }
    if let Some(lanes) = cli.lanes {
        opts.lanes = lanes;
    }
    let report = netfast_bench::run(&opts).context("while running the benchmark")?;
    let written = report::write(&report).context("while writing the report")?;
    println!("{}", report.summary_table());
    for p in written {
        println!("wrote {}", p.display());
    }
    println!("took {:.0} s", report.duration_seconds);
    if report.errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        Ok(ExitCode::FAILURE)
    }
}
