//! `netfast down --config FILE`.

use std::{path::Path, process::ExitCode};

use netfast::{
    config::Config,
    instance::{self, InstanceError},
};

pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::from_file(config)?;
    let report = instance::down(&cfg).map_err(|e| {
        super::in_context(e, InstanceError::is_invalid_input, || {
            format!("while taking down instance {:?}", cfg.instance)
        })
    })?;
    if report.removed.is_empty() && report.already_gone.is_empty() {
        println!("netfast: instance {} had nothing to remove", cfg.instance);
    } else {
        println!("netfast: instance {} is down", cfg.instance);
        for c in &report.removed {
            println!("  removed {c}");
        }
        // Recorded by `up` but removed by someone else (or with the host namespace).
        for c in &report.already_gone {
            println!("  already gone: {c}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
