//! `netfast up --config FILE`.

use std::{path::Path, process::ExitCode};

use netfast::{
    config::Config,
    conntrack::addr,
    instance::{self, InstanceError},
};
use netfast_common::proto;

pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::from_file(config)?;
    let report = instance::up(&cfg).map_err(|e| {
        super::in_context(e, InstanceError::is_invalid_input, || {
            format!("while bringing up instance {:?}", cfg.instance)
        })
    })?;
    println!(
        "netfast: instance {} is up (uplink {} {})",
        report.instance, cfg.uplink, report.uplink_addr
    );
    for c in &report.created {
        println!("  created {c}");
    }
    for k in &report.kept {
        println!("  kept    {k}");
    }
    // What the kernel offers, and what netfast does instead where something is off.
    println!("  features: {}", report.features.summary());
    for note in &report.feature_notes {
        println!("  {note}");
    }
    for a in &report.attach.attachments {
        println!("  attached {a}");
    }
    for q in &report.attach.qdisc_notes {
        println!("  {q}");
    }
    // What the last `up` attached and this one took away: the host-local links of a
    // dropped or moved [host_local], the XDP or tc link of another ingress mode.
    if let Some(change) = &report.host_local_change {
        println!("  {change}");
    }
    for d in &report.detached {
        println!("  detached {d}");
    }
    // Publishes this run moved or dropped, where UDP flows were pinned to the old
    // backend; TCP flows through them are kept until they close.
    for u in &report.unpinned_udp {
        if u.key.proto == proto::UDP && u.flows > 0 {
            let host = match u.key.host_addr {
                0 => String::new(),
                a => format!("{}:", addr(a)),
            };
            println!(
                "  removed {} to the old backend {}:{} ({host}{}/udp){}",
                super::publish::udp_flows(u.flows),
                addr(u.old.addr),
                u16::from_be(u.old.port),
                u16::from_be(u.key.host_port),
                super::publish::and_hairpin(u.hairpin, u.flows)
            );
        }
    }
    // Publishes added live with `publish add` stay: the config does not list them,
    // but it does not contradict them either.
    if !report.kept_live.is_empty() {
        let n = report.kept_live.len();
        println!(
            "  kept {n} live {} not in the config: {}",
            if n == 1 { "publish" } else { "publishes" },
            report.kept_live.join(", ")
        );
    }
    println!(
        "  pins in {}, manifest {}",
        report.attach.pin_dir.display(),
        report.manifest.display()
    );
    Ok(ExitCode::SUCCESS)
}
