//! `netfast down --config FILE | --instance NAME`.

use std::process::ExitCode;

use netfast::{
    config::Config,
    instance::{self, InstanceError},
};

use super::target::Target;

/// `down --config FILE`, for `netfast run` as it stops.
pub fn run_config(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    run(&Target {
        instance: None,
        config: Some(config.to_owned()),
    })
}

pub fn run(target: &Target) -> anyhow::Result<ExitCode> {
    // The manifest and the pins are all `down` needs: a CNI network's instance has no
    // config file.
    let name = match (&target.instance, &target.config) {
        (Some(name), _) => {
            if let Some(why) = netfast::bpf::pins::instance_name_problem(name) {
                return Err(netfast::bpf::PinnedError::BadName {
                    name: name.clone(),
                    why,
                }
                .into());
            }
            name.clone()
        }
        (None, Some(path)) => Config::from_file(path)?.instance,
        (None, None) => anyhow::bail!("give --instance NAME or --config FILE"),
    };
    let report = instance::down_instance(&name).map_err(|e| {
        super::in_context(e, InstanceError::is_invalid_input, || {
            format!("while taking down instance {name:?}")
        })
    })?;
    // Printed once the instance is down: a closed stdout (`netfast run | head`) ends
    // the output, not the work.
    if report.removed.is_empty() && report.already_gone.is_empty() {
        super::emit_line(&format!("netfast: instance {name} had nothing to remove"))?;
    } else {
        let mut text = format!("netfast: instance {name} is down\n");
        for c in &report.removed {
            text += &format!("  removed {c}\n");
        }
        for note in &report.tc_notes {
            text += &format!("  {note}\n");
        }
        // Recorded by `up` but removed by someone else (or with the host namespace).
        for c in &report.already_gone {
            text += &format!("  already gone: {c}\n");
        }
        super::emit(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}
