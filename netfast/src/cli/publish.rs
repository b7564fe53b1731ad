//! `netfast publish add|del|list` (alias `forward`, its old name): published ports
//! (port mappings), changed live in PUBLISHED_PORTS.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use netfast::publish::{Protocol, PublishSpec};

use super::render;

use super::target::Target;

#[derive(Debug, Subcommand)]
pub enum PublishCmd {
    /// Publish a port (or range) now; the next new connection uses it. UDP flows
    /// through these ports that still go to another backend are deleted.
    /// SPEC is Docker's -p syntax: [HOST_IP:]HOST_PORT[-END]:CONTAINER_IP:PORT[-END][/tcp|udp].
    Add {
        #[command(flatten)]
        target: Target,
        /// e.g. 8088:172.16.0.102:80/tcp
        spec: String,
    },
    /// Unpublish a port (or range), given as a spec or as a `publish list` row
    /// (`tcp '*:8088' 172.16.0.102:80`). TCP flows keep working until they close,
    /// unless --kill-flows is given; UDP flows still going to the removed backend are
    /// deleted, so a sender with a fixed source port reaches whatever is published
    /// there next.
    Del {
        #[command(flatten)]
        target: Target,
        /// SPEC (`8088:172.16.0.102:80/tcp`, `*:` for every address allowed), or the
        /// three columns PROTO HOST BACKEND of a `publish list` row.
        #[arg(value_name = "SPEC", num_args = 1..=3, required = true)]
        spec: Vec<String>,
        /// Also delete the conntrack entries of flows through these ports.
        #[arg(long)]
        kill_flows: bool,
    },
    /// Show the published ports (with the owning container on a CNI network's instance).
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: &PublishCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PublishCmd::Add { target, spec } => {
            // Parse before opening anything: a bad spec is refused first.
            let spec: PublishSpec = spec.parse()?;
            let (inst, config) = target.open()?;
            let containers: Option<Vec<_>> =
                config.map(|c| c.containers.iter().map(|c| c.address.addr()).collect());
            let host: Vec<_> = super::status::host_addresses()?
                .iter()
                .map(|a| a.local.addr())
                .collect();
            let report = inst.add_publish(&spec, &host, containers.as_deref())?;
            let n = report.entries;
            let stale = match report.udp_flows {
                0 => String::new(),
                f => format!(
                    "; removed {} through it to other backends{}",
                    udp_flows(f),
                    and_hairpin(report.hairpin_flows, f)
                ),
            };
            println!(
                "netfast: published {spec} on instance {} ({n} {}){stale}",
                inst.name(),
                if n == 1 { "port" } else { "ports" }
            );
        }
        PublishCmd::Del {
            target,
            spec,
            kill_flows,
        } => {
            let spec = PublishSpec::from_words(spec)?;
            let (inst, _) = target.open()?;
            let report = inst.remove_publish(&spec, *kill_flows)?;
            let flows = if *kill_flows {
                format!(
                    "deleted {} through it{}",
                    netfast::count(report.flows as u64, "flow", "flows"),
                    and_hairpin(report.hairpin_flows, report.flows)
                )
            } else if spec.protocol == Protocol::Udp {
                format!(
                    "removed {} to the old backend {}{}",
                    udp_flows(report.udp_flows),
                    spec.backend(),
                    and_hairpin(report.hairpin_flows, report.udp_flows)
                )
            } else {
                "established flows keep working until they close".to_string()
            };
            println!(
                "netfast: unpublished {spec} on instance {} ({} {}); {flows}",
                inst.name(),
                report.entries,
                if report.entries == 1 { "port" } else { "ports" }
            );
        }
        PublishCmd::List { target, json } => {
            let (inst, _) = target.open()?;
            let entries = inst.publishes().context("while reading PUBLISHED_PORTS")?;
            let mut rows = render::publish_rows(&entries);
            // On a CNI network's instance, each mapping's container.
            let records = netfast::cni_instance::records(inst.name())
                .context("while reading the CNI owner records")?;
            render::with_owners(&mut rows, &records);
            if *json {
                super::print_json(&rows)?;
            } else {
                super::emit(&render::publish_table(&rows).to_string())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// "1 UDP flow", "3 UDP flows".
pub fn udp_flows(n: usize) -> String {
    netfast::count(n as u64, "UDP flow", "UDP flows")
}

/// What goes after "removed N flows": the hairpin SNAT flows chained to them, which
/// went too (a container's connections to the published port through the host's
/// address are two flows each); nothing when there were none.
pub fn and_hairpin(hairpin: usize, of: usize) -> String {
    match hairpin {
        0 => String::new(),
        n => format!(
            " and {} chained to {}",
            netfast::count(n as u64, "hairpin SNAT flow", "hairpin SNAT flows"),
            if of == 1 { "it" } else { "them" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hairpin_flows_are_named_after_the_flows_they_were_chained_to() {
        assert_eq!(and_hairpin(0, 3), "");
        assert_eq!(
            format!("removed {}{}", udp_flows(1), and_hairpin(1, 1)),
            "removed 1 UDP flow and 1 hairpin SNAT flow chained to it"
        );
        assert_eq!(
            format!("removed {}{}", udp_flows(3), and_hairpin(2, 3)),
            "removed 3 UDP flows and 2 hairpin SNAT flows chained to them"
        );
    }
}
