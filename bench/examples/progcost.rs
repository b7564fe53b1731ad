//! Per-packet program cost alone, from BPF_PROG_TEST_RUN: the benchmark's last scenario
//! without the lanes, for a before/after comparison of a datapath change.
//!
//! `cargo build --release -p netfast-bench --examples &&
//!  target/release/examples/progcost [RUNS] [BLOCKS] [CLASS,CLASS...] [CAPACITY]` (as
//! root; defaults 50000 and 8, the full benchmark's, every class, and `CONNTRACK`'s
//! default 262144 entries). Name the classes an older build had to compare the two
//! over one class set. A smaller CAPACITY shows what of a class's cost is cache and TLB
//! misses in the big tables (`all` names every class).
//!
//! It runs in a network namespace of its own (unnamed, gone when it exits), with an
//! uplink veth 10.0.1.48/24 and 10.0.1.49/24, a default route via 10.0.1.1 and a
//! bridge veth 172.16.0.100/24: the datapath's route lookups (new-flow SNAT, "any"
//! publishes on other addresses) then ask a known table, never the machine's.

use std::{ffi::CString, net::Ipv4Addr, process::Command};

use anyhow::{Context as _, bail};
use netfast_bench::progcost::Routing;

/// Enters a new network namespace (the process is still single-threaded) and builds
/// the routing table the classes ask.
fn private_routing() -> anyhow::Result<Routing> {
    // SAFETY: no preconditions; called before any thread starts.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context("while entering a network namespace of its own (needs root)");
    }
    let steps: [&[&str]; 12] = [
        &["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"],
        &["ip", "link", "set", "lo", "up"],
        &[
            "ip", "link", "add", "pcup0", "type", "veth", "peer", "name", "pcup1",
        ],
        &[
            "ip", "link", "add", "pcbr0", "type", "veth", "peer", "name", "pcbr1",
        ],
        &["ip", "addr", "add", "10.0.1.48/24", "dev", "pcup0"],
        &["ip", "addr", "add", "10.0.1.49/24", "dev", "pcup0"],
        &["ip", "addr", "add", "172.16.0.100/24", "dev", "pcbr0"],
        &["ip", "link", "set", "pcup0", "up"],
        &["ip", "link", "set", "pcup1", "up"],
        &["ip", "link", "set", "pcbr0", "up"],
        &["ip", "link", "set", "pcbr1", "up"],
        &["ip", "route", "add", "default", "via", "10.0.1.1"],
    ];
    for argv in steps {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .with_context(|| format!("while running {}", argv.join(" ")))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let index = |name: &str| -> anyhow::Result<u32> {
        let c_name = CString::new(name).context("an interface name has no NUL")?;
        // SAFETY: a valid NUL-terminated string, only read.
        match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
            0 => bail!("no interface {name} in the namespace just built"),
            index => Ok(index),
        }
    };
    Ok(Routing {
        uplink_ifindex: index("pcup0")?,
        bridge_ifindex: index("pcbr0")?,
        other_local: Ipv4Addr::new(10, 0, 1, 49),
    })
}

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
        .filter(|list| list != "all")
        .map(|list| list.split(',').map(str::to_owned).collect());
    let capacity = match args.next() {
        Some(capacity) => Some(capacity.parse().with_context(|| {
            format!("CAPACITY {capacity:?} is not a count of CONNTRACK entries; pass e.g. 16384")
        })?),
        None => None,
    };
    let only_refs: Option<Vec<&str>> = only
        .as_ref()
        .map(|names| names.iter().map(String::as_str).collect());
    let routing = private_routing()?;
    let costs = netfast_bench::progcost::measure_classes_routed(
        runs,
        blocks,
        only_refs.as_deref(),
        Some(routing),
        capacity,
    )
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
