//! `netfast ct list|flush`: conntrack flows (pairs of CONNTRACK entries).

use std::{net::Ipv4Addr, process::ExitCode};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use netfast::{
    conntrack::{FlowFilter, monotonic_ns},
    render,
};
use netfast_common::{
    flow::{KIND_DNAT, KIND_SNAT},
    proto,
};

use super::status::Target;

#[derive(Debug, Subcommand)]
pub enum CtCmd {
    /// One row per flow: original and translated tuple, DNAT/SNAT, TCP state, age,
    /// idle time, packets and bytes (original/reply).
    List {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete the flows the filters match (both entries of each); all without filters.
    Flush {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Dnat,
    Snat,
}

/// Filters: an address or port matches any side of the original or translated tuple.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    #[arg(long, value_enum)]
    pub proto: Option<Proto>,
    #[arg(long, value_name = "IP")]
    pub addr: Option<Ipv4Addr>,
    /// A port, or an ICMP echo identifier (0 to 65535).
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = super::number::<u16>(0, 65535))]
    pub port: Option<u16>,
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
}

impl From<&FilterArgs> for FlowFilter {
    fn from(a: &FilterArgs) -> Self {
        FlowFilter {
            proto: a.proto.map(|p| match p {
                Proto::Tcp => proto::TCP,
                Proto::Udp => proto::UDP,
                Proto::Icmp => proto::ICMP,
            }),
            addr: a.addr,
            port: a.port,
            kind: a.kind.map(|k| match k {
                Kind::Dnat => KIND_DNAT,
                Kind::Snat => KIND_SNAT,
            }),
        }
    }
}

pub fn run(cmd: &CtCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        CtCmd::List {
            target,
            filter,
            json,
        } => {
            let (inst, _) = target.open()?;
            let filter = FlowFilter::from(filter);
            let flows = inst.flows().context("while reading CONNTRACK")?;
            let now = monotonic_ns();
            let mut rows: Vec<_> = flows
                .iter()
                .filter(|f| f.matches(&filter))
                .map(|f| render::flow_row(f, now))
                .collect();
            rows.sort_by(|a, b| (a.proto, a.kind, a.age_ms).cmp(&(b.proto, b.kind, b.age_ms)));
            if *json {
                super::print_json(&rows)?;
            } else {
                super::emit(&render::flow_table(&rows).to_string())?;
            }
        }
        CtCmd::Flush { target, filter } => {
            let (inst, _) = target.open()?;
            let (flows, entries) = inst
                .flush_flows(&FlowFilter::from(filter))
                .context("while flushing CONNTRACK")?;
            super::emit_line(&format!(
                "netfast: deleted {} ({}) from instance {}",
                netfast::count(flows as u64, "flow", "flows"),
                netfast::count(entries as u64, "entry", "entries"),
                inst.name()
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
