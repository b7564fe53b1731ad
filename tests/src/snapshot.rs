//! What a refused command must leave as it was: the sandbox's namespaces, their links
//! and addresses, the pins under `/sys/fs/bpf/netfast`, the instance's state file and
//! the contents of its maps as the `netfast` CLI's `--json` outputs show them. Take
//! one [`Snapshot`] before and one after, and compare.
//!
//! Only what belongs to one test's prefix is read, so tests running side by side (or
//! other work on the machine) do not disturb the comparison.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// One reading; see the module docs. Compare two with `assert_eq!`.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Named network namespaces whose names start with the prefix.
    pub namespaces: Vec<String>,
    /// Per namespace: `name up|down master` of every link (the admin state only: carrier
    /// and operstate settle by themselves after a link is made).
    pub links: BTreeMap<String, Vec<String>>,
    /// Per namespace: `link local/prefix` of every address but IPv6 link-local ones,
    /// which the kernel adds by itself once a link has carrier.
    pub addresses: BTreeMap<String, Vec<String>>,
    /// Every path under `/sys/fs/bpf/netfast/<name>` for names with the prefix.
    pub pins: Vec<PathBuf>,
    /// Per instance: its `/run/netfast/<instance>/manifest.json`, if any.
    pub manifests: BTreeMap<String, Option<String>>,
    /// Per instance and command: the JSON it printed (clock-dependent fields removed).
    pub maps: BTreeMap<String, Value>,
}

/// Where a [`Snapshot`] looks.
pub struct Scope<'a> {
    /// Namespaces and pin directories starting with this belong to the test.
    pub prefix: &'a str,
    /// The namespace netfast takes as the host (`--netns`).
    pub host_ns: &'a str,
    /// Running instances whose maps are read.
    pub instances: &'a [&'a str],
    /// The `netfast` binary.
    pub netfast: &'a Path,
}

impl Snapshot {
    /// Reads everything in `scope`. Panics (failing the test) if a tool fails.
    pub fn take(scope: &Scope) -> Snapshot {
        let namespaces = namespaces(scope.prefix);
        let mut links = BTreeMap::new();
        let mut addresses = BTreeMap::new();
        for ns in &namespaces {
            let index_names = ip_json(ns, "link");
            links.insert(
                ns.clone(),
                index_names
                    .iter()
                    .map(|l| {
                        let up = l["flags"]
                            .as_array()
                            .is_some_and(|f| f.iter().any(|f| f == "UP"));
                        format!(
                            "{} {} {}",
                            l["ifname"].as_str().unwrap_or("?"),
                            if up { "up" } else { "down" },
                            l["master"].as_str().unwrap_or("-")
                        )
                    })
                    .collect(),
            );
            let mut addrs = Vec::new();
            for l in ip_json(ns, "addr") {
                for a in l["addr_info"].as_array().into_iter().flatten() {
                    if a["family"] == "inet6" && a["scope"] == "link" {
                        continue;
                    }
                    addrs.push(format!(
                        "{} {}/{}",
                        l["ifname"].as_str().unwrap_or("?"),
                        a["local"].as_str().unwrap_or("?"),
                        a["prefixlen"]
                    ));
                }
            }
            addresses.insert(ns.clone(), addrs);
        }
        let mut pins = Vec::new();
        if let Ok(dirs) = std::fs::read_dir(netfast_common::names::PIN_ROOT) {
            for d in dirs.flatten() {
                if d.file_name().to_string_lossy().starts_with(scope.prefix) {
                    walk(&d.path(), &mut pins);
                }
            }
        }
        pins.sort();
        let mut manifests = BTreeMap::new();
        let mut maps = BTreeMap::new();
        for inst in scope.instances {
            manifests.insert(
                (*inst).to_owned(),
                std::fs::read_to_string(netfast::instance::manifest_path(inst)).ok(),
            );
            for cmd in [
                &["publish", "list"][..],
                &["ct", "list"],
                &["nat", "list"],
                &["status"],
            ] {
                let mut json = netfast_json(scope, cmd, inst);
                forget_the_clock(&mut json);
                maps.insert(format!("{inst}: {}", cmd.join(" ")), json);
            }
        }
        Snapshot {
            namespaces,
            links,
            addresses,
            pins,
            manifests,
            maps,
        }
    }
}

/// The network namespaces whose names start with `prefix`, sorted.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

fn ip_json(ns: &str, what: &str) -> Vec<Value> {
    let out = Command::new("ip")
        .args(["-j", "-n", ns, what, "show"])
        .output()
        .expect("run ip");
    // The namespace may have gone between listing and reading: then it has nothing.
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            walk(&e.path(), out);
        }
    }
}

fn netfast_json(scope: &Scope, cmd: &[&str], instance: &str) -> Value {
    let out = Command::new(scope.netfast)
        .args(["--netns", scope.host_ns])
        .args(cmd)
        .args(["--instance", instance, "--json"])
        .output()
        .expect("run netfast");
    assert!(
        out.status.success(),
        "snapshot: netfast {cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "snapshot: netfast {cmd:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Drops what moves by itself between two readings: ages, idle times, expiry.
fn forget_the_clock(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for k in ["age_ms", "idle_ms", "expires_ms"] {
                map.remove(k);
            }
            map.values_mut().for_each(forget_the_clock);
        }
        Value::Array(items) => items.iter_mut().for_each(forget_the_clock),
        _ => {}
    }
}
