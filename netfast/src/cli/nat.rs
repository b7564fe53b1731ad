//! `netfast nat list`: masquerade bindings and SNAT port use.

use std::process::ExitCode;

use super::render;
use anyhow::Context;
use clap::Subcommand;

use super::target::Target;

#[derive(Debug, Subcommand)]
pub enum NatCmd {
    /// Masquerade bindings (container -> uplink -> remote) and, per protocol, how many
    /// ports of the SNAT range are in use.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: &NatCmd) -> anyhow::Result<ExitCode> {
    let NatCmd::List { target, json } = cmd;
    let (inst, _) = target.open()?;
    let config = inst.config().context("while reading CONFIG")?;
    let flows = inst.flows().context("while reading CONNTRACK")?;
    super::print(&render::nat_view(&flows, &config), *json)?;
    Ok(ExitCode::SUCCESS)
}
