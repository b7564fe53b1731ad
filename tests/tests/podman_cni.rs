//! A real runtime through netfast-cni: Debian's podman 4.3 (CNI backend, runc) runs a
//! busybox container inside a sandbox host namespace, on a network that chains
//! Debian's bridge plugin (ipMasq false) and netfast-cni. `podman run -p 8088:80`
//! publishes through eBPF: a client in the LAN namespace fetches the container's page
//! at the uplink address, the container reaches the LAN masqueraded (the far side sees
//! the uplink address), the namespace's iptables and nftables hold no NAT rule and
//! nf_conntrack no entry; `podman rm` calls DEL, which removes the mapping. With
//! `hostLocal` on the lab's cgroup, a host process in it fetches the page at
//! 127.0.0.1:8088 and at the uplink address, past the listener podman's conmon keeps
//! on the host port (a process outside the cgroup meets that listener and hangs).
//!
//! Facts this relies on (checked on the CI machine, Debian 12):
//! - `nsenter --net`, not `ip netns exec` (which remounts /sys, so runc finds no
//!   cgroup file system); runc, since crun refuses hybrid cgroups;
//! - every option goes before `--rootfs PATH`: what follows the path is the command;
//! - the rlimit defaults (nofile 1048576) exceed this machine's hard limits, so the
//!   test's containers.conf sets `default_ulimits`;
//! - the host-local IPAM keeps leases in /var/lib/cni/networks/<network> and libcni
//!   its cache in /var/lib/cni/results: the test names its network after its prefix
//!   and removes both.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use netfast::lab::{self, HOST_ADDR, LAN_ADDR};
use support::{
    Background, exec, exec_in_cgroup, exec_ok, netfast, netfast_cni_bin, require_root, text,
    unique_prefix, wait_listening,
};

/// The container's page, served by busybox httpd.
const PAGE: &str = "hello from a podman container";

/// A one-shot TCP server that prints the peer's address. Arguments: ADDR PORT.
const PEER_PRINTER: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(); s.settimeout(20)
c,a=s.accept(); print(a[0],flush=True); c.sendall(b'seen'); c.close()";

/// Connects to ADDR PORT and prints what it read, or the error's name. Arguments:
/// ADDR PORT.
const CLIENT: &str = "import socket,sys
try:
    s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5); print(s.recv(100).decode())
except OSError as e: print('error', type(e).__name__)";

/// podman with this test's own storage, run directory, configuration and network
/// directory, in the sandbox's host namespace; removes its container, its IPAM leases
/// and libcni cache, and its directories on drop.
struct Podman {
    dir: PathBuf,
    host_ns: String,
    network: String,
}

impl Podman {
    fn new(prefix: &str, host_ns: &str, conflist: &str) -> Podman {
        let dir = std::env::temp_dir().join(format!("netfast-podman-{prefix}"));
        let podman = Podman {
            dir: dir.clone(),
            host_ns: host_ns.to_owned(),
            network: prefix.to_owned(),
        };
        for sub in ["net", "root", "runroot", "tmp", "rootfs/bin", "rootfs/www"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the podman directories");
        }
        std::fs::copy("/bin/busybox", dir.join("rootfs/bin/busybox"))
            .expect("copy /bin/busybox (package busybox-static) into the rootfs");
        std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin/httpd")).expect("link httpd");
        std::fs::write(dir.join("rootfs/www/index.html"), PAGE).expect("write the page");
        let plugin_dir = netfast_cni_bin()
            .parent()
            .expect("the plugin's directory")
            .display()
            .to_string();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [network]\nnetwork_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{plugin_dir}\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{}\"\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 tmp_dir = \"{}\"\n",
                dir.join("net").display(),
                dir.join("tmp").display()
            ),
        )
        .expect("write containers.conf");
        std::fs::write(
            dir.join("net").join(format!("{}.conflist", podman.network)),
            conflist,
        )
        .expect("write the conflist");
        podman
    }

    /// `podman ARGS...` in the sandbox's host namespace.
    fn run(&self, args: &[&str]) -> Output {
        let root = self.dir.join("root");
        let runroot = self.dir.join("runroot");
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host_ns))
            .args(["podman", "--root"])
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--runtime", "runc", "--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()
            .expect("run podman (package podman)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn rootfs(&self) -> String {
        self.dir.join("rootfs").display().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f"]);
        let cni = Path::new("/var/lib/cni");
        let _ = std::fs::remove_dir_all(cni.join("networks").join(&self.network));
        if let Ok(entries) = std::fs::read_dir(cni.join("results")) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}-", self.network))
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Takes the CNI-made instance down on drop, before the lab's namespaces go.
struct Instance(String, String);

impl Drop for Instance {
    fn drop(&mut self) {
        let out = netfast(Some(&self.1), &["down", "--instance", &self.0]);
        if !out.status.success() {
            eprintln!("netfast down --instance {}: {}", self.0, text(&out.stderr));
        }
    }
}

#[test]
fn podman_run_publishes_and_masquerades_through_netfast_cni() {
    require_root();
    let prefix = unique_prefix("pd");
    let lab = lab::Lab::create(&prefix).expect("create the sandbox namespaces");
    let (host, lan) = (lab.host_ns(), lab.lan_ns());
    let bridge = format!("{prefix}b");
    // The lab's own cgroup for hostLocal, never the machine's root cgroup.
    let cgroup = lab
        .cgroup()
        .expect("no cgroup2 is mounted: hostLocal needs one")
        .to_path_buf();
    let conflist = format!(
        r#"{{"cniVersion":"1.0.0","name":"{prefix}","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
   "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.89.7.0/24"}}]],"routes":[{{"dst":"0.0.0.0/0"}}]}}}},
  {{"type":"netfast-cni","instance":"{prefix}","uplink":"{}","capabilities":{{"portMappings":true}},
   "hostLocal":{{"cgroup":"{}"}}}}
]}}"#,
        lab::UPLINK,
        cgroup.display()
    );
    let _instance = Instance(prefix.clone(), host.clone());
    let podman = Podman::new(&prefix, &host, &conflist);

    let name = format!("{prefix}c");
    let rootfs = podman.rootfs();
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &prefix,
        "-p",
        "8088:80",
        "--rootfs",
        &rootfs,
        "/bin/httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let pid = podman.ok(&["inspect", "-f", "{{.State.Pid}}", &name]);
    let container_net = format!("--net=/proc/{}/ns/net", pid.trim());
    let id = podman.ok(&["inspect", "-f", "{{.Id}}", &name]);

    // Published: the LAN fetches the page at the uplink address.
    let page = exec_ok(
        &lan,
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            &format!("http://{HOST_ADDR}:8088/"),
        ],
    );
    assert_eq!(page.trim(), PAGE);
    let listed = netfast(Some(&host), &["publish", "list", "--instance", &prefix]);
    let listed = text(&listed.stdout);
    assert!(
        listed.contains("8088") && listed.contains(id.trim()),
        "the mapping and its owner, the container:\n{listed}"
    );

    // From the host itself, in the network's cgroup: podman holds the host port with
    // a listener of its own (conmon), and hostLocal sends the connection past it.
    let held = exec_ok(&host, &["ss", "-Htlnp", "sport", "= :8088"]);
    assert!(
        held.contains("conmon"),
        "podman's holder of port 8088: {held:?}"
    );
    for addr in ["127.0.0.1".to_owned(), HOST_ADDR.to_string()] {
        let page = exec_in_cgroup(
            &host,
            Some(&cgroup),
            &["curl", "-sS", "-m", "5", &format!("http://{addr}:8088/")],
        );
        assert_eq!(
            text(&page.stdout).trim(),
            PAGE,
            "from the host to {addr}:8088: {}",
            text(&page.stderr)
        );
    }
    // Outside that cgroup, conmon's listener takes the connection and never answers:
    // what a host process meets without hostLocal.
    let outside = exec_in_cgroup(
        &host,
        None,
        &["curl", "-sS", "-m", "2", "http://127.0.0.1:8088/"],
    );
    assert!(
        text(&outside.stdout).is_empty() && text(&outside.stderr).contains("timed out"),
        "outside the cgroup: {outside:?}"
    );

    // Masqueraded: the far side sees the uplink address.
    let far = Background::spawn(
        &lan,
        &["python3", "-c", PEER_PRINTER, &LAN_ADDR.to_string(), "9000"],
    );
    wait_listening(&lan, "tcp", 9000);
    let out = Command::new("nsenter")
        .arg(&container_net)
        .args(["python3", "-c", CLIENT, &LAN_ADDR.to_string(), "9000"])
        .output()
        .expect("nsenter into the container's namespace");
    assert_eq!(text(&out.stdout).trim(), "seen", "{}", text(&out.stderr));
    let (seen, _) = far.wait(Duration::from_secs(10));
    assert_eq!(
        seen.trim(),
        HOST_ADDR.to_string(),
        "the far side sees the uplink address"
    );

    // No NAT rule and no nf_conntrack entry in the host namespace.
    let iptables = exec_ok(&host, &["iptables-save", "-t", "nat"]);
    assert!(
        !iptables.lines().any(|l| l.starts_with("-A")),
        "iptables nat rules:\n{iptables}"
    );
    let ruleset = exec_ok(&host, &["nft", "list", "ruleset"]);
    assert!(
        !["dnat", "snat", "masquerade"]
            .iter()
            .any(|verb| ruleset.contains(verb)),
        "nftables NAT:\n{ruleset}"
    );
    let tracked = exec(&host, &["conntrack", "-C"]);
    assert_eq!(text(&tracked.stdout).trim(), "0", "nf_conntrack entries");

    // podman rm calls DEL: the mapping goes, and the published port is closed.
    podman.ok(&["rm", "-f", &name]);
    let listed = netfast(Some(&host), &["publish", "list", "--instance", &prefix]);
    assert!(
        !text(&listed.stdout).contains(id.trim()),
        "the mapping is gone after podman rm:\n{}",
        text(&listed.stdout)
    );
    let after = exec_ok(
        &lan,
        &["python3", "-c", CLIENT, &HOST_ADDR.to_string(), "8088"],
    );
    assert_eq!(after.trim(), "error ConnectionRefusedError");
}
