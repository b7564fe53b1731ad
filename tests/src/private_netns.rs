//! A network namespace of a test's own for the packet tests whose answer depends on
//! the routing table (`bpf_fib_lookup`): BPF_PROG_TEST_RUN looks routes up in the
//! calling thread's network namespace, so a test first moves its thread into a new,
//! unnamed one (it goes when the thread ends), with veths that stand in for the
//! uplink and the bridge. The machine's own interfaces and routes are never read or
//! touched.

use std::{ffi::CString, process::Command};

use crate::harness::require_root;

/// The uplink and bridge stand-ins inside the test's namespace.
pub const UPLINK: &str = "nfup0";
pub const BRIDGE: &str = "nfbr0";

/// Moves this test's thread into a new network namespace and builds, with `ip`
/// (whose processes start in the thread's namespace): lo up, forwarding on, an
/// "uplink" veth with `uplink_cidr` and a default route via 10.0.1.1, a "bridge"
/// veth with 172.16.0.100/24. Then runs `more` (`ip` argument lists).
pub fn private_netns(uplink_cidr: &str, more: &[&[&str]]) {
    require_root();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("a network namespace of this test's own (needs root)");
    let base: [&[&str]; 11] = [
        &["link", "set", "lo", "up"],
        &[
            "link", "add", UPLINK, "type", "veth", "peer", "name", "nfup1",
        ],
        &[
            "link", "add", BRIDGE, "type", "veth", "peer", "name", "nfbr1",
        ],
        &["addr", "add", uplink_cidr, "dev", UPLINK],
        &["addr", "add", "172.16.0.100/24", "dev", BRIDGE],
        &["link", "set", UPLINK, "up"],
        &["link", "set", "nfup1", "up"],
        &["link", "set", BRIDGE, "up"],
        &["link", "set", "nfbr1", "up"],
        &["route", "add", "default", "via", "10.0.1.1"],
        &["route", "add", "198.51.100.0/24", "dev", BRIDGE],
    ];
    sysctl("net.ipv4.conf.all.forwarding=1");
    for args in base.iter().chain(more) {
        ip(args);
    }
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn sysctl(setting: &str) {
    let out = Command::new("sysctl")
        .args(["-qw", setting])
        .output()
        .expect("run sysctl");
    assert!(
        out.status.success(),
        "sysctl {setting}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The index of `name` in this thread's namespace.
pub fn ifindex(name: &str) -> u32 {
    let c_name = CString::new(name).expect("an interface name has no NUL");
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    assert_ne!(index, 0, "no interface {name} in the test's namespace");
    index
}
