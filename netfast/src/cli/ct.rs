//! `netfast ct list|flush`: conntrack flows (pairs of CONNTRACK entries).

use std::{net::Ipv4Addr, process::ExitCode};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use netfast::{
    conntrack::{FlowFilter, monotonic_ns},
    gc::Timeouts,
};

use super::render;
use netfast_common::{
    ct::{KIND_DNAT, KIND_ROUTED, KIND_SNAT},
    proto,
};

use super::target::Target;

#[derive(Debug, Subcommand)]
pub enum CtCmd {
    /// One row per flow: original and translated tuple, DNAT/SNAT/ROUTED (routed in
    /// with allow_direct_routing, not translated), TCP state, age,
    /// idle time, time until the GC removes it, packets and bytes (original/reply);
    /// then a count line. EXPIRES uses the timeouts of --config FILE, else the defaults.
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
    /// Routed in from a peer with `allow_direct_routing`: tracked, not translated.
    Routed,
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
                Kind::Routed => KIND_ROUTED,
            }),
        }
    }
}

/// A `ct list --json` row: the flow, and where its `expires_ms` came from
/// ("defaults", or the config file given with --config).
#[derive(serde::Serialize)]
struct JsonFlow<'a> {
    #[serde(flatten)]
    row: &'a render::FlowRow,
    timeouts: &'a str,
}

pub fn run(cmd: &CtCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        CtCmd::List {
            target,
            filter,
            json,
        } => {
            let (inst, config) = target.open()?;
            // The GC's timeouts are the config's; without --config, nf_conntrack's defaults.
            let (timeouts, source) = match &config {
                Some(c) => (
                    c.conntrack.timeouts,
                    c.source
                        .as_ref()
                        .map_or_else(|| "config".to_owned(), |p| p.display().to_string()),
                ),
                None => (Timeouts::default(), "defaults".to_owned()),
            };
            let filter = FlowFilter::from(filter);
            let flows = inst.flows().context("while reading CONNTRACK")?;
            let now = monotonic_ns();
            let mut rows: Vec<_> = flows
                .iter()
                .filter(|f| f.matches(&filter))
                .map(|f| render::flow_row(f, now, &timeouts))
                .collect();
            rows.sort_by(|a, b| (a.proto, a.kind, a.age_ms).cmp(&(b.proto, b.kind, b.age_ms)));
            if *json {
                let rows: Vec<_> = rows
                    .iter()
                    .map(|row| JsonFlow {
                        row,
                        timeouts: &source,
                    })
                    .collect();
                super::print_json(&rows)?;
            } else {
                let which = match &config {
                    Some(_) => format!("the timeouts of {source}"),
                    None => "the default timeouts (give --config FILE for the instance's)".into(),
                };
                super::emit(&format!(
                    "{}{}; EXPIRES from {which}\n",
                    render::flow_table(&rows),
                    render::flow_count(&rows)
                ))?;
            }
        }
        CtCmd::Flush { target, filter } => {
            let (inst, _) = target.open()?;
            let flushed = inst
                .flush_flows(&FlowFilter::from(filter))
                .context("while flushing CONNTRACK")?;
            super::emit_line(&format!(
                "netfast: deleted {}{} ({}) from instance {}",
                netfast::count(flushed.flows as u64, "flow", "flows"),
                super::publish::and_hairpin(flushed.hairpin, flushed.flows),
                netfast::count(flushed.entries as u64, "entry", "entries"),
                inst.name()
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
