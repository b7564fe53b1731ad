//! `netfast up --config FILE`.

use std::{path::Path, process::ExitCode};

use anyhow::Context;
use netfast::{config::Config, instance};

pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::from_file(config)?;
    let report = instance::up(&cfg)
        .with_context(|| format!("while bringing up instance {:?}", cfg.instance))?;
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
    for a in &report.attach.attachments {
        println!("  attached {a}");
    }
    println!(
        "  pins in {}, manifest {}",
        report.attach.pin_dir.display(),
        report.manifest.display()
    );
    Ok(ExitCode::SUCCESS)
}
