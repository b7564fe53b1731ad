//! The netlink TC (clsact) fallback that kernels before 6.6 (Debian 12's 6.1, Ubuntu
//! 22.04's 5.15) need, tested on this kernel by forcing it with `tc_attach = "netlink"`.
//! Each test has its own sandbox (unique prefix with "kf", `netfast down` and the
//! namespaces removed on drop, also on failure).
//!
//! What is asserted, from the kernel and from the ends of the traffic:
//! - published TCP from the LAN peer reaches the container and masqueraded TCP reaches
//!   the LAN peer from the uplink's address, with the translation counters moving,
//!   after `up` exited (the filters keep the programs without any process or pin);
//! - `tc filter show` lists exactly one bpf filter per hook, carrying our program, and
//!   no tcx program is attached (BPF_PROG_QUERY); `status` and `status --json` list
//!   the filters with their pref and handle;
//! - a re-`up` replaces the programs in place (same pref and handle);
//! - `down` removes the filters and the clsact qdisc netfast added, and the record;
//! - switching tcx -> netlink -> tcx by re-`up` never leaves two programs on a hook,
//!   and says what it detached.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::time::Duration;

use aya::programs::{SchedClassifier, TcAttachType};
use netfast::config::IngressMode;
use support::{Background, Sandbox, exec, exec_ok, succeeded, text, wait_listening};

const HOST: &str = "10.0.1.48";
const LAN: &str = "10.0.1.26";
const UPLINK: &str = "eth0";

/// A TCP server: accepts one connection, answers each message with `echo:<data>`
/// until the client closes, then prints the peer it accepted.
const TCP_ECHO: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(); s.settimeout(15)
c,a=s.accept(); c.settimeout(15)
while True:
    d=c.recv(100)
    if not d: break
    c.sendall(b'echo:'+d)
print(a[0],a[1],flush=True)";

/// A TCP client: sends 4 messages to ADDR PORT, each after the answer to the one
/// before; prints the answers.
const TCP_CLIENT: &str = "import socket,sys
s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)
out=[]
for i in range(4):
    s.sendall(b'm%d' % i); out.append(s.recv(100).decode())
s.close(); print(' '.join(out),flush=True)";

const ANSWERS: &str = "echo:m0 echo:m1 echo:m2 echo:m3";

/// One bpf filter as `tc filter show` prints it.
#[derive(Debug, PartialEq, Eq)]
struct ShownFilter {
    pref: u16,
    handle: String,
    name: String,
}

/// Parses `tc filter show dev DEV ingress|egress`: the lines of bpf filters, e.g.
/// `filter protocol all pref 49152 bpf chain 0 handle 0x1 uplink_ingress_tc
/// direct-action not_in_hw id 42 tag ... jited`. The per-priority head lines (no
/// handle) are left out.
fn parse_tc_filters(out: &str) -> Vec<ShownFilter> {
    out.lines()
        .filter(|l| l.contains(" bpf ") && l.contains(" handle "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .map(|w| (*w).to_owned())
                    .unwrap_or_else(|| panic!("no {key} in {l:?}"))
            };
            let handle = after("handle");
            ShownFilter {
                pref: after("pref").parse().expect("pref is a number"),
                name: after(&handle),
                handle,
            }
        })
        .collect()
}

/// The bpf filters on `dev`'s `hook` ("ingress" or "egress") in namespace `ns`.
fn tc_filters(ns: &str, dev: &str, hook: &str) -> Vec<ShownFilter> {
    let out = exec(ns, &["tc", "filter", "show", "dev", dev, hook]);
    // Without a clsact qdisc tc says so on stderr and exits non-zero: no filters.
    parse_tc_filters(&text(&out.stdout))
}

/// Whether `dev` in `ns` has a clsact qdisc (`tc qdisc show dev DEV`).
fn has_clsact(ns: &str, dev: &str) -> bool {
    exec_ok(ns, &["tc", "qdisc", "show", "dev", dev])
        .lines()
        .any(|l| l.starts_with("qdisc clsact "))
}

/// The names of the programs attached over tcx to `dev`'s hook in namespace `ns`
/// (BPF_PROG_QUERY; bpftool 7.1 here predates tcx).
fn tcx_programs(ns: &str, dev: &str, hook: TcAttachType) -> Vec<String> {
    let dev = dev.to_owned();
    netfast::host::netns::run_in(ns, move || SchedClassifier::query_tcx(&dev, hook))
        .expect("enter the namespace")
        .expect("query tcx")
        .1
        .into_iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The one container veth of netns2 in the seed lab, as `status --json` names it.
fn container_veths(status_json: &serde_json::Value) -> Vec<String> {
    status_json["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .filter(|p| {
            p["pin"]
                .as_str()
                .is_some_and(|s| s.starts_with("link_container_"))
        })
        .map(|p| p["interface"].as_str().expect("interface").to_owned())
        .collect()
}

fn status_json(sb: &Sandbox) -> serde_json::Value {
    let out = succeeded(
        &sb.netfast(&["status", "--json", "--instance", &sb.prefix]),
        "status --json",
    );
    serde_json::from_str(&out).expect("status --json is JSON")
}

/// Writes the sandbox's config again with `top` in front (top-level keys) and
/// `ingress`, and runs `up`; returns its stdout.
fn re_up(sb: &Sandbox, ingress: IngressMode, top: &str) -> String {
    let seed = netfast::lab::seed_config_toml(&sb.prefix, ingress);
    std::fs::write(&sb.config, format!("{top}\n{seed}")).expect("write config");
    succeeded(&sb.netfast(&["up", "--config", sb.config_str()]), "up")
}

/// LAN peer -> HOST:8088/tcp -> netns2:80, and netns2 -> LAN:9000/tcp masqueraded;
/// asserts what both ends saw and that the translation counters moved.
fn traffic_is_translated(sb: &Sandbox) {
    let dnat = sb.counter("dnat_new");
    let snat = sb.counter("snat_new");
    let server = Background::spawn(
        &sb.container(2),
        &["python3", "-c", TCP_ECHO, "172.16.0.102", "80"],
    );
    wait_listening(&sb.container(2), "tcp", 80);
    let answers = exec_ok(&sb.lan(), &["python3", "-c", TCP_CLIENT, HOST, "8088"]);
    assert_eq!(answers.trim(), ANSWERS, "the LAN client's answers");
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert!(
        seen.starts_with(&format!("{LAN} ")),
        "the backend must see the LAN peer: {seen:?}"
    );

    let server = Background::spawn(&sb.lan(), &["python3", "-c", TCP_ECHO, LAN, "9000"]);
    wait_listening(&sb.lan(), "tcp", 9000);
    let answers = exec_ok(
        &sb.container(2),
        &["python3", "-c", TCP_CLIENT, LAN, "9000"],
    );
    assert_eq!(answers.trim(), ANSWERS, "the container's answers");
    let (seen, _) = server.wait(Duration::from_secs(10));
    assert!(
        seen.starts_with(&format!("{HOST} ")),
        "the LAN peer must see the uplink address: {seen:?}"
    );
    assert_eq!(sb.counter("dnat_new") - dnat, 1, "one new published flow");
    assert_eq!(sb.counter("snat_new") - snat, 1, "one new masqueraded flow");
}

/// Exactly one program per tc hook of the uplink and of each container veth, of the
/// kind `netlink` says, and none of the other kind.
fn one_program_per_hook(sb: &Sandbox, veths: &[String], netlink: bool) {
    let host = sb.host();
    let mut hooks = vec![
        (UPLINK.to_owned(), "ingress", "uplink_ingress_tc"),
        (UPLINK.to_owned(), "egress", "uplink_egress_tc"),
    ];
    hooks.extend(
        veths
            .iter()
            .map(|v| (v.clone(), "ingress", "container_ingress_tc")),
    );
    for (dev, hook, program) in hooks {
        let filters = tc_filters(&host, &dev, hook);
        let attach_type = if hook == "egress" {
            TcAttachType::Egress
        } else {
            TcAttachType::Ingress
        };
        let tcx = tcx_programs(&host, &dev, attach_type);
        if netlink {
            assert_eq!(filters.len(), 1, "{dev} {hook}: {filters:?}");
            assert_eq!(filters[0].name, program, "{dev} {hook}");
            assert_eq!(tcx, Vec::<String>::new(), "{dev} {hook}: no tcx program");
        } else {
            assert_eq!(filters, vec![], "{dev} {hook}: no netlink filter");
            assert_eq!(tcx.len(), 1, "{dev} {hook}: {tcx:?}");
            // The kernel keeps 15 bytes of a program's name.
            assert!(program.starts_with(&tcx[0]), "{dev} {hook}: {tcx:?}");
        }
    }
}

#[test]
fn netlink_mode_translates_persists_shows_and_goes_with_down() {
    let sb = Sandbox::up_with("kfnl", IngressMode::Tc, "tc_attach = \"netlink\"", "");
    let host = sb.host();
    // `up` has exited: nothing of netfast runs, and there is no link pin to hold the
    // programs; the filters do.
    for pin in ["link_uplink_ingress", "link_uplink_egress"] {
        let path = netfast::bpf::pins::pin_dir(&sb.prefix).join(pin);
        assert!(
            !path.exists(),
            "{} must not exist in netlink mode",
            path.display()
        );
    }
    assert!(has_clsact(&host, UPLINK), "up adds the clsact qdisc");
    let json = status_json(&sb);
    let veths = container_veths(&json);
    assert_eq!(veths.len(), 3, "a container program per veth: {json}");
    one_program_per_hook(&sb, &veths, true);

    traffic_is_translated(&sb);

    // status: the filters with their pref and handle, and why tc is netlink.
    assert_eq!(json["tc_attach"], "netlink");
    let shown = tc_filters(&host, UPLINK, "ingress");
    let ingress = &json["programs"][0];
    assert_eq!(ingress["pin"], "link_uplink_ingress");
    assert_eq!(ingress["attach"], "tc");
    assert_eq!(ingress["hook"], "ingress");
    assert_eq!(ingress["tc_live"], true);
    assert_eq!(ingress["tc_priority"], u64::from(shown[0].pref));
    assert_eq!(
        format!("{:#x}", ingress["tc_handle"].as_u64().expect("handle")),
        shown[0].handle
    );
    assert!(ingress["prog_id"].as_u64().expect("prog id") > 0);
    assert_eq!(json["features"]["tcx"]["on"], true);
    let status = succeeded(&sb.netfast(&["status", "--instance", &sb.prefix]), "status");
    for needle in [
        "tc attach:   netlink TC filters on a clsact qdisc (tc_attach = \"netlink\"; tcx is available)",
        "features:    kernel ",
        "fast path:   on",
    ] {
        assert!(
            status.contains(needle),
            "status lacks {needle:?}:\n{status}"
        );
    }
    let row = status
        .lines()
        .find(|l| l.starts_with("uplink_ingress_tc"))
        .expect("the uplink_ingress_tc row");
    assert!(
        row.contains("tc ingress")
            && row.contains(&format!(
                "pref {} handle {}",
                shown[0].pref, shown[0].handle
            )),
        "{row}"
    );

    // A re-`up` replaces each program in place: same filters, same pref and handle.
    let before = tc_filters(&host, UPLINK, "ingress");
    let out = re_up(&sb, IngressMode::Tc, "tc_attach = \"netlink\"");
    assert!(out.contains("netlink tc ingress"), "{out}");
    assert!(out.contains("replaced in place"), "{out}");
    assert!(
        out.contains(
            "tc programs: netlink TC filters on a clsact qdisc, as tc_attach = \"netlink\" asks"
        ),
        "up says why: {out}"
    );
    assert!(out.contains("  features: kernel "), "{out}");
    assert_eq!(tc_filters(&host, UPLINK, "ingress"), before);
    one_program_per_hook(&sb, &veths, true);
    traffic_is_translated(&sb);

    // down: the filters, the qdisc netfast added and the record go.
    let record = netfast::bpf::tc_netlink::record_path(&sb.prefix);
    assert!(record.exists(), "{} records the filters", record.display());
    let down = succeeded(&sb.netfast(&["down", "--config", sb.config_str()]), "down");
    assert!(
        down.contains("  removed netlink TC filter link_uplink_ingress")
            && down.contains("  removed the clsact qdisc on "),
        "down names the filters and qdiscs it removed: {down}"
    );
    assert_eq!(tc_filters(&host, UPLINK, "ingress"), vec![]);
    assert_eq!(tc_filters(&host, UPLINK, "egress"), vec![]);
    assert!(
        !has_clsact(&host, UPLINK),
        "down removes the clsact qdisc it added"
    );
    assert!(!record.exists(), "down removes the record");
    assert!(!netfast::bpf::pins::pin_dir(&sb.prefix).exists());
}

#[test]
fn switching_tcx_and_netlink_leaves_one_program_per_hook() {
    let sb = Sandbox::up("kfsw", IngressMode::Tc, "");
    let host = sb.host();
    let veths = container_veths(&status_json(&sb));
    assert_eq!(veths.len(), 3);
    one_program_per_hook(&sb, &veths, false);
    assert!(!has_clsact(&host, UPLINK), "tcx needs no qdisc");

    let out = re_up(&sb, IngressMode::Tc, "tc_attach = \"netlink\"");
    assert!(
        out.contains("detached uplink_ingress_tc on eth0: tcx ingress, link id"),
        "the switch names the tcx link it detached: {out}"
    );
    one_program_per_hook(&sb, &veths, true);
    assert_eq!(status_json(&sb)["tc_attach"], "netlink");
    traffic_is_translated(&sb);

    let out = re_up(&sb, IngressMode::Tc, "tc_attach = \"tcx\"");
    assert!(
        out.contains("detached uplink_ingress_tc on eth0: netlink tc ingress, pref"),
        "the switch back names the filter it removed: {out}"
    );
    assert!(out.contains("removed the clsact qdisc on eth0"), "{out}");
    one_program_per_hook(&sb, &veths, false);
    assert!(
        !has_clsact(&host, UPLINK),
        "the qdisc netfast added is gone"
    );
    assert!(!netfast::bpf::tc_netlink::record_path(&sb.prefix).exists());
    assert_eq!(status_json(&sb)["tc_attach"], "tcx");
    traffic_is_translated(&sb);
}

/// XDP mode keeps a tc ingress program behind XDP: in netlink mode that is a filter
/// too. Switching tc -> XDP -> tc in netlink mode leaves one filter on the uplink's
/// ingress each time (tc mode's own goes when XDP takes over, the fallback when tc
/// mode comes back), and `down` leaves none.
#[test]
fn xdp_mode_has_its_tc_fallback_as_a_netlink_filter() {
    let sb = Sandbox::up_with("kfxd", IngressMode::Tc, "tc_attach = \"netlink\"", "");
    let host = sb.host();
    let netlink = "tc_attach = \"netlink\"";

    let out = re_up(&sb, IngressMode::Xdp, netlink);
    assert!(
        out.contains("netlink tc ingress (fallback for XDP), pref"),
        "the fallback is a filter: {out}"
    );
    assert!(
        out.contains("detached uplink_ingress_tc on eth0: netlink tc ingress, pref"),
        "tc mode's filter goes once XDP runs: {out}"
    );
    let filters = tc_filters(&host, UPLINK, "ingress");
    assert_eq!(filters.len(), 1, "only the fallback: {filters:?}");
    assert_eq!(filters[0].name, "uplink_ingress_tc");
    let json = status_json(&sb);
    assert_eq!(json["programs"][0]["attach"], "xdp");
    assert_eq!(json["programs"][1]["attach"], "tc");
    assert_eq!(json["programs"][1]["fallback"], true);
    assert_eq!(
        json["programs"][1]["tc_priority"],
        u64::from(filters[0].pref)
    );
    // The lab's uplink is a veth, whose driver has native XDP (netdev xdp-features).
    assert_eq!(json["features"]["xdp_native"]["on"], true);
    assert!(
        out.contains("native XDP on"),
        "up reports the native XDP it got: {out}"
    );
    traffic_is_translated(&sb);

    let out = re_up(&sb, IngressMode::Tc, netlink);
    assert!(
        out.contains("detached uplink_ingress_tc on eth0: netlink tc ingress, pref"),
        "the fallback goes: {out}"
    );
    let filters = tc_filters(&host, UPLINK, "ingress");
    assert_eq!(filters.len(), 1, "only tc mode's filter: {filters:?}");
    let json = status_json(&sb);
    assert!(
        json["programs"]
            .as_array()
            .expect("programs")
            .iter()
            .all(|p| p["attach"] != "xdp"),
        "no XDP left: {json}"
    );
    traffic_is_translated(&sb);

    succeeded(&sb.netfast(&["down", "--config", sb.config_str()]), "down");
    assert_eq!(tc_filters(&host, UPLINK, "ingress"), vec![]);
    assert!(!has_clsact(&host, UPLINK));
}

/// netfast removes a clsact qdisc only when it added it and nothing else sits on it:
/// one the operator had (with a filter of theirs) stays with its filter, and one
/// netfast added stays while someone else's filter is on it, which `up` says.
#[test]
fn a_clsact_qdisc_with_someone_elses_filter_stays() {
    let sb = Sandbox::up("kfqd", IngressMode::Tc, "");
    let host = sb.host();
    // Someone else's: a u32 filter ahead of netfast's that matches nothing of the
    // test's traffic (TEST-NET-1), so classification goes on to netfast's filter
    // (a classid, not an action: this kernel has no act_gact).
    let add_theirs = |dev: &str, hook: &str| {
        exec_ok(
            &host,
            &[
                "tc",
                "filter",
                "add",
                "dev",
                dev,
                hook,
                "pref",
                "1",
                "protocol",
                "ip",
                "u32",
                "match",
                "ip",
                "dst",
                "192.0.2.1/32",
                "flowid",
                "1:1",
            ],
        )
    };
    exec_ok(&host, &["tc", "qdisc", "add", "dev", UPLINK, "clsact"]);
    add_theirs(UPLINK, "ingress");
    let u32_on = |dev: &str, hook: &str| {
        exec_ok(&host, &["tc", "filter", "show", "dev", dev, hook]).contains(" u32 ")
    };

    re_up(&sb, IngressMode::Tc, "tc_attach = \"netlink\"");
    let veths = container_veths(&status_json(&sb));
    one_program_per_hook(&sb, &veths, true);
    traffic_is_translated(&sb);
    // netfast added the clsact of each container veth; put a filter of someone else
    // on one of them.
    let veth = &veths[1];
    add_theirs(veth, "egress");

    let out = re_up(&sb, IngressMode::Tc, "tc_attach = \"tcx\"");
    one_program_per_hook(&sb, &veths, false);
    assert!(
        !out.contains(&format!("removed the clsact qdisc on {UPLINK}")),
        "the uplink's qdisc was the operator's: {out}"
    );
    assert!(has_clsact(&host, UPLINK), "the operator's qdisc stays");
    assert!(u32_on(UPLINK, "ingress"), "with the operator's filter");
    assert!(
        out.contains(&format!(
            "kept the clsact qdisc netfast added on {veth}: 1 filter(s) of someone else sit on it"
        )),
        "{out}"
    );
    assert!(has_clsact(&host, veth), "{veth} keeps its qdisc");
    assert!(u32_on(veth, "egress"), "and the filter on it");
    for other in veths.iter().filter(|v| *v != veth) {
        assert!(
            !has_clsact(&host, other),
            "netfast's qdisc on {other} is gone"
        );
    }
    traffic_is_translated(&sb);

    succeeded(&sb.netfast(&["down", "--config", sb.config_str()]), "down");
    assert!(
        u32_on(UPLINK, "ingress"),
        "down leaves the operator's filter"
    );
    assert_eq!(tc_filters(&host, UPLINK, "ingress"), vec![]);
}

/// A container added to a live instance (`attach_container`, a CNI ADD's step)
/// follows the instance's mode: in netlink mode its veth gets a filter (and a clsact
/// qdisc), recorded, shown by `status`; `detach_container` (a CNI DEL's step) removes
/// both, and a second one finds nothing. The veth lives in the lab's host namespace,
/// which goes with the sandbox.
#[test]
fn a_container_added_live_follows_the_netlink_mode() {
    use netfast::bpf::{
        EndpointSpec,
        loader::{attach_container, detach_container},
    };
    let sb = Sandbox::up_with("kfct", IngressMode::Tc, "tc_attach = \"netlink\"", "");
    let host = sb.host();
    let veth = "kfveth9";
    exec_ok(
        &host,
        &[
            "ip", "link", "add", veth, "type", "veth", "peer", "name", "kfveth9p",
        ],
    );
    exec_ok(&host, &["ip", "link", "set", veth, "up"]);
    let addr = std::net::Ipv4Addr::new(172, 16, 0, 109);
    let ifindex = netfast::host::netns::run_in(&host, || nix::net::if_::if_nametoindex(veth))
        .expect("enter the host namespace")
        .expect("the veth's index");
    let ep = EndpointSpec {
        veth: veth.to_owned(),
        addr,
        endpoint: netfast_common::Endpoint {
            ifindex,
            gateway: u32::from_ne_bytes([172, 16, 0, 100]),
            mac: [2, 0, 0, 0, 0, 9],
            host_mac: [2, 0, 0, 0, 0, 1],
        },
    };
    let line = netfast::host::netns::run_in(&host, || attach_container(&sb.prefix, &ep))
        .expect("enter the host namespace")
        .expect("attach_container");
    assert!(
        line.starts_with(&format!(
            "container_ingress_tc on {veth}: netlink tc ingress, pref"
        )),
        "{line}"
    );
    let filters = tc_filters(&host, veth, "ingress");
    assert_eq!(filters.len(), 1, "{filters:?}");
    assert_eq!(filters[0].name, "container_ingress_tc");
    assert_eq!(
        tcx_programs(&host, veth, TcAttachType::Ingress),
        Vec::<String>::new()
    );
    assert!(has_clsact(&host, veth));
    let json = status_json(&sb);
    let row = json["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .find(|p| p["pin"] == format!("link_container_{veth}"))
        .unwrap_or_else(|| panic!("status lists the new container's filter: {json}"));
    assert_eq!(row["attach"], "tc");
    assert_eq!(row["tc_live"], true);

    let removed = netfast::host::netns::run_in(&host, || detach_container(&sb.prefix, veth, addr))
        .expect("enter the host namespace")
        .expect("detach_container");
    assert!(removed, "the filter and the endpoint were there");
    assert_eq!(tc_filters(&host, veth, "ingress"), vec![]);
    assert!(
        !has_clsact(&host, veth),
        "the qdisc netfast added goes with it"
    );
    let again = netfast::host::netns::run_in(&host, || detach_container(&sb.prefix, veth, addr))
        .expect("enter the host namespace")
        .expect("detach_container again");
    assert!(!again, "a second DEL finds nothing");
    // The instance's own filters are untouched.
    one_program_per_hook(&sb, &container_veths(&status_json(&sb)), true);
}

#[test]
fn tc_filter_lines_parse() {
    let out = "filter protocol all pref 49152 bpf chain 0 \n\
               filter protocol all pref 49152 bpf chain 0 handle 0x1 uplink_ingress_tc direct-action not_in_hw id 42 tag 0123456789abcdef jited \n";
    assert_eq!(
        parse_tc_filters(out),
        vec![ShownFilter {
            pref: 49152,
            handle: "0x1".into(),
            name: "uplink_ingress_tc".into(),
        }]
    );
}
