//! Issue 8, section 6, end to end with real sockets: addresses the uplink gets or
//! loses after `up`. A publish without a host address answers on an address added
//! later; new masqueraded flows leave from the uplink's new primary address; and
//! `status` shows both. Each test has its own lab (a unique prefix), removed on drop.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::time::Duration;

use netfast::config::IngressMode;
use support::{Background, Sandbox, exec_ok, succeeded, wait_listening};

const LAN: &str = "10.0.1.26";

/// Accepts one TCP connection on ARGV[1]:ARGV[2], answers "backend:" and what it got,
/// and prints the peer as "ADDR PORT".
const ANSWER_ONE: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(); s.settimeout(20)
c,a=s.accept(); print(a[0],a[1],flush=True)
c.sendall(b'backend:'+c.recv(100)); c.close()
";

/// Connects to ARGV[1]:ARGV[2], sends "hi" and prints what came back.
const ASK: &str = "import socket,sys
c=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=10)
c.sendall(b'hi'); print(c.recv(100).decode(),flush=True)
";

fn peer(stdout: &str) -> Option<(String, u16)> {
    let mut words = stdout.split_whitespace();
    Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
}

fn status_json(sb: &Sandbox) -> serde_json::Value {
    let out = succeeded(
        &sb.netfast(&["status", "--config", sb.config_str(), "--json"]),
        "status --json",
    );
    serde_json::from_str(&out).unwrap_or_else(|err| panic!("status --json: {err}: {out}"))
}

fn status_table(sb: &Sandbox) -> String {
    succeeded(
        &sb.netfast(&["status", "--config", sb.config_str()]),
        "status",
    )
}

/// 8088/tcp is published without a host address. After `up`, the host's uplink gets
/// a second address, 10.0.1.60; the far side connects to 10.0.1.60:8088 and gets
/// the backend's (netns2:80) answer, and `status` lists 10.0.1.60 among the
/// addresses "any" publishes answer on.
fn an_address_added_after_up_answers(ingress: IngressMode) {
    let sb = Sandbox::up("ua", ingress, "");
    exec_ok(
        &sb.host(),
        &["ip", "addr", "add", "10.0.1.60/24", "dev", "eth0"],
    );
    let backend = Background::spawn(
        &sb.container(2),
        &["python3", "-c", ANSWER_ONE, "0.0.0.0", "80"],
    );
    wait_listening(&sb.container(2), "tcp", 80);
    let answer = exec_ok(&sb.lan(), &["python3", "-c", ASK, "10.0.1.60", "8088"]);
    let (seen, err) = backend.wait(Duration::from_secs(10));
    assert_eq!(answer.trim(), "backend:hi", "the far side got: {answer}");
    assert_eq!(
        peer(&seen).map(|(addr, _)| addr),
        Some(LAN.to_owned()),
        "the backend saw: {seen} {err}"
    );
    assert!(
        sb.counter("dnat_new") >= 1,
        "the datapath translated it, not the host"
    );

    let status = status_json(&sb);
    let any = status["addresses"]["any_publish"]
        .as_array()
        .unwrap_or_else(|| panic!("status has addresses.any_publish: {status}"));
    assert!(
        any.iter().any(|a| a == "10.0.1.60") && any.iter().any(|a| a == "10.0.1.48"),
        "{status}"
    );
    let table = status_table(&sb);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("any publish:") && l.contains("10.0.1.60")),
        "{table}"
    );
}

#[test]
fn an_address_added_after_up_answers_any_publishes_tc() {
    an_address_added_after_up_answers(IngressMode::Tc);
}

#[test]
fn an_address_added_after_up_answers_any_publishes_xdp() {
    an_address_added_after_up_answers(IngressMode::Xdp);
}

/// The uplink's primary address changes after `up`: 10.0.1.49 is added and 10.0.1.48
/// deleted (with promote_secondaries, so 10.0.1.49 becomes the primary). A
/// container's new connection then reaches the far side from 10.0.1.49, with
/// replies back, and `status` shows 10.0.1.49 as the address new flows take.
#[test]
fn new_masqueraded_flows_follow_the_uplinks_primary_address() {
    let sb = Sandbox::up("um", IngressMode::Tc, "");
    let host = sb.host();
    exec_ok(
        &host,
        &["sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1"],
    );
    exec_ok(&host, &["ip", "addr", "add", "10.0.1.49/24", "dev", "eth0"]);
    exec_ok(&host, &["ip", "addr", "del", "10.0.1.48/24", "dev", "eth0"]);

    let far = Background::spawn(&sb.lan(), &["python3", "-c", ANSWER_ONE, LAN, "9000"]);
    wait_listening(&sb.lan(), "tcp", 9000);
    let answer = exec_ok(&sb.container(2), &["python3", "-c", ASK, LAN, "9000"]);
    let (seen, err) = far.wait(Duration::from_secs(10));
    assert_eq!(answer.trim(), "backend:hi", "the container got: {answer}");
    assert_eq!(
        peer(&seen).map(|(addr, _)| addr),
        Some("10.0.1.49".to_owned()),
        "the far side's accept() saw: {seen} {err}"
    );

    let status = status_json(&sb);
    assert_eq!(
        status["addresses"]["masquerade_source"], "10.0.1.49",
        "{status}"
    );
    assert_eq!(status["config"]["uplink_addr"], "10.0.1.48", "{status}");
    let table = status_table(&sb);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("new SNAT:") && l.contains("10.0.1.49")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("uplink now:") && l.contains("10.0.1.49/24")),
        "{table}"
    );
}
