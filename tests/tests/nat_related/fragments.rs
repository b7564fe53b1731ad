//! Issue 7, section 2: IPv4 fragments translated like their first fragment, both ways:
//! masquerade out of the subnet and its replies, DNAT to a published UDP port and its
//! replies. Payloads are checked with SHA-256 at 3000 and 8000 bytes, with the senders'
//! tx checksum offload on and off; a capture on the LAN wire shows no private source.

use std::ops::RangeInclusive;

use netfast::config::IngressMode;
use serde_json::Value;

use crate::{
    HOST, LAN, NO_PRIVATE_ADDRESS, PUBLISH_UDP,
    kit::{
        Capture, Checks, counters, counters_moved, counters_stayed, int, print_counters,
        python_json, set_tx_csum, string, verdict,
    },
    scripts,
    support::{Background, Sandbox, exec, text, wait_listening},
};

const SNAT_PORTS: RangeInclusive<i64> = 61000..=65535;
/// UDP datagram sizes (payload bytes): two and six fragments on a 1500-byte MTU.
const SIZES: [usize; 2] = [3000, 8000];
/// ICMP echo payload sizes for `ping -s`.
const PING_SIZES: [usize; 2] = [2000, 8000];

/// One datagram and its echo through an echo server: intact both ways (same length and
/// SHA-256), answered from `from`.
fn exchange_check(exchange: &Result<Value, String>, from: (&str, i64)) -> Result<String, String> {
    let v = exchange.as_ref().map_err(Clone::clone)?;
    verdict(
        int(v, "got") == int(v, "sent")
            && string(v, "got_sha") == string(v, "sent_sha")
            && string(v, "src") == from.0
            && int(v, "sport") == from.1,
        v.to_string(),
    )
}

/// The echo server's log shows each datagram of `sent` arriving intact from `peer` (and,
/// when given, a source port in `ports`).
fn server_saw(
    log: &str,
    sent: &[Value],
    peer: &str,
    ports: Option<RangeInclusive<i64>>,
) -> Result<String, String> {
    let mut missing = Vec::new();
    for v in sent {
        let found = log.lines().any(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            w.len() == 4
                && w[0] == int(v, "sent").to_string()
                && w[1] == string(v, "sent_sha")
                && w[2] == peer
                && ports
                    .as_ref()
                    .is_none_or(|r| w[3].parse().is_ok_and(|p: i64| r.contains(&p)))
        });
        if !found {
            missing.push(int(v, "sent").to_string());
        }
    }
    verdict(
        missing.is_empty(),
        if missing.is_empty() {
            format!("{} datagrams intact from {peer}", sent.len())
        } else {
            format!(
                "no intact datagram of {} bytes from {peer}; the server saw:\n{log}",
                missing.join(", ")
            )
        },
    )
}

fn fragments(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, PUBLISH_UDP);
    let mut capture = Capture::start(&sb.lan(), "eth0", &format!("{}-frag", sb.prefix));
    let names = ["fragment_translated"];
    let before = counters(&sb, &names);
    let dropped = ["drop_fragment_from_subnet"];
    let dropped_before = counters(&sb, &dropped);
    let test = format!("fragments_{}", ingress.as_str());
    let mut checks = Checks::new(&test);
    let (c1, c2, lan) = (sb.container(2), sb.container(3), sb.lan());

    let lan_echo = Background::spawn(
        &lan,
        &["python3", "-c", scripts::UDP_ECHO, LAN, "7000", "30"],
    );
    let c2_echo = Background::spawn(
        &c2,
        &["python3", "-c", scripts::UDP_ECHO, "0.0.0.0", "5300", "30"],
    );
    wait_listening(&lan, "udp", 7000);
    wait_listening(&c2, "udp", 5300);

    let (mut to_lan, mut to_published) = (Vec::new(), Vec::new());
    for offload in [true, false] {
        let tx = if offload { "tx on" } else { "tx off" };
        set_tx_csum(&lan, "eth0", offload);
        set_tx_csum(&c1, "veth2-peer", offload);
        set_tx_csum(&c2, "veth3-peer", offload);
        for size in SIZES {
            let n = size.to_string();
            let out = python_json(&c1, scripts::UDP_EXCHANGE, &[LAN, "7000", &n, "2"]);
            checks.check(
                &format!("{tx}: {size} B UDP netns2 -> 10.0.1.26:7000 and its echo back, intact"),
                exchange_check(&out, (LAN, 7000)),
            );
            to_lan.extend(out.ok());
            let out = python_json(&lan, scripts::UDP_EXCHANGE, &[HOST, "5353", &n, "2"]);
            checks.check(
                &format!(
                    "{tx}: {size} B UDP 10.0.1.26 -> published 10.0.1.48:5353 (netns3:5300) and \
                     its echo back from 10.0.1.48:5353, intact"
                ),
                exchange_check(&out, (HOST, 5353)),
            );
            to_published.extend(out.ok());
        }
        for size in PING_SIZES {
            let n = size.to_string();
            let ping = exec(
                &c1,
                &[
                    "ping", "-n", "-q", "-s", &n, "-c", "3", "-i", "0.2", "-W", "2", LAN,
                ],
            );
            let out = text(&ping.stdout);
            checks.check(
                &format!("{tx}: ping -s {size} -c 3 10.0.1.26 from netns2 gets 3 replies"),
                verdict(
                    out.contains("3 packets transmitted, 3 received"),
                    out.lines()
                        .find(|l| l.contains("transmitted"))
                        .unwrap_or(out.trim())
                        .to_string(),
                ),
            );
        }
    }

    let (lan_log, _) = lan_echo.finish();
    let (c2_log, _) = c2_echo.finish();
    checks.check(
        "the LAN echo server saw every datagram from netns2 intact, from 10.0.1.48 and a SNAT port",
        server_saw(&lan_log, &to_lan, HOST, Some(SNAT_PORTS)),
    );
    checks.check(
        "netns3's echo server saw every datagram from the LAN intact, from 10.0.1.26",
        server_saw(&c2_log, &to_published, LAN, None),
    );
    checks.check(
        "counter fragment_translated moved",
        counters_moved(&sb, &names, &before),
    );
    checks.check(
        "counter drop_fragment_from_subnet stayed",
        counters_stayed(&sb, &dropped, &dropped_before),
    );
    print_counters(&sb, &test);
    let private = capture.read(NO_PRIVATE_ADDRESS);
    let later = capture.read("ip[6:2] & 0x1fff != 0");
    checks.check(
        "the LAN wire carries later fragments, none with a 172.16.0.0/24 address",
        verdict(
            private.is_empty() && !later.is_empty(),
            format!(
                "{} later fragments; frames with a private address: {private:?}",
                later.len()
            ),
        ),
    );
    checks.finish();
}

#[test]
fn fragments_with_tc_ingress() {
    fragments(IngressMode::Tc, "ft");
}

#[test]
fn fragments_with_xdp_ingress() {
    fragments(IngressMode::Xdp, "fx");
}
