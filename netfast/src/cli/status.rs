//! `netfast status`: what is attached where, the pins and the config in force.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use netfast::{
    bpf::{features::Features, pinned::LinkStatus},
    conntrack::Table,
    host::{netlink, netns, topology},
    instance,
};

use super::{
    render::{self, AddressesView, StatusView},
    target::Target,
};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let (inst, _) = args.target.open()?;
    // Interface names and addresses are the host namespace's: enter it first.
    let (netns, netns_note, elsewhere) = enter_host_netns(inst.name())?;
    let mut links = inst.links().context("while reading the pinned links")?;
    if elsewhere {
        // An ifindex names nothing here: better none than another namespace's name.
        for l in &mut links {
            l.interface = None;
        }
    }
    let config = inst.config().context("while reading CONFIG")?;
    let published = inst
        .publishes()
        .context("while reading PUBLISHED_PORTS")?
        .len();
    let mut conntrack = 0;
    for table in [Table::Assured, Table::Unassured] {
        conntrack += inst
            .conntrack_entries(table)
            .context("while reading the conntrack maps")?
            .len();
    }
    let config_view = render::config_view(&config, published, conntrack);
    let host_addrs = inst.host_addrs().context("while reading HOST_ADDRS")?;
    let addresses = if elsewhere {
        None
    } else {
        addresses(&links, config_view.uplink_addr)?
    };
    let programs = render::program_views(&links);
    let view = StatusView {
        instance: inst.name().to_owned(),
        netns,
        netns_note,
        cni_network: cni_network(inst.name())?,
        pin_dir: inst.dir().display().to_string(),
        tc_attach: render::tc_attach_of(&programs),
        // Native XDP is asked of the uplink's driver: the egress program's interface.
        features: Features::probe(
            links
                .iter()
                .find(|l| l.hook == "egress" && l.kind != "cgroup")
                .and_then(|l| l.interface.as_deref()),
        ),
        programs,
        host_local: render::host_local_view(&links, &host_addrs),
        config: config_view,
        addresses,
    };
    super::print(&view, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// The CNI network that brought `instance` up, from its manifest's owner.
fn cni_network(instance: &str) -> anyhow::Result<Option<String>> {
    let manifest = netfast::instance::load_manifest(instance)
        .with_context(|| format!("while reading instance {instance}'s manifest"))?;
    Ok(manifest
        .and_then(|m| m.owner)
        .and_then(|owner| netfast::cni_instance::cni_network(&owner)))
}

/// Every IPv4 address of this (the host) namespace, asked of the kernel over rtnetlink.
pub fn host_addresses() -> anyhow::Result<Vec<topology::HostAddress>> {
    netlink::netlink_blocking(None, |handle| async move {
        topology::host_ipv4_addresses(&handle).await
    })
    .context("while opening rtnetlink to read the host's addresses")?
    .context("while reading the host's addresses")
}

/// The uplink's addresses in force, asked of this namespace's kernel: the uplink is
/// the interface the egress program is attached to (or any attached program's).
fn addresses(
    links: &[LinkStatus],
    up_addr: std::net::Ipv4Addr,
) -> anyhow::Result<Option<AddressesView>> {
    let uplink = links
        .iter()
        .find(|l| l.hook == "egress")
        .or_else(|| links.iter().find(|l| l.kind != "cgroup"));
    let Some(uplink) = uplink else {
        return Ok(None);
    };
    let host = host_addresses()?;
    let name = uplink
        .interface
        .clone()
        .unwrap_or_else(|| format!("ifindex {}", uplink.ifindex));
    Ok(Some(render::addresses_view(
        name,
        uplink.ifindex,
        up_addr,
        &host,
    )))
}

/// Enters the instance's host namespace (recorded by `up`) when this command runs in
/// another one. Returns how status names that namespace, a note when it is not this
/// command's own, and true when it could not be entered (interface names and
/// addresses would then be another namespace's).
fn enter_host_netns(instance: &str) -> anyhow::Result<(Option<String>, Option<String>, bool)> {
    let owner = instance::load_manifest(instance)
        .context("while reading the instance's manifest")?
        .and_then(|m| m.owner);
    let Some(owner) = owner else {
        return Ok((None, None, false));
    };
    let here = netns::current().context("while identifying this network namespace")?;
    let theirs = netns::identify(owner.netns.dev, owner.netns.ino);
    let short = match (&theirs.name, theirs.root) {
        (_, true) => "root".to_owned(),
        (Some(n), false) => n.clone(),
        (None, false) => match &owner.netns.name {
            Some(n) => format!("{n} (no longer in /run/netns, inode {})", owner.netns.ino),
            None => format!("unnamed (inode {})", owner.netns.ino),
        },
    };
    if owner.netns.same(&here) {
        return Ok((Some(short), None, false));
    }
    if netns::enter(&theirs).context("while entering the instance's network namespace")? {
        return Ok((
            Some(short),
            Some(format!("entered it: this command ran in {here}")),
            false,
        ));
    }
    Ok((
        Some(short),
        Some(format!(
            "not entered (it has no /run/netns name): this command runs in {here}, so \
             interfaces show as ifindex; run status inside the instance's namespace"
        )),
        true,
    ))
}
