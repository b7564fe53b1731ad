//! `netfast-cni`: the CNI plugin (type `"netfast-cni"`), chained after an interface
//! plugin (bridge, ptp). It replaces portmap and the bridge plugin's `ipMasq` with
//! netfast's eBPF datapath: ADD brings the network's instance up if needed and adds
//! the container (endpoint, container-side program, port mappings); DEL removes the
//! container's part; CHECK, GC and STATUS as in CNI 1.1.
//!
//! Invoked as libcni invokes plugins: `CNI_*` environment variables, the network
//! config on stdin, the result (or the spec's error JSON) on stdout. The netfast
//! logic lives in `netfast::cni_instance`; this binary speaks the protocol.

mod conf;
mod spec;

use std::{io::Read, process::ExitCode};

use netfast::cni_instance::{self, Attachment};
use serde_json::json;
use spec::{CniError, Code, Command, Env, OWN_VERSION, SUPPORTED_VERSIONS};

fn main() -> ExitCode {
    let mut stdin = String::new();
    // The version to answer errors in: the config's when it can be read.
    let mut version = OWN_VERSION.to_owned();
    let result = (|| -> Result<Option<String>, CniError> {
        // stdin first, whatever comes next: a runtime writing the config to a plugin
        // that exited early would get EPIPE.
        std::io::stdin().read_to_string(&mut stdin).map_err(|e| {
            CniError::new(
                Code::Io,
                format!("could not read the network config from stdin: {e}"),
            )
        })?;
        let env = Env::read(|k| std::env::var(k).ok())?;
        if env.command == Command::Version {
            // VERSION's stdin holds only cniVersion (and may be empty).
            return Ok(Some(version_json()));
        }
        let obj = conf::decode(&stdin)?;
        if let Ok(v) = conf::cni_version(&obj) {
            version = v;
        }
        let conf = match conf::parse(&obj) {
            Ok(c) => c,
            // Runtimes call DEL to clean up after a failed ADD, with the same config: a
            // key DEL does not need must not make it fail. DEL needs the instance only.
            Err(e) if env.command == Command::Del && e.code != Code::IncompatibleVersion => {
                return del_despite(&env, &obj, &e);
            }
            Err(e) => return Err(e),
        };
        for k in &conf.unknown_keys {
            eprintln!("netfast-cni: ignoring key {k:?}, which netfast-cni does not know");
        }
        for s in &conf.skipped {
            eprintln!("netfast-cni: {s}");
        }
        run(&env, &conf)
    })();
    match result {
        Ok(out) => {
            if let Some(out) = out {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", e.to_json(&version));
            eprintln!("netfast-cni: {}", e.msg);
            ExitCode::from(1)
        }
    }
}

/// Runs one command; Some is what goes on stdout.
fn run(env: &Env, conf: &conf::PluginConf) -> Result<Option<String>, CniError> {
    let net = &conf.network;
    // GC and STATUS came with CNI 1.1: an older config does not ask for them.
    if matches!(env.command, Command::Gc | Command::Status) && conf.cni_version != "1.1.0" {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!(
                "cniVersion \"{}\" (cniVersion) has no {}: GC and STATUS are CNI 1.1.0 \
                 commands; set \"cniVersion\": \"1.1.0\" in the network config",
                conf.cni_version,
                if env.command == Command::Gc {
                    "GC"
                } else {
                    "STATUS"
                }
            ),
        ));
    }
    match env.command {
        Command::Version => Ok(Some(version_json())),
        Command::Add => {
            let prev = conf.prev_result.as_ref().ok_or_else(|| {
                CniError::new(
                    Code::InvalidConfig,
                    "prevResult (prevResult) is missing: netfast-cni is a chained plugin; put it \
                     after an interface plugin (bridge or ptp) in the network's plugins list",
                )
            })?;
            let container = conf::prev_container(prev, &env.ifname)?;
            let host_veth = cni_instance::pick_host_veth(&container.host_side)?;
            let att = Attachment {
                container_id: env.container_id.clone(),
                netns: env.netns.clone(),
                ifname: env.ifname.clone(),
                host_veth,
                address: container.address,
                mac: container.mac,
                gateway: container.gateway,
                mappings: conf.port_mappings.clone(),
            };
            let report = cni_instance::add(net, &att)?;
            for w in &report.warnings {
                eprintln!("netfast-cni: {w}");
            }
            if report.brought_up {
                eprintln!(
                    "netfast-cni: instance {} is up on uplink {} ({})",
                    net.instance,
                    report.uplink,
                    report.attachments.join("; ")
                );
            }
            // The result is prevResult, unchanged: netfast adds no interface or address.
            Ok(Some(prev.to_string()))
        }
        Command::Del => {
            cni_instance::del(&net.instance, &env.container_id, &env.ifname)?;
            Ok(None)
        }
        Command::Check => {
            let Some(prev) = &conf.prev_result else {
                return Err(CniError::new(
                    Code::InvalidConfig,
                    "prevResult (prevResult) is missing: CHECK needs the result of the ADD",
                ));
            };
            let record = cni_instance::check(
                &net.instance,
                &env.container_id,
                &env.ifname,
                net.host_local.as_ref(),
            )?;
            check_against_config(&record, prev, &env.ifname, &conf.port_mappings)?;
            Ok(None)
        }
        Command::Gc => {
            // Every attachment not listed goes: a GC without the list is refused
            // rather than read as "none is valid".
            let Some(valid) = &conf.valid_attachments else {
                return Err(CniError::new(
                    Code::InvalidConfig,
                    "cni.dev/valid-attachments (cni.dev/valid-attachments) is missing: GC \
                     removes every attachment the list does not name, so it needs the list \
                     (an empty one to remove them all)",
                ));
            };
            let removed = cni_instance::gc(&net.instance, valid)?;
            for r in removed {
                eprintln!(
                    "netfast-cni: GC removed container {} interface {} ({})",
                    r.container_id, r.ifname, r.address
                );
            }
            Ok(None)
        }
        Command::Status => match cni_instance::not_ready() {
            None => Ok(None),
            Some(why) => Err(CniError::new(Code::NotAvailable, why)),
        },
    }
}

/// CHECK's second half, as portmap's: what the runtime asks for now (the address in
/// prevResult, `runtimeConfig.portMappings`) must be what the container has. The first
/// half (`cni_instance::check`) compared the record with the maps and links.
fn check_against_config(
    record: &cni_instance::ContainerRecord,
    prev: &serde_json::Value,
    ifname: &str,
    mappings: &[cni_instance::PortMapping],
) -> Result<(), CniError> {
    let container = conf::prev_container(prev, ifname)?;
    if container.address.addr() != record.address {
        return Err(CniError::new(
            Code::CheckFailed,
            format!(
                "prevResult gives container {} address {}, but netfast-cni added it with {}; \
                 ADD it again",
                record.container_id,
                container.address.addr(),
                record.address
            ),
        ));
    }
    let wanted: std::collections::BTreeSet<String> = mappings
        .iter()
        .map(|m| m.spec(record.address).to_string())
        .collect();
    let has: std::collections::BTreeSet<String> = record.mappings.iter().cloned().collect();
    if wanted != has {
        let list = |set: &std::collections::BTreeSet<String>| {
            if set.is_empty() {
                "none".to_owned()
            } else {
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        return Err(CniError::new(
            Code::CheckFailed,
            format!(
                "runtimeConfig.portMappings asks for {} but container {} has {}; ADD it again \
                 with the mappings it should have",
                list(&wanted),
                record.container_id,
                list(&has)
            ),
        ));
    }
    Ok(())
}

/// DEL with a config ADD would refuse (`refused`): the instance it names, if any, loses
/// the container's state; with no usable instance name nothing can have been made, and
/// DEL succeeds, as the spec wants DEL to whenever there is nothing to remove.
fn del_despite(
    env: &Env,
    obj: &serde_json::Map<String, serde_json::Value>,
    refused: &CniError,
) -> Result<Option<String>, CniError> {
    eprintln!(
        "netfast-cni: DEL with a config ADD refuses ({}); removing what there is",
        refused.msg
    );
    if let Some(instance) = conf::instance_name(obj) {
        cni_instance::del(&instance, &env.container_id, &env.ifname)?;
    }
    Ok(None)
}

/// VERSION's answer: this plugin's version and every one it speaks.
fn version_json() -> String {
    json!({"cniVersion": OWN_VERSION, "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}
