//! Per-packet program cost alone, from BPF_PROG_TEST_RUN: the benchmark's last scenario
//! without the lanes, for a before/after comparison of a datapath change.
//!
//! `cargo build --release -p netfast-bench --examples &&
//!  target/release/examples/progcost [RUNS] [BLOCKS] [CLASS,CLASS...]` (as root;
//! defaults 50000 and 8, the full benchmark's, and every class). Name the classes an
//! older build had to compare the two over one class set.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let runs = match args.next() {
        Some(runs) => runs
            .parse()
            .with_context(|| format!("RUNS {runs:?} is not a count; pass e.g. 50000"))?,
        None => 50_000,
    };
    let blocks = match args.next() {
        Some(blocks) => blocks
            .parse()
            .with_context(|| format!("BLOCKS {blocks:?} is not a count; pass e.g. 8"))?,
        None => 8,
    };
    let only: Option<Vec<String>> = args
        .next()
        .map(|list| list.split(',').map(str::to_owned).collect());
    let only_refs: Option<Vec<&str>> = only
        .as_ref()
        .map(|names| names.iter().map(String::as_str).collect());
    let costs = netfast_bench::progcost::measure_classes(runs, blocks, only_refs.as_deref())
        .context("while measuring the programs with BPF_PROG_TEST_RUN")?;
    println!(
        "| program | class | counter | net ns (median − empty) | raw p50 ns | net ns, repeat=RUNS (stateless classes) |"
    );
    println!("|---|---|---|---|---|---|");
    for cost in costs {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {} |",
            cost.program,
            cost.class,
            cost.counter,
            cost.net_ns,
            cost.raw_ns.median,
            cost.net_ns_repeat
                .map_or_else(|| "-".to_owned(), |ns| format!("{ns:.1}"))
        );
    }
    Ok(())
}
