//! What this kernel offers the datapath, probed at start: tcx, the fast path's
//! `bpf_redirect_peer`, `bpf_redirect_neigh`, the cgroup sock_addr hooks of host-local
//! access, and native XDP on the uplink (the driver's netdev xdp-features, or the
//! attach itself).
//!
//! Each probe asks the kernel itself, never its version: a distribution kernel may
//! carry a feature back (RHEL does) or lack one it could have (a config option). The
//! probes load tiny programs that are never attached to anything, and create no link
//! on any real interface: tcx is probed by a `BPF_LINK_CREATE` on ifindex `u32::MAX`,
//! which no interface has (the same test as cilium/ebpf's `haveTCX`).
//!
//! Where a feature is missing, netfast does something else and says so
//! ([`Features::consequences`]): netlink TC (clsact) filters instead of tcx, the fast
//! path off, host-local access refused, generic XDP instead of native.

use std::{
    ffi::CStr,
    io,
    mem::zeroed,
    os::fd::{FromRawFd, OwnedFd},
};

use aya::{
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported},
};
use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_type};
use serde::Serialize;

use super::{
    link_info::bpf,
    loader::{IngressMode, TcAttach, TcAttachMode},
    prog_load::{load_retrying, syscall_retrying},
};

/// One probed feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Feature {
    /// How `up` and `status` name it: "tcx", "bpf_redirect_peer", ...
    pub name: &'static str,
    pub on: bool,
    /// Why it is off (the kernel's answer), or how it was told when that matters;
    /// None when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Feature {
    fn on(name: &'static str) -> Self {
        Feature {
            name,
            on: true,
            why: None,
        }
    }

    fn off(name: &'static str, why: impl Into<String>) -> Self {
        Feature {
            name,
            on: false,
            why: Some(why.into()),
        }
    }

    /// A probe's answer: on, off with `off_why`, or off because the probe itself failed.
    fn from_probe<E: std::fmt::Display>(
        name: &'static str,
        probe: Result<bool, E>,
        off_why: &str,
    ) -> Self {
        match probe {
            Ok(true) => Feature::on(name),
            Ok(false) => Feature::off(name, off_why),
            Err(e) => Feature::off(name, format!("the probe failed: {e}")),
        }
    }
}

/// Every feature the datapath may use, as probed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Features {
    /// `uname -r`, for messages.
    pub kernel: String,
    /// tcx links (Linux 6.6): without them the tc programs attach as netlink TC filters.
    pub tcx: Feature,
    /// `bpf_redirect_peer` from tc (Linux 5.10): the fast path toward a container.
    pub redirect_peer: Feature,
    /// `bpf_redirect_neigh` from tc (Linux 5.10). netfast does not call it today (the
    /// fast path toward the uplink takes the route's next hop from `bpf_fib_lookup`
    /// and sends with `bpf_redirect`); it is reported for the operator.
    pub redirect_neigh: Feature,
    /// The cgroup sock_addr hooks connect4, sendmsg4, recvmsg4 (5.2) and getpeername4
    /// (5.8), `bpf_get_netns_cookie` there (5.7) and `SO_NETNS_COOKIE` (5.14): all of
    /// host-local access.
    pub sock_addr: Feature,
    /// Native (driver) XDP on the uplink: the driver's netdev xdp-features (Linux 6.3),
    /// or in XDP mode the attach itself; None when neither told (an older kernel in tc
    /// mode, or no uplink given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_native: Option<Feature>,
}

/// What a config asks of the kernel, for [`Features::consequences`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// `tc_attach` as configured.
    pub tc_attach: TcAttachMode,
    /// `fast_path` as configured.
    pub fast_path: bool,
    /// `[host_local]` is there.
    pub host_local: bool,
    pub ingress: IngressMode,
}

impl Features {
    /// Probes this kernel, and native XDP on `uplink` (an interface of the calling
    /// thread's network namespace; nothing is attached to it). Needs CAP_BPF (root);
    /// a probe that fails says so in `why`.
    pub fn probe(uplink: Option<&str>) -> Features {
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let tc_helper =
            |helper| load_retrying(|| is_helper_supported(ProgramType::SchedClassifier, helper));
        Features {
            tcx: Feature::from_probe(
                "tcx",
                probe_tcx(),
                "BPF_LINK_CREATE does not know BPF_TCX_INGRESS (tcx came in Linux 6.6)",
            ),
            redirect_peer: Feature::from_probe(
                "bpf_redirect_peer",
                tc_helper(BpfHelper::BPF_FUNC_redirect_peer),
                "the verifier does not know the helper from tc (Linux 5.10)",
            ),
            redirect_neigh: Feature::from_probe(
                "bpf_redirect_neigh",
                tc_helper(BpfHelper::BPF_FUNC_redirect_neigh),
                "the verifier does not know the helper from tc (Linux 5.10)",
            ),
            sock_addr: probe_sock_addr(),
            xdp_native: uplink.and_then(|u| match probe_xdp_native(u) {
                Ok(Some(0)) => Some(Feature::off(
                    XDP_NATIVE,
                    format!("the driver of {u} offers no native XDP (netdev xdp-features 0)"),
                )),
                Ok(Some(flags)) if flags & NETDEV_XDP_ACT_BASIC == 0 => Some(Feature::off(
                    XDP_NATIVE,
                    format!(
                        "the driver of {u} offers no basic native XDP (netdev xdp-features {flags:#x})"
                    ),
                )),
                Ok(Some(_)) => Some(Feature::on(XDP_NATIVE)),
                // No netdev family (before 6.3): the attach in XDP mode tells.
                Ok(None) => None,
                Err(e) => Some(Feature::off(
                    XDP_NATIVE,
                    format!("the netdev xdp-features probe of {u} failed: {e}"),
                )),
            }),
            kernel,
        }
    }

    /// `features: tcx on; bpf_redirect_peer on; ...`: every feature, on or off.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .all()
            .iter()
            .map(|f| format!("{} {}", f.name, if f.on { "on" } else { "off" }))
            .collect();
        if self.xdp_native.is_none() {
            parts.push(
                "native XDP unknown until XDP attaches (no netdev xdp-features before Linux 6.3)"
                    .to_owned(),
            );
        }
        format!("kernel {}: {}", self.kernel, parts.join("; "))
    }

    /// The features in the order `summary` names them.
    pub fn all(&self) -> Vec<&Feature> {
        let mut out = vec![
            &self.tcx,
            &self.redirect_peer,
            &self.redirect_neigh,
            &self.sock_addr,
        ];
        out.extend(self.xdp_native.as_ref());
        out
    }

    /// For each feature that is off, or each choice that is not the default, one line:
    /// what is off, why, and what netfast does instead, for a config that `needs` it.
    pub fn consequences(&self, needs: &Needs) -> Vec<String> {
        let why = |f: &Feature| f.why.clone().unwrap_or_default();
        let mut out = Vec::new();
        match (needs.tc_attach, self.tcx.on) {
            (TcAttachMode::Netlink, true) => out.push(
                "tc programs: netlink TC filters on a clsact qdisc, as tc_attach = \"netlink\" \
                 asks (tcx is available)"
                    .to_owned(),
            ),
            (_, false) => out.push(format!(
                "tc programs: netlink TC filters on a clsact qdisc, because tcx is off ({})",
                why(&self.tcx)
            )),
            _ => {}
        }
        if !self.redirect_peer.on {
            out.push(format!(
                "fast path off: no bpf_redirect_peer ({}){}",
                why(&self.redirect_peer),
                if needs.fast_path {
                    "; translated packets cross the bridge and the host's routing"
                } else {
                    " (fast_path = false asks for off anyway)"
                }
            ));
        }
        if !self.redirect_neigh.on {
            out.push(format!(
                "bpf_redirect_neigh off ({}): nothing changes, netfast does not call it \
                 (the fast path toward the uplink uses bpf_fib_lookup and bpf_redirect)",
                why(&self.redirect_neigh)
            ));
        }
        if !self.sock_addr.on {
            out.push(format!(
                "host-local access unavailable: {}{}",
                why(&self.sock_addr),
                if needs.host_local {
                    ""
                } else {
                    " (the config has no [host_local], so nothing is lost)"
                }
            ));
        }
        if needs.ingress == IngressMode::Xdp
            && let Some(x) = &self.xdp_native
            && !x.on
        {
            out.push(format!(
                "native XDP unavailable on the uplink ({}): XDP runs in generic (skb) mode, \
                 which is slower than tc",
                why(x)
            ));
        }
        out
    }

    /// The fast path as CONFIG gets it: what the config asks, unless the kernel lacks
    /// `bpf_redirect_peer`; then off, with the reason.
    pub fn fast_path(&self, wanted: bool) -> (bool, Option<String>) {
        match (wanted, self.redirect_peer.on) {
            (true, false) => (
                false,
                Some(format!(
                    "no bpf_redirect_peer ({})",
                    self.redirect_peer.why.as_deref().unwrap_or("")
                )),
            ),
            (wanted, _) => (wanted, None),
        }
    }

    /// `tc_attach` resolved against this kernel: "auto" takes tcx when it is there,
    /// else netlink; "tcx" without tcx is refused, naming the value and the fix.
    pub fn tc_attach(&self, setting: TcAttachMode) -> Result<TcAttach, String> {
        match (setting, self.tcx.on) {
            (TcAttachMode::Auto, true) | (TcAttachMode::Tcx, true) => Ok(TcAttach::Tcx),
            (TcAttachMode::Auto, false) | (TcAttachMode::Netlink, _) => Ok(TcAttach::Netlink),
            (TcAttachMode::Tcx, false) => Err(format!(
                "tc attach mode \"tcx\" (tc_attach): this kernel ({}) has no tcx ({}); \
                 use tc_attach = \"auto\" or \"netlink\", which attach netlink TC filters \
                 on a clsact qdisc instead",
                self.kernel,
                self.tcx.why.as_deref().unwrap_or("")
            )),
        }
    }
}

/// How `up` and `status` name native XDP on the uplink.
pub const XDP_NATIVE: &str = "native XDP";

/// `NETDEV_XDP_ACT_BASIC` (include/uapi/linux/netdev.h): the driver runs XDP programs
/// with XDP_PASS, XDP_DROP, XDP_TX and XDP_ABORTED.
const NETDEV_XDP_ACT_BASIC: u64 = 1;

/// Appends a netlink attribute (type, payload), padded to 4 bytes.
fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// The attributes after the netlink and genetlink headers of `msg`, as (type, payload).
fn attrs(msg: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 16 + 4;
    while at + 4 <= msg.len() {
        let len = usize::from(u16::from_ne_bytes([msg[at], msg[at + 1]]));
        // NLA_F_NESTED and NLA_F_NET_BYTEORDER sit in the top bits of the type.
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]) & 0x3fff;
        if len < 4 || at + len > msg.len() {
            break;
        }
        out.push((kind, &msg[at + 4..at + len]));
        at += len.next_multiple_of(4);
    }
    out
}

/// One generic netlink request and its answer: Ok(None) when the kernel answers with
/// the error `absent` (the family or the object does not exist).
fn genl_request(
    sock: &OwnedFd,
    family: u16,
    cmd: u8,
    attrs_buf: &[u8],
    absent: i32,
) -> io::Result<Option<Vec<u8>>> {
    use std::os::fd::AsRawFd;
    let len = 16 + 4 + attrs_buf.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&family.to_ne_bytes());
    msg.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel's
    msg.extend_from_slice(&[cmd, 1, 0, 0]); // genlmsghdr: cmd, version 1
    msg.extend_from_slice(attrs_buf);
    // SAFETY: `msg` is a valid buffer of `msg.len()` bytes for the call.
    let sent = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 8192];
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let got = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(got);
    if buf.len() < 16 {
        return Err(io::Error::other("a short netlink answer"));
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = buf
            .get(16..20)
            .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        return match errno {
            0 => Err(io::Error::other("an empty netlink answer")),
            e if e == absent => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    Ok(Some(buf))
}

/// The netdev xdp-features of `ifname` (Linux 6.3 and later: generic netlink family
/// "netdev", `NETDEV_CMD_DEV_GET`); Ok(None) when the kernel has no netdev family.
/// Read only: nothing is attached to the interface.
fn probe_xdp_native(ifname: &str) -> io::Result<Option<u64>> {
    const GENL_ID_CTRL: u16 = 0x10;
    const CTRL_CMD_GETFAMILY: u8 = 3;
    const CTRL_ATTR_FAMILY_ID: u16 = 1;
    const CTRL_ATTR_FAMILY_NAME: u16 = 2;
    const NETDEV_CMD_DEV_GET: u8 = 1;
    const NETDEV_A_DEV_IFINDEX: u16 = 1;
    const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
    let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_GENERIC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = Vec::new();
    push_attr(&mut req, CTRL_ATTR_FAMILY_NAME, b"netdev\0");
    let Some(answer) = genl_request(&sock, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, &req, libc::ENOENT)?
    else {
        return Ok(None);
    };
    let family = attrs(&answer)
        .into_iter()
        .find(|(k, v)| *k == CTRL_ATTR_FAMILY_ID && v.len() >= 2)
        .map(|(_, v)| u16::from_ne_bytes([v[0], v[1]]))
        .ok_or_else(|| io::Error::other("no family id for netdev"))?;
    let mut req = Vec::new();
    push_attr(&mut req, NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes());
    let answer = genl_request(&sock, family, NETDEV_CMD_DEV_GET, &req, libc::ENODEV)?
        .ok_or_else(|| io::Error::other(format!("netdev does not know {ifname}")))?;
    attrs(&answer)
        .into_iter()
        .find(|(k, v)| *k == NETDEV_A_DEV_XDP_FEATURES && v.len() >= 8)
        .map(|(_, v)| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[..8]);
            Some(u64::from_ne_bytes(b))
        })
        .ok_or_else(|| io::Error::other("no xdp-features in the netdev answer"))
}

/// Two instructions: `r0 = ret; exit`.
fn trivial_insns(ret: i32) -> [u8; 16] {
    let mut insns = [0u8; 16];
    // BPF_ALU64 | BPF_MOV | BPF_K, dst r0.
    insns[0] = 0xb7;
    insns[4..8].copy_from_slice(&ret.to_le_bytes());
    // BPF_JMP | BPF_EXIT.
    insns[8] = 0x95;
    insns
}

/// Loads `r0 = ret; exit` as `prog_type` with `expected_attach_type`; the fd, or the
/// kernel's errno.
fn load_trivial(
    prog_type: bpf_prog_type,
    expected_attach_type: Option<bpf_attach_type>,
    ret: i32,
) -> io::Result<OwnedFd> {
    let insns = trivial_insns(ret);
    let license: &CStr = c"GPL";
    // SAFETY: all zeroes is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { zeroed() };
    // SAFETY: union access; the prog-load member is plain data.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = prog_type as u32;
    load.insn_cnt = (insns.len() / 8) as u32;
    load.insns = insns.as_ptr() as u64;
    load.license = license.as_ptr() as u64;
    if let Some(t) = expected_attach_type {
        load.expected_attach_type = t as u32;
    }
    let fd = syscall_retrying(|| bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr))?;
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: BPF_PROG_LOAD returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// tcx: a tc program linked with `BPF_TCX_INGRESS` to ifindex `u32::MAX`. A kernel
/// with tcx looks the interface up and answers ENODEV; one without refuses the attach
/// type with EINVAL (BPF_LINK_CREATE itself, Linux 5.7, too).
fn probe_tcx() -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let prog = load_trivial(bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS, None, 0)?;
    // SAFETY: all zeroes is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { zeroed() };
    attr.link_create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    attr.link_create.__bindgen_anon_2.target_ifindex = u32::MAX;
    attr.link_create.attach_type = bpf_attach_type::BPF_TCX_INGRESS as u32;
    match bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
        Ok(fd) => {
            // An interface with that index: a link on it must not stay.
            if let Ok(fd) = i32::try_from(fd) {
                // SAFETY: a new fd that nothing else owns; dropping it detaches.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            Ok(true)
        }
    }
}

/// The sock_addr hooks of host-local access, each by loading a program for it, then
/// `bpf_get_netns_cookie` there and `SO_NETNS_COOKIE`.
fn probe_sock_addr() -> Feature {
    const NAME: &str = "cgroup sock_addr";
    let hooks = [
        (
            "connect4",
            bpf_attach_type::BPF_CGROUP_INET4_CONNECT,
            "4.17",
        ),
        ("sendmsg4", bpf_attach_type::BPF_CGROUP_UDP4_SENDMSG, "4.18"),
        ("recvmsg4", bpf_attach_type::BPF_CGROUP_UDP4_RECVMSG, "5.2"),
        (
            "getpeername4",
            bpf_attach_type::BPF_CGROUP_INET4_GETPEERNAME,
            "5.8",
        ),
    ];
    let mut missing = Vec::new();
    for (hook, attach_type, since) in hooks {
        // recvmsg4 and getpeername4 must return 1; every hook accepts it.
        match load_trivial(
            bpf_prog_type::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            Some(attach_type),
            1,
        ) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                missing.push(format!("{hook} (Linux {since})"));
            }
            Err(e) => return Feature::off(NAME, format!("the probe of {hook} failed: {e}")),
        }
    }
    if !missing.is_empty() {
        return Feature::off(
            NAME,
            format!("the kernel has no cgroup hook {}", missing.join(", ")),
        );
    }
    match load_retrying(|| {
        is_helper_supported(
            ProgramType::CgroupSockAddr,
            BpfHelper::BPF_FUNC_get_netns_cookie,
        )
    }) {
        Ok(true) => {}
        Ok(false) => {
            return Feature::off(
                NAME,
                "no bpf_get_netns_cookie in sock_addr programs (Linux 5.7)",
            );
        }
        Err(e) => {
            return Feature::off(
                NAME,
                format!("the probe of bpf_get_netns_cookie failed: {e}"),
            );
        }
    }
    match crate::host::cgroup::netns_cookie() {
        Ok(_) => Feature::on(NAME),
        Err(e) => Feature::off(NAME, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_on() -> Features {
        Features {
            kernel: "6.1.0-test".into(),
            tcx: Feature::on("tcx"),
            redirect_peer: Feature::on("bpf_redirect_peer"),
            redirect_neigh: Feature::on("bpf_redirect_neigh"),
            sock_addr: Feature::on("cgroup sock_addr"),
            xdp_native: None,
        }
    }

    const NEEDS: Needs = Needs {
        tc_attach: TcAttachMode::Auto,
        fast_path: true,
        host_local: true,
        ingress: IngressMode::Tc,
    };

    #[test]
    fn everything_on_says_so_and_changes_nothing() {
        let f = all_on();
        assert_eq!(
            f.summary(),
            "kernel 6.1.0-test: tcx on; bpf_redirect_peer on; bpf_redirect_neigh on; \
             cgroup sock_addr on; native XDP unknown until XDP attaches (no netdev \
             xdp-features before Linux 6.3)"
        );
        assert_eq!(f.consequences(&NEEDS), Vec::<String>::new());
        assert_eq!(f.fast_path(true), (true, None));
        assert_eq!(f.fast_path(false), (false, None));
        assert_eq!(f.tc_attach(TcAttachMode::Auto), Ok(TcAttach::Tcx));
        assert_eq!(f.tc_attach(TcAttachMode::Tcx), Ok(TcAttach::Tcx));
        assert_eq!(f.tc_attach(TcAttachMode::Netlink), Ok(TcAttach::Netlink));
        // Forcing netlink where tcx exists is said, as a choice.
        let forced = Needs {
            tc_attach: TcAttachMode::Netlink,
            ..NEEDS
        };
        assert_eq!(
            f.consequences(&forced),
            vec![
                "tc programs: netlink TC filters on a clsact qdisc, as tc_attach = \"netlink\" \
                 asks (tcx is available)"
                    .to_owned()
            ]
        );
    }

    /// A Debian 12 kernel (6.1, no tcx) with a build lacking the fast path's helper,
    /// host-local hooks and native XDP: each line says what is off, why, and what
    /// netfast does instead.
    #[test]
    fn what_is_off_is_named_with_why_and_what_instead() {
        let f = Features {
            tcx: Feature::off("tcx", "no tcx here"),
            redirect_peer: Feature::off("bpf_redirect_peer", "unknown func"),
            redirect_neigh: Feature::off("bpf_redirect_neigh", "unknown func"),
            sock_addr: Feature::off("cgroup sock_addr", "the kernel has no cgroup hook x"),
            xdp_native: Some(Feature::off("native XDP on eth0", "EOPNOTSUPP")),
            ..all_on()
        };
        assert_eq!(
            f.summary(),
            "kernel 6.1.0-test: tcx off; bpf_redirect_peer off; bpf_redirect_neigh off; \
             cgroup sock_addr off; native XDP on eth0 off"
        );
        let xdp = Needs {
            ingress: IngressMode::Xdp,
            ..NEEDS
        };
        assert_eq!(
            f.consequences(&xdp),
            vec![
                "tc programs: netlink TC filters on a clsact qdisc, because tcx is off (no tcx here)",
                "fast path off: no bpf_redirect_peer (unknown func); translated packets cross \
                 the bridge and the host's routing",
                "bpf_redirect_neigh off (unknown func): nothing changes, netfast does not call \
                 it (the fast path toward the uplink uses bpf_fib_lookup and bpf_redirect)",
                "host-local access unavailable: the kernel has no cgroup hook x",
                "native XDP unavailable on the uplink (EOPNOTSUPP): XDP runs in generic (skb) \
                 mode, which is slower than tc",
            ]
        );
        assert_eq!(
            f.fast_path(true),
            (
                false,
                Some("no bpf_redirect_peer (unknown func)".to_owned())
            )
        );
        assert_eq!(f.fast_path(false), (false, None));
        assert_eq!(f.tc_attach(TcAttachMode::Auto), Ok(TcAttach::Netlink));
        assert_eq!(f.tc_attach(TcAttachMode::Netlink), Ok(TcAttach::Netlink));
        let err = f.tc_attach(TcAttachMode::Tcx).expect_err("no tcx");
        assert_eq!(
            err,
            "tc attach mode \"tcx\" (tc_attach): this kernel (6.1.0-test) has no tcx (no tcx \
             here); use tc_attach = \"auto\" or \"netlink\", which attach netlink TC filters \
             on a clsact qdisc instead"
        );
        let json = serde_json::to_value(&f).expect("json");
        assert_eq!(json["tcx"]["on"], false);
        assert_eq!(json["tcx"]["why"], "no tcx here");
        assert_eq!(json["xdp_native"]["name"], "native XDP on eth0");
        assert!(
            serde_json::to_value(all_on()).expect("json")["tcx"]
                .get("why")
                .is_none()
        );
    }

    /// On this machine's kernel (6.18 here) every probe answers, and the kernel's
    /// own ones say on: a probe that cannot tell must say why, never pass silently.
    #[test]
    fn the_probes_answer_on_this_kernel() {
        if !nix::unistd::Uid::effective().is_root() {
            println!("skipped: the probes load BPF programs and need root");
            return;
        }
        let f = Features::probe(Some("lo"));
        // Loopback has no driver XDP: the netdev probe says so.
        let lo = f.xdp_native.clone().expect("6.18 has netdev xdp-features");
        assert!(!lo.on, "lo has no native XDP: {lo:?}");
        assert_eq!(
            lo.why.as_deref(),
            Some("the driver of lo offers no native XDP (netdev xdp-features 0)")
        );
        let f = Features {
            xdp_native: None,
            ..f
        };
        for feature in f.all() {
            assert!(
                feature.on,
                "{} is off on kernel {}: {:?}",
                feature.name, f.kernel, feature.why
            );
        }
    }
}
