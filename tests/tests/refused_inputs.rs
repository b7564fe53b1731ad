//! The README's table of refused inputs, row by row, against a running seed lab as
//! root: each input exits 2, its message names the value, and nothing changed
//! (namespaces, links, addresses, pins, the manifest and the maps, compared with a
//! [`Snapshot`] taken before). Every row of the table must have its case here.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::path::PathBuf;

use netfast::{config::IngressMode, lab};
use netfast_tests::snapshot::{Scope, Snapshot};
use support::{Sandbox, netfast, netfast_bin, text};

/// What a case runs.
enum Action {
    /// `up --config` with the seed's config, `from` replaced by `to`.
    Config { from: &'static str, to: String },
    /// `netfast --netns <host> ARGS`.
    Cli(Vec<String>),
    /// `netfast ARGS` with no `--netns`.
    Bare(Vec<String>),
    /// `ip netns exec <host> netfast ARGS`, the way the README warns against.
    IpNetnsExec(Vec<String>),
}

/// One row: the README's first column (without backticks), what to run, and what the
/// message must contain (the value, at least).
struct Case {
    input: String,
    action: Action,
    needles: Vec<String>,
    /// What the message must not say (advice that does not fit the command).
    absent: Vec<String>,
}

fn config(input: &str, from: &'static str, to: &str, needles: &[&str]) -> Case {
    Case {
        input: input.to_owned(),
        action: Action::Config {
            from,
            to: to.to_owned(),
        },
        needles: needles.iter().map(|n| (*n).to_owned()).collect(),
        absent: Vec::new(),
    }
}

fn cli(input: &str, args: &[&str], needles: &[&str]) -> Case {
    Case {
        input: input.to_owned(),
        action: Action::Cli(args.iter().map(|a| (*a).to_owned()).collect()),
        needles: needles.iter().map(|n| (*n).to_owned()).collect(),
        absent: Vec::new(),
    }
}

/// Temp files removed on drop.
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An instance a case would create if it were wrongly accepted: its pins and state are
/// removed on drop, while the sandbox's host namespace still exists.
struct Leftover(String);

impl Drop for Leftover {
    fn drop(&mut self) {
        if netfast::bpf::pins::pin_dir(&self.0).exists() {
            let _ = netfast::bpf::loader::detach(&self.0);
        }
        let _ = std::fs::remove_dir_all(netfast::instance::state_dir(&self.0));
    }
}

/// The inputs of the README's refused-inputs block, unescaped.
fn readme_rows() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let block = readme
        .split("<!-- refused-inputs:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- refused-inputs:end -->").next())
        .expect("README has the refused-inputs block");
    block
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let first = l.trim_start_matches("| `");
            first.split("` |").next().map(|s| s.replace("\\|", "|"))
        })
        .collect()
}

#[test]
fn every_refused_input_exits_2_names_the_value_and_changes_nothing() {
    let sb = Sandbox::up("ri", IngressMode::Tc, "");
    let inst = sb.prefix.clone();
    let i = inst.as_str();
    let other = format!("{inst}b");
    let _leftover = Leftover(other.clone());
    let unknown = format!("{inst}nosuch");
    let bin = netfast_bin();
    let host = sb.host();
    let scope = Scope {
        prefix: &inst,
        host_ns: &host,
        instances: &[i],
        netfast: &bin,
    };
    // A second instance in the same host namespace: only its bridge differs.
    let minimal = |bridge: &str| {
        format!(
            "instance = \"{other}\"\nuplink = \"eth0\"\n[bridge]\nname = \"br1\"\naddress = \"{bridge}\"\n"
        )
    };

    // Path hints name this machine's cgroup2 mount (hybrid: /sys/fs/cgroup/unified).
    let cgroup_example = format!(
        "\"{}/netfast\"",
        netfast::host::cgroup::cgroup2_mount()
            .expect("a cgroup2 mount")
            .display()
    );

    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        config("instance = \"de/mo\"", "instance = \"", "instance = \"de/", &["\"de/", "(instance)", "like \"demo\""]),
        config("uplink = \"nosuch0\"", "uplink = \"eth0\"", "uplink = \"nosuch0\"", &["\"nosuch0\"", "no such interface", "eth0"]),
        config("uplink = \"an-interface-name-too-long\"", "uplink = \"eth0\"", "uplink = \"an-interface-name-too-long\"", &["\"an-interface-name-too-long\"", "at most 15"]),
        config("ingress = \"ebpf\"", "ingress = \"tc\"", "ingress = \"ebpf\"", &["\"ebpf\"", "\"tc\" or \"xdp\""]),
        config("tc_attach = \"legacy\"", "ingress = \"tc\"", "ingress = \"tc\"\ntc_attach = \"legacy\"", &["\"legacy\"", "(tc_attach)", "\"auto\"", "\"netlink\""]),
        config("bridge.address = \"172.16.0.100\"", "address = \"172.16.0.100/24\"", "address = \"172.16.0.100\"", &["\"172.16.0.100\"", "\"172.16.0.100/24\""]),
        config("bridge.address = \"172.16.0.0/24\"", "address = \"172.16.0.100/24\"", "address = \"172.16.0.0/24\"", &["\"172.16.0.0/24\"", "network's own address"]),
        config("bridge.address = \"10.0.1.100/24\"", "", &minimal("10.0.1.100/24"), &["\"10.0.1.100/24\"", "the uplink's own subnet", "pick a network of its own"]),
        config("bridge.address = \"172.16.0.100/4\"", "address = \"172.16.0.100/24\"", "address = \"172.16.0.100/4\"", &["\"172.16.0.100/4\"", "/8 to /30"]),
        config("bridge.address = \"172.16.0.100/31\"", "address = \"172.16.0.100/24\"", "address = \"172.16.0.100/31\"", &["\"172.16.0.100/31\"", "no room for a container"]),
        config("bridge.address = \"172.16.0.1/16\"", "", &minimal("172.16.0.1/16"), &["\"172.16.0.1/16\"", &format!("br0 of running instance \"{inst}\"")]),
        config("container[1].address = \"172.16.1.102/24\"", "address = \"172.16.0.102/24\"", "address = \"172.16.1.102/24\"", &["\"172.16.1.102/24\"", "outside the bridge's network"]),
        config("container[2].address = \"172.16.0.102/24\"", "address = \"172.16.0.103/24\"", "address = \"172.16.0.102/24\"", &["172.16.0.102", "already used by container[1].address"]),
        config("host_address = \"172.16.0.2\"", "host_address = \"172.16.0.1\"", "host_address = \"172.16.0.2\"", &["172.16.0.2", "equals the container's own address"]),
        config("container[0].netns = \"a/b\"", "netns = \"", "netns = \"a/", &["\"a/", "container[0].netns"]),
        config("masquerade.subnet = \"0.0.0.0/0\"", "subnet = \"172.16.0.0/24\"", "subnet = \"0.0.0.0/0\"", &["\"0.0.0.0/0\"", "a /0", "the containers' subnet"]),
        config("masquerade.subnet = \"10.0.0.0/8\"", "subnet = \"172.16.0.0/24\"", "subnet = \"10.0.0.0/8\"", &["\"10.0.0.0/8\"", "contains 10.0.1.48, the uplink's own address"]),
        config("masquerade.ports = \"0-100\"", "ports = \"61000-65535\"", "ports = \"0-100\"", &["\"0-100\"", "port 0"]),
        config("masquerade.ports = \"65000-61000\"", "ports = \"61000-65535\"", "ports = \"65000-61000\"", &["\"65000-61000\"", "inverted"]),
        config("masquerade.ports = \"32768-40000\"", "ports = \"61000-65535\"", "ports = \"32768-40000\"", &["\"32768-40000\"", "ip_local_port_range"]),
        config("masquerade.allow_direct_routing = \"yes\"", "ports = \"61000-65535\"", "ports = \"61000-65535\"\nallow_direct_routing = \"yes\"", &["\"yes\"", "(masquerade.allow_direct_routing)", "not a boolean"]),
        config("publish spec = \"8088:172.16.9.9:80\"", "spec = \"8088:172.16.0.102:80/tcp\"", "spec = \"8088:172.16.9.9:80\"", &["172.16.9.9", "outside masquerade subnet"]),
        config("publish spec = \"10.9.9.9:8089:172.16.0.102:80\"", "spec = \"8088:172.16.0.102:80/tcp\"", "spec = \"10.9.9.9:8089:172.16.0.102:80\"", &["host IP 10.9.9.9 is not an address of this host", "10.0.1.48"]),
        config("publish spec = \"127.0.0.2:8081:172.16.0.102:80\"", "spec = \"8088:172.16.0.102:80/tcp\"", "spec = \"127.0.0.2:8081:172.16.0.102:80\"", &["host IP 127.0.0.2 is not an address of this host", "127.0.0.1"]),
        config("publish spec = \"8088:172.16.0.103:81\"", "spec = \"8088:172.16.0.102:80/tcp\"", "spec = \"8088:172.16.0.102:80/tcp\"\n[[publish]]\nspec = \"8088:172.16.0.103:81\"", &["\"8088:172.16.0.103:81/tcp\"", "host port 8088/tcp is already published"]),
        config("conntrack.capacity = 100", "[[publish]]", "[conntrack]\ncapacity = 100\n[[publish]]", &["capacity 100", "1024 to 4194304"]),
        config("conntrack.capacity = \"x\"", "[[publish]]", "[conntrack]\ncapacity = \"x\"\n[[publish]]", &["capacity \"x\" (conntrack.capacity)", "not a whole number", "1024 to 4194304"]),
        config("conntrack.udp = \"60s\"", "[[publish]]", "[conntrack]\nudp = \"60s\"\n[[publish]]", &["udp \"60s\" (conntrack.udp)", "1 to 2592000"]),
        config("conntrack.tcp_established = 0", "[[publish]]", "[conntrack]\ntcp_established = 0\n[[publish]]", &["tcp_established 0", "at least 1 second"]),
        config("host_local.cgroup = \"unified\"", "cgroup = \"", "cgroup = \"unified\" # \"", &["\"unified\" (host_local.cgroup)", "not an absolute path", "\"auto\"", &cgroup_example]),
        config("host_local.cgroup = 5", "cgroup = \"", "cgroup = 5 # \"", &["host_local.cgroup = 5 is an integer, not a string", "write cgroup = \"auto\"", &cgroup_example]),
        config("container[1].veth = 2", "veth = \"veth2\"", "veth = 2", &["container[1].veth = 2 is an integer, not a string", "write veth = \"veth2\""]),
        config("host_local.cgroup = \"/tmp\"", "cgroup = \"", "cgroup = \"/tmp\" # \"", &["\"/tmp\" (host_local.cgroup)", "not on a cgroup2 file system", "give a directory under the cgroup2 mount"]),
        config("uplnk = \"eth1\"", "uplink = \"eth0\"", "uplink = \"eth0\"\nuplnk = \"eth1\"", &["uplnk", "fix its spelling"]),
        cli("publish add 0:172.16.0.102:80", &["publish", "add", "--instance", i, "0:172.16.0.102:80"], &["\"0:172.16.0.102:80\"", "host port 0"]),
        cli("publish add 70000:172.16.0.102:80", &["publish", "add", "--instance", i, "70000:172.16.0.102:80"], &["70000", "above 65535"]),
        cli("publish add 9000-8000:172.16.0.102:80", &["publish", "add", "--instance", i, "9000-8000:172.16.0.102:80"], &["9000-8000", "inverted"]),
        cli("publish add garbage", &["publish", "add", "--instance", i, "garbage"], &["\"garbage\""]),
        cli("publish add 8088:172.16.0.103:80", &["publish", "add", "--instance", i, "8088:172.16.0.103:80"], &["8088:172.16.0.103:80", "8088/tcp is already published"]),
        cli("publish add 8089:172.16.9.9:80", &["publish", "add", "--instance", i, "8089:172.16.9.9:80"], &["172.16.9.9", "outside masquerade subnet"]),
        cli("publish add 8089:172.16.0.255:80", &["publish", "add", "--instance", i, "8089:172.16.0.255:80"], &["172.16.0.255", "broadcast address"]),
        cli("publish add 8089:172.16.0.100:80", &["publish", "add", "--instance", i, "8089:172.16.0.100:80"], &["172.16.0.100", "an address of this host"]),
        cli("publish add 10.9.9.9:8089:172.16.0.102:80", &["publish", "add", "--instance", i, "10.9.9.9:8089:172.16.0.102:80"], &["host IP 10.9.9.9 is not an address of this host", "10.0.1.48"]),
        cli("publish del 8095:172.16.0.102:80", &["publish", "del", "--instance", i, "8095:172.16.0.102:80"], &["8095/tcp is not published"]),
        cli("publish del tcp *:8088 172.16.0.103:80", &["publish", "del", "--instance", i, "tcp", "*:8088", "172.16.0.103:80"], &["172.16.0.103", "leads to 172.16.0.102:80"]),
        cli("publish del tcp *:8088", &["publish", "del", "--instance", i, "tcp", "*:8088"], &["\"tcp *:8088\"", "PROTO HOST BACKEND"]),
        cli("--instance ../etc", &["publish", "list", "--instance", "../etc"], &["\"../etc\"", "like \"demo\""]),
        cli("--instance <no such instance>", &["ct", "list", "--instance", &unknown], &[&unknown, "does not exist"]),
        cli("ct list --port -1", &["ct", "list", "--instance", i, "--port", "-1"], &["'-1'", "--port", "0..=65535"]),
        cli("ct list --port 70000", &["ct", "list", "--instance", i, "--port", "70000"], &["70000", "0..=65535"]),
        cli("ct list --kind masq", &["ct", "list", "--instance", i, "--kind", "masq"], &["masq"]),
        cli("stats --watch -1", &["stats", "--instance", i, "--watch", "-1"], &["'-1'", "--watch", "1..=3600"]),
        cli("stats --watch 0", &["stats", "--instance", i, "--watch", "0"], &["'0'", "1..=3600"]),
        cli("run --interval -1", &["run", "--config", sb.config_str(), "--interval", "-1"], &["'-1'", "--interval", "1..=3600"]),
        Case {
            input: "--netns <no such namespace>".into(),
            action: Action::Bare(vec!["--netns".into(), format!("{inst}nosuchns"), "status".into(), "--instance".into(), inst.clone()]),
            needles: vec![format!("{inst}nosuchns"), format!("instance \"{inst}\" lives in network namespace {host}: `netfast --netns {host} status --instance {inst}`")],
            absent: vec!["let netfast create it".into(), "ip netns add".into()],
        },
        Case {
            input: "--netns <no such namespace> up".into(),
            action: Action::Bare(vec!["--netns".into(), format!("{inst}nosuchns"), "up".into(), "--config".into(), sb.config_str().into()]),
            needles: vec![format!("`ip netns add {inst}nosuchns`"), "never the host's".into()],
            absent: vec!["let netfast create it".into()],
        },
        Case {
            input: "ip netns exec <host> netfast status".into(),
            action: Action::IpNetnsExec(vec!["status".into(), "--instance".into(), inst.clone()]),
            needles: vec![format!("runs under `ip netns exec {host}`"), format!("`netfast --netns {host} status --instance {inst}`")],
            absent: vec![format!("no instance \"{inst}\"")],
        },
        Case {
            input: "ip netns exec <host> netfast up".into(),
            action: Action::IpNetnsExec(vec!["up".into(), "--config".into(), sb.config_str().into()]),
            needles: vec![format!("`netfast --netns {host} up --config {}`", sb.config_str())],
            absent: Vec::new(),
        },
        Case {
            input: "lab --prefix <a running lab's>".into(),
            action: Action::Bare(vec!["lab".into(), "--prefix".into(), inst.clone(), "--once".into()]),
            needles: vec![format!("{inst}-host"), "already exists".into()],
            absent: Vec::new(),
        },
    ];

    // The README's block and these cases describe the same inputs.
    let rows = readme_rows();
    assert!(
        rows.len() >= 40,
        "the README lists {} refused inputs",
        rows.len()
    );
    for row in &rows {
        assert!(
            cases.iter().any(|c| c.input == *row),
            "README row {row:?} has no case here"
        );
    }
    for c in &cases {
        assert!(
            rows.contains(&c.input),
            "case {:?} is not in the README's table",
            c.input
        );
    }

    let seed = lab::seed_config_toml(&inst, IngressMode::Tc);
    let mut files = TempFiles(Vec::new());
    let before = Snapshot::take(&scope);
    for (n, c) in cases.iter().enumerate() {
        let out = match &c.action {
            Action::Config { from, to } => {
                let toml = if from.is_empty() {
                    to.clone()
                } else {
                    assert!(
                        seed.contains(from),
                        "{}: {from:?} is not in the seed",
                        c.input
                    );
                    seed.replacen(from, to, 1)
                };
                let path = std::env::temp_dir().join(format!("netfast-test-{inst}-case{n}.toml"));
                std::fs::write(&path, toml).expect("write the case's config");
                files.0.push(path.clone());
                sb.netfast(&["up", "--config", path.to_str().expect("utf-8 path")])
            }
            Action::Cli(args) => sb.netfast(&args.iter().map(String::as_str).collect::<Vec<_>>()),
            Action::Bare(args) => {
                netfast(None, &args.iter().map(String::as_str).collect::<Vec<_>>())
            }
            Action::IpNetnsExec(args) => std::process::Command::new("ip")
                .args(["netns", "exec", &host])
                .arg(&bin)
                .args(args)
                .output()
                .expect("run ip netns exec"),
        };
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: exit {}: {err}",
            c.input,
            out.status
        );
        assert!(!err.contains("panicked"), "{}: {err}", c.input);
        // A refusal is one sentence that names the instance itself: no "while
        // bringing up instance ..." in front of it.
        assert!(!err.contains("while bringing up"), "{}: {err}", c.input);
        for needle in &c.needles {
            assert!(
                err.contains(needle.as_str()),
                "{}: {err:?} lacks {needle:?}",
                c.input
            );
        }
        for wrong in &c.absent {
            assert!(
                !err.contains(wrong.as_str()),
                "{}: {err:?} says {wrong:?}",
                c.input
            );
        }
        assert_eq!(
            Snapshot::take(&scope),
            before,
            "{} changed something",
            c.input
        );
    }
}
