//! `netfast up --config FILE`.

use std::{path::Path, process::ExitCode};

use netfast::{
    config::Config,
    conntrack::addr,
    instance::{self, InstanceError},
};
use netfast_common::proto;

pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    super::emit(&bring_up(config)?)?;
    Ok(ExitCode::SUCCESS)
}

/// Brings the instance of `config` up and returns the report to print: `netfast up`
/// prints it, and so does `netfast run`, which goes on if stdout is closed (and then
/// stops at its first line, as on a signal).
pub fn bring_up(config: &Path) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let cfg = Config::from_file(config)?;
    let mut out = String::new();
    let report = instance::up(&cfg).map_err(|e| {
        super::in_context(e, InstanceError::is_invalid_input, || {
            format!("while bringing up instance {:?}", cfg.instance)
        })
    })?;
    let _ = writeln!(
        out,
        "netfast: instance {} is up (uplink {} {})",
        report.instance, cfg.uplink, report.uplink_addr
    );
    for c in &report.created {
        let _ = writeln!(out, "  created {c}");
    }
    for k in &report.kept {
        let _ = writeln!(out, "  kept    {k}");
    }
    // What the kernel offers, and what netfast does instead where something is off.
    let _ = writeln!(out, "  features: {}", report.features.summary());
    for note in &report.feature_notes {
        let _ = writeln!(out, "  {note}");
    }
    // A re-`up` that moves every translated packet onto another path says so.
    if let Some((_, now)) = report.fast_path_switched {
        let _ = writeln!(
            out,
            "  {}",
            if now {
                "fast path switched on: translated packets now go straight between the uplink and the containers' veths"
            } else {
                "fast path switched off: translated packets now cross the bridge and the host's routing"
            }
        );
    }
    for a in &report.attach.attachments {
        let _ = writeln!(out, "  attached {a}");
    }
    for q in &report.attach.qdisc_notes {
        let _ = writeln!(out, "  {q}");
    }
    // What the last `up` attached and this one took away: the host-local links of a
    // dropped or moved [host_local], the XDP or tc link of another ingress mode.
    if let Some(change) = &report.host_local_change {
        let _ = writeln!(out, "  {change}");
    }
    for d in &report.detached {
        let _ = writeln!(out, "  detached {d}");
    }
    // Publishes this run moved or dropped, where UDP flows were pinned to the old
    // backend; TCP flows through them are kept until they close.
    for u in &report.unpinned_udp {
        if u.key.proto == proto::UDP && u.flows > 0 {
            let host = match u.key.host_addr {
                0 => String::new(),
                a => format!("{}:", addr(a)),
            };
            let _ = writeln!(
                out,
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
        let _ = writeln!(
            out,
            "  kept {n} live {} not in the config: {}",
            if n == 1 { "publish" } else { "publishes" },
            report.kept_live.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  pins in {}, manifest {}",
        report.attach.pin_dir.display(),
        report.manifest.display()
    );
    Ok(out)
}
