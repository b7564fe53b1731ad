//! What an instance is (issue 9): it belongs to one host namespace and one topology.
//! `up` or `down` from another namespace, or `up` with another topology, is refused
//! with exit 2 and changes nothing (namespaces, links, addresses, pins, maps and the
//! manifest are compared before and after); a re-`up` keeps the publishes added live
//! and says so; `status` outside the instance's namespace names the right interface;
//! `down` reports only what it removed.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::{path::PathBuf, process::Output};

use aya::maps::MapInfo;
use netfast::{bpf::PinnedInstance, config::IngressMode, lab};
use support::{Sandbox, exec_ok, netfast, succeeded, text, unique_prefix};

/// Everything a refused command must leave as it was, for the instance and the
/// namespaces named.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    namespaces: Vec<String>,
    /// Per namespace: links (see [`link_identity`]), IPv4 addresses (IPv6 link-local
    /// ones change state on their own while DAD runs), routes and ip_forward.
    per_netns: Vec<(String, String)>,
    /// Pin files with the map ids behind them.
    pins: Vec<(String, Option<u32>)>,
    /// Per pinned link: program id and link id.
    links: Vec<(u32, u32)>,
    config: String,
    published: Vec<String>,
    manifest: Option<String>,
}

/// What `ip -o link show` says a link is, without what changes on its own: the
/// kernel allocates `link-netnsid`s on first use, which a read may do, and carrier
/// (`LOWER_UP`, `NO-CARRIER`, `state`) settles for a while after a link comes up.
fn link_identity(line: &str) -> String {
    let mut out = Vec::new();
    let mut words = line.split_whitespace();
    out.extend(words.by_ref().take(2).map(str::to_owned));
    while let Some(w) = words.next() {
        if w.starts_with('<') {
            let admin: Vec<&str> = w
                .trim_matches(|c| c == '<' || c == '>')
                .split(',')
                .filter(|f| !matches!(*f, "LOWER_UP" | "NO-CARRIER" | "M-DOWN" | "DORMANT"))
                .collect();
            out.push(admin.join(","));
        } else if matches!(w, "mtu" | "master" | "link/ether" | "link-netns") {
            out.push(w.to_owned());
            out.extend(words.next().map(str::to_owned));
        }
    }
    out.join(" ")
}

fn snapshot(instance: &str, prefixes: &[&str], netns: &[String]) -> Snapshot {
    let namespaces = text(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list")
            .stdout,
    )
    .lines()
    .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
    .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
    .collect::<Vec<_>>();
    let per_netns = netns
        .iter()
        .map(|ns| {
            let mut s: String = exec_ok(ns, &["ip", "-o", "link", "show"])
                .lines()
                .map(|l| link_identity(l) + "\n")
                .collect();
            for argv in [
                &["ip", "-4", "-o", "addr", "show"][..],
                &["ip", "route", "show"],
                &["cat", "/proc/sys/net/ipv4/ip_forward"],
            ] {
                s += &exec_ok(ns, argv);
            }
            (ns.clone(), s)
        })
        .collect();
    let dir = netfast::bpf::pins::pin_dir(instance);
    let mut pins: Vec<(String, Option<u32>)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let id = MapInfo::from_pin(e.path()).ok().map(|m| m.id());
                    (name, id)
                })
                .collect()
        })
        .unwrap_or_default();
    pins.sort();
    let (links, config, published) = match PinnedInstance::open(instance) {
        Ok(inst) => (
            inst.links()
                .expect("pinned links")
                .iter()
                .map(|l| (l.prog_id, l.link_id))
                .collect(),
            format!("{:?}", inst.config().expect("CONFIG")),
            inst.publishes()
                .expect("PUBLISHED_PORTS")
                .iter()
                .map(|(k, b)| netfast::publish::entry_spec(k, b))
                .collect(),
        ),
        Err(_) => (Vec::new(), String::new(), Vec::new()),
    };
    Snapshot {
        namespaces,
        per_netns,
        pins,
        links,
        config,
        published,
        manifest: std::fs::read_to_string(netfast::instance::manifest_path(instance)).ok(),
    }
}

/// Asserts exit 2, one line on stderr naming every needle, and returns stderr.
#[track_caller]
fn refused(out: &Output, what: &str, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what} must be refused with exit 2: {}{stderr}",
        text(&out.stdout)
    );
    for n in needles {
        assert!(stderr.contains(n), "{what}: {stderr:?} lacks {n:?}");
    }
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{what}: one line: {stderr}"
    );
    eprintln!("{what}: {stderr}");
    stderr
}

/// A config file removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(prefix: &str, tag: &str, toml: &str) -> TempConfig {
        let path = std::env::temp_dir().join(format!("netfast-test-{prefix}-{tag}.toml"));
        std::fs::write(&path, toml).expect("write config");
        TempConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A second lab (tag `tag`), whose host namespace has an uplink eth0 too, and a config
/// of its own seed topology under `a`'s instance name; returns the lab, its host
/// namespace and the config.
fn second_lab(a: &Sandbox, tag: &str) -> (lab::Lab, String, TempConfig) {
    let other = lab::Lab::create(&unique_prefix(tag)).expect("create the second lab");
    let h2 = other.host_ns();
    let toml = lab::seed_config_toml(other.prefix(), IngressMode::Tc).replace(
        &format!("instance = \"{}\"", other.prefix()),
        &format!("instance = \"{}\"", a.prefix),
    );
    let b = TempConfig::new(other.prefix(), "b", &toml);
    (other, h2, b)
}

#[test]
fn up_or_down_from_another_namespace_is_refused_and_changes_nothing() {
    let a = Sandbox::up("oa", IngressMode::Tc, "");
    let (other, h2, b) = second_lab(&a, "ob");
    let prefixes = [a.prefix.as_str(), other.prefix()];
    let nss = [a.host(), h2.clone()];
    let before = snapshot(&a.prefix, &prefixes, &nss);
    assert!(before.manifest.is_some() && !before.links.is_empty());

    let out = netfast(Some(&h2), &["up", "--config", b.path()]);
    refused(
        &out,
        "up from another namespace",
        &[
            &format!("instance \"{}\"", a.prefix),
            &format!("network namespace {}", a.host()),
            a.config_str(),
            &format!(
                "netfast --netns {} down --config {}",
                a.host(),
                a.config_str()
            ),
            "another instance name",
        ],
    );
    assert_eq!(
        snapshot(&a.prefix, &prefixes, &nss),
        before,
        "the refused up changed something"
    );

    let out = netfast(Some(&h2), &["down", "--config", b.path()]);
    refused(
        &out,
        "down from another namespace",
        &[
            &format!("instance \"{}\"", a.prefix),
            &format!("network namespace {}", a.host()),
            &format!("netfast --netns {} down", a.host()),
        ],
    );
    assert_eq!(
        snapshot(&a.prefix, &prefixes, &nss),
        before,
        "the refused down changed something"
    );

    // The owner's re-up stays idempotent.
    let again = succeeded(
        &a.netfast(&["up", "--config", a.config_str()]),
        "re-up from the owning namespace",
    );
    assert!(!again.contains("created"), "nothing new: {again}");
}

#[test]
fn up_with_another_topology_is_refused_and_changes_nothing() {
    let a = Sandbox::up("ot", IngressMode::Tc, "");
    let original = std::fs::read_to_string(&a.config).expect("read config");
    let nss = [a.host()];
    let before = snapshot(&a.prefix, &[&a.prefix], &nss);

    let bridge = TempConfig::new(
        &a.prefix,
        "bridge",
        &original.replace("name = \"br0\"", "name = \"br9\""),
    );
    let out = a.netfast(&["up", "--config", bridge.path()]);
    refused(
        &out,
        "up with another bridge",
        &[
            &format!("instance \"{}\"", a.prefix),
            a.config_str(),
            "bridge",
            "br0",
            "br9",
            &format!(
                "netfast --netns {} down --config {}",
                a.host(),
                a.config_str()
            ),
            "another instance name",
        ],
    );
    assert_eq!(
        snapshot(&a.prefix, &[&a.prefix], &nss),
        before,
        "the refused up changed something"
    );

    let subnet = TempConfig::new(
        &a.prefix,
        "subnet",
        &original.replace("subnet = \"172.16.0.0/24\"", "subnet = \"172.16.0.0/16\""),
    );
    let out = a.netfast(&["up", "--config", subnet.path()]);
    refused(
        &out,
        "up with another masquerade subnet",
        &["masquerade.subnet", "172.16.0.0/24", "172.16.0.0/16"],
    );
    assert_eq!(
        snapshot(&a.prefix, &[&a.prefix], &nss),
        before,
        "the refused up changed something"
    );

    // The same topology from a copy of the file is the same instance: a publish may
    // change (see publish_changes).
    let copy = TempConfig::new(&a.prefix, "copy", &original);
    succeeded(
        &a.netfast(&["up", "--config", copy.path()]),
        "re-up with the same topology from another path",
    );
}

#[test]
fn reup_keeps_live_publishes_or_refuses_a_conflict() {
    let a = Sandbox::up("ol", IngressMode::Tc, "");
    let inst = a.prefix.clone();
    succeeded(
        &a.netfast(&[
            "publish",
            "add",
            "--instance",
            &inst,
            "8000-8001:172.16.0.103:80/tcp",
        ]),
        "publish add",
    );
    let out = succeeded(
        &a.netfast(&["up", "--config", a.config_str()]),
        "re-up with live publishes",
    );
    assert!(
        out.contains("kept 2 live publishes not in the config: 8000:172.16.0.103:80/tcp, 8001:172.16.0.103:80/tcp"),
        "the report names the live publishes it kept: {out}"
    );
    let published = |sb: &Sandbox| {
        PinnedInstance::open(&sb.prefix)
            .expect("pins")
            .publishes()
            .expect("PUBLISHED_PORTS")
            .iter()
            .map(|(k, b)| netfast::publish::entry_spec(k, b))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        published(&a),
        [
            "8000:172.16.0.103:80/tcp",
            "8001:172.16.0.103:80/tcp",
            "8088:172.16.0.102:80/tcp"
        ]
    );

    // A config that publishes a live port itself, elsewhere: refused, nothing changes.
    let original = std::fs::read_to_string(&a.config).expect("read config");
    let conflict = TempConfig::new(
        &inst,
        "conflict",
        &format!("{original}\n[[publish]]\nspec = \"8001:172.16.0.102:80/tcp\"\n"),
    );
    let nss = [a.host()];
    let before = snapshot(&inst, &[&inst], &nss);
    let out = a.netfast(&["up", "--config", conflict.path()]);
    refused(
        &out,
        "re-up over a live publish",
        &[
            "8001:172.16.0.103:80/tcp",
            "8001:172.16.0.102:80/tcp",
            &format!(
                "netfast --netns {} publish del --instance {inst} 8001:172.16.0.103:80/tcp",
                a.host()
            ),
        ],
    );
    assert_eq!(
        snapshot(&inst, &[&inst], &nss),
        before,
        "the refused up changed something"
    );

    // The config taking over a live publish exactly: it is the config's now.
    let same = TempConfig::new(
        &inst,
        "same",
        &format!("{original}\n[[publish]]\nspec = \"8001:172.16.0.103:80/tcp\"\n"),
    );
    let out = succeeded(&a.netfast(&["up", "--config", same.path()]), "re-up");
    assert!(
        out.contains("kept 1 live publish not in the config: 8000:172.16.0.103:80/tcp"),
        "{out}"
    );
    // A publish the config drops again goes: it was the config's, not live.
    let out = succeeded(&a.netfast(&["up", "--config", a.config_str()]), "re-up");
    assert_eq!(
        published(&a),
        ["8000:172.16.0.103:80/tcp", "8088:172.16.0.102:80/tcp"],
        "{out}"
    );
}

#[test]
fn status_outside_the_instance_namespace_names_its_uplink() {
    let a = Sandbox::up("os", IngressMode::Tc, "");
    // The LAN peer's namespace has an eth0 of its own (10.0.1.26); the test's own
    // namespace has other interfaces. Both must be told about the host's eth0.
    for netns in [Some(a.lan()), None] {
        let out = netfast(
            netns.as_deref(),
            &["status", "--instance", &a.prefix, "--json"],
        );
        let stdout = succeeded(&out, "status outside the instance's namespace");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("status JSON");
        assert_eq!(v["netns"], a.host(), "{netns:?}: {stdout}");
        let cgroup = a.cgroup();
        // The uplink's programs on the host's eth0, the container program on the
        // host's container veths: all named in the instance's namespace. The
        // host-local links name their cgroup, which no namespace changes.
        for p in v["programs"].as_array().expect("programs") {
            if p["attach"] == "cgroup" {
                assert_eq!(p["cgroup"], cgroup.to_str().expect("utf-8"), "{stdout}");
            } else {
                let want = p["pin"]
                    .as_str()
                    .and_then(|pin| pin.strip_prefix("link_container_"))
                    .unwrap_or("eth0");
                assert_eq!(p["interface"], want, "{netns:?}: {stdout}");
            }
        }
        let addrs: Vec<&str> = v["addresses"]["uplink_addresses"]
            .as_array()
            .expect("uplink addresses")
            .iter()
            .filter_map(|a| a["address"].as_str())
            .collect();
        assert_eq!(addrs, ["10.0.1.48/24"], "{netns:?}: {stdout}");
        let table = succeeded(
            &netfast(netns.as_deref(), &["status", "--instance", &a.prefix]),
            "status",
        );
        assert!(
            table.contains(&format!("netns:       {}", a.host())),
            "{netns:?}: {table}"
        );
    }
}

#[test]
fn down_reports_only_what_it_removed() {
    let a = Sandbox::up("od", IngressMode::Tc, "");
    exec_ok(&a.host(), &["ip", "link", "del", "br0"]);
    let out = succeeded(&a.netfast(&["down", "--config", a.config_str()]), "down");
    assert!(
        !out.contains("removed interface br0"),
        "br0 was deleted by hand, not by down: {out}"
    );
    assert!(out.contains("already gone: interface br0"), "{out}");
    assert!(
        out.contains(&format!(
            "removed datapath pins {}",
            netfast::bpf::pins::pin_dir(&a.prefix).display()
        )),
        "{out}"
    );
    assert!(out.contains("removed interface veth1"), "{out}");
}

/// The namespace an instance was brought up in is gone (deleted with its links): `up`
/// from another namespace is still refused, naming the instance and the way out, and
/// `down` from there removes what outlived the namespace (the pins, the manifest and
/// the containers' namespaces), listing the links as already gone.
#[test]
fn an_instance_whose_namespace_is_gone_is_refused_then_taken_down() {
    let a = Sandbox::up("og", IngressMode::Tc, "");
    let (other, h2, b) = second_lab(&a, "oh");
    let pins = netfast::bpf::pins::pin_dir(&a.prefix);
    assert!(pins.exists());

    assert!(
        netfast::host::netns::delete(&a.host()).expect("delete the owning namespace"),
        "{} existed",
        a.host()
    );
    let out = netfast(Some(&h2), &["up", "--config", b.path()]);
    refused(
        &out,
        "up of an instance whose namespace is gone",
        &[
            &format!("instance \"{}\"", a.prefix),
            "no longer exists",
            &format!("netfast down --config {}", a.config_str()),
            "another instance name",
        ],
    );
    assert!(pins.exists(), "the refused up removed the pins");
    assert!(
        netfast::host::netns::exists(&a.container(2)),
        "the refused up removed a container namespace"
    );

    // From the second lab's namespace, with the owner's config: what is left goes,
    // and nothing of that namespace (whose links have the same names) is touched.
    let bystander = || snapshot(other.prefix(), &[other.prefix()], std::slice::from_ref(&h2));
    let before = bystander();
    let down = succeeded(
        &netfast(Some(&h2), &["down", "--config", a.config_str()]),
        "down of an instance whose namespace is gone",
    );
    assert!(down.contains("already gone"), "{down}");
    assert_eq!(bystander(), before, "down changed the namespace it ran in");
    assert!(!pins.exists(), "{} is left behind", pins.display());
    assert!(
        netfast::instance::load_manifest(&a.prefix)
            .expect("read the manifest")
            .is_none(),
        "the manifest is left behind"
    );
    for n in [1, 2, 3] {
        assert!(
            !netfast::host::netns::exists(&a.container(n)),
            "{} is left behind",
            a.container(n)
        );
    }
}

/// A second instance on the uplink of an instance that is up is refused with exit 2
/// naming the uplink and the instance that holds it, and changes nothing: the first
/// instance's programs end the tc chain, so the second's would translate nothing
/// while `up` said it was up (a review found it so).
#[test]
fn a_second_instance_on_the_same_uplink_is_refused_and_changes_nothing() {
    let a = Sandbox::up("su", IngressMode::Tc, "");
    let second = format!("{}b", a.prefix);
    let nss = [a.host()];
    let before = snapshot(&a.prefix, &[&a.prefix], &nss);
    let config = TempConfig::new(
        &a.prefix,
        "second",
        &format!(
            "instance = \"{second}\"\nuplink = \"{}\"\n\n[bridge]\nname = \"{}b0\"\naddress = \"172.31.0.1/24\"\n",
            lab::UPLINK,
            a.prefix
        ),
    );
    let out = a.netfast(&["up", "--config", config.path()]);
    refused(
        &out,
        "up of a second instance on the same uplink",
        &[
            &format!("uplink \"{}\" (uplink)", lab::UPLINK),
            &format!("instance \"{}\"", a.prefix),
            &format!("netfast down --instance {}", a.prefix),
        ],
    );
    assert_eq!(
        snapshot(&a.prefix, &[&a.prefix], &nss),
        before,
        "the refused up changed something"
    );
    assert!(!netfast::bpf::pins::pin_dir(&second).exists());
}
