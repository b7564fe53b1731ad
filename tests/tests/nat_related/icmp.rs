//! Issue 7, section 1: ICMP errors about translated flows (RFC 5508, what nf_nat does
//! for RELATED packets), inbound to a masqueraded container and outbound from a
//! published port's backend or the host, with real sockets, ping and tracepath.

use std::time::Duration;

use netfast::config::IngressMode;
use serde_json::Value;

use crate::{
    HOST, LAN, NO_PRIVATE_ADDRESS, PUBLISH_UDP,
    kit::{
        Capture, Checks, FAR, FAR_MTU, FarNet, counters, counters_moved, flag, int, print_counters,
        python_json, set_tx_csum, string, verdict,
    },
    scripts,
    support::{Background, Sandbox, exec, text, wait_listening},
};

const ECONNREFUSED: i64 = 111;
const EHOSTUNREACH: i64 = 113;
/// `SO_EE_ORIGIN_ICMP`: the error queue entry came from an ICMP message.
const SO_EE_ORIGIN_ICMP: i64 = 2;

/// Full checksums everywhere: with tx checksum offload off, the senders compute every
/// checksum (as on a real wire), the receivers verify every one the datapath rewrote,
/// and the UDP checksums that ICMP errors quote are full ones that can be verified.
fn full_checksums(sb: &Sandbox) {
    set_tx_csum(&sb.lan(), "eth0", false);
    for n in 2..=3 {
        set_tx_csum(&sb.container(n), &format!("veth{n}-peer"), false);
    }
}

/// What is wrong with an ICMP error, captured on the LAN, that should quote the LAN's
/// datagram to the published `HOST:port` as the LAN sent it; empty when nothing is.
fn quote_problems(probe: &Value, port: u16, icmp_type: i64, icmp_code: i64) -> Vec<String> {
    let Some(icmp) = probe.get("icmp") else {
        return vec!["no ICMP error quoting this datagram reached the LAN".to_string()];
    };
    let mut problems = Vec::new();
    let mut want = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    want(
        int(icmp, "type") == icmp_type && int(icmp, "code") == icmp_code,
        format!("type/code {icmp_type}/{icmp_code} expected"),
    );
    want(
        string(icmp, "outer_src") == HOST && string(icmp, "outer_dst") == LAN,
        format!("outer header {HOST} -> {LAN} expected"),
    );
    want(
        string(icmp, "quoted_dst") == HOST && int(icmp, "quoted_dport") == i64::from(port),
        format!("quoted destination {HOST}:{port} expected"),
    );
    want(
        string(icmp, "quoted_src") == LAN && int(icmp, "quoted_sport") == int(probe, "local"),
        format!("quoted source {LAN}:{} expected", int(probe, "local")),
    );
    want(
        flag(icmp, "icmp_csum_ok"),
        "the ICMP checksum does not verify".to_string(),
    );
    want(
        flag(icmp, "quoted_ip_csum_ok"),
        "the quoted IPv4 header checksum does not verify".to_string(),
    );
    problems
}

/// A check over an ICMP error captured on the LAN (see [`quote_problems`]), also
/// requiring the probe socket's errno when `errno` is given.
fn quoted_check(
    probe: &Result<Value, String>,
    port: u16,
    icmp_type: i64,
    icmp_code: i64,
    errno: Option<i64>,
) -> Result<String, String> {
    let probe = probe.as_ref().map_err(Clone::clone)?;
    let mut problems = quote_problems(probe, port, icmp_type, icmp_code);
    if let Some(errno) = errno
        && int(probe, "errno") != errno
    {
        problems.insert(0, format!("errno {errno} expected"));
    }
    verdict(
        problems.is_empty(),
        format!("{} (saw {probe})", problems.join("; ")),
    )
}

/// The quoted UDP checksum verifies against the quoted (translated back) addresses and
/// ports: it was updated along with them, as nf_nat updates an embedded UDP checksum.
fn quoted_udp_csum_check(probes: &[&Result<Value, String>]) -> Result<String, String> {
    let mut seen = Vec::new();
    let mut ok = true;
    for probe in probes {
        let icmp = probe.as_ref().ok().and_then(|p| p.get("icmp"));
        let verified = icmp.and_then(|i| i.get("quoted_udp_csum_ok")?.as_bool());
        ok &= verified == Some(true);
        seen.push(format!(
            "{}: {}",
            icmp.map_or("no error".to_string(), |i| format!(
                "type {}",
                int(i, "type")
            )),
            match verified {
                Some(true) => "verifies",
                Some(false) => "does not verify",
                None => "not checked (not quoted whole, or zero)",
            }
        ));
    }
    verdict(ok, seen.join(", "))
}

fn icmp_errors(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, PUBLISH_UDP);
    let _far = FarNet::behind(&sb);
    full_checksums(&sb);
    let mut capture = Capture::start(&sb.lan(), "eth0", &format!("{}-icmp", sb.prefix));
    let names = [
        "icmp_error_in",
        "icmp_error_out",
        "pass_icmp_error_untracked",
    ];
    let before = counters(&sb, &names);
    let test = format!("icmp_errors_{}", ingress.as_str());
    let mut checks = Checks::new(&test);
    let c1 = sb.container(2);

    // Inbound: port unreachable about a masqueraded flow.
    checks.check(
        "netns2 -> 10.0.1.26:9999 (nothing listens), connected UDP: ECONNREFUSED within 2 s",
        python_json(&c1, scripts::UDP_PROBE, &[LAN, "9999", "0", "0", "3"]).and_then(|v| {
            let after = v.get("after").and_then(Value::as_f64).unwrap_or(f64::MAX);
            verdict(
                int(&v, "errno") == ECONNREFUSED && after < 2.0,
                v.to_string(),
            )
        }),
    );

    // Outbound: port unreachable from the backend of a published port.
    let refused = python_json(
        &sb.lan(),
        scripts::UDP_PROBE_WITH_CAPTURE,
        &[HOST, "5353", "0", "3"],
    );
    checks.check(
        "10.0.1.26 -> published 10.0.1.48:5353 (netns3:5300, nothing listens): ECONNREFUSED; \
         the port unreachable comes from 10.0.1.48 quoting 10.0.1.48:5353, checksums verify",
        quoted_check(&refused, 5353, 3, 3, Some(ECONNREFUSED)),
    );

    // Outbound: the host's own time exceeded about a published-port datagram.
    let expired = python_json(
        &sb.lan(),
        scripts::UDP_PROBE_WITH_CAPTURE,
        &[HOST, "5353", "1", "3"],
    );
    checks.check(
        "10.0.1.26 -> 10.0.1.48:5353 with TTL 1: time exceeded from 10.0.1.48 quoting \
         10.0.1.48:5353 (not netns3's address), ICMP and quoted IPv4 checksums verify",
        quoted_check(&expired, 5353, 11, 0, None),
    );
    checks.check(
        "the quoted UDP checksums of both errors verify (updated as nf_nat does)",
        quoted_udp_csum_check(&[&refused, &expired]),
    );

    // An error about no flow at all (the host's own closed port) passes untouched.
    let own = python_json(
        &sb.lan(),
        scripts::UDP_PROBE_WITH_CAPTURE,
        &[HOST, "9999", "0", "3"],
    );
    checks.check(
        "10.0.1.26 -> 10.0.1.48:9999 (the host's own closed port, no flow): ECONNREFUSED, \
         the error passes untouched",
        quoted_check(&own, 9999, 3, 3, Some(ECONNREFUSED)),
    );

    // Inbound: time exceeded from the LAN router about a masqueraded flow.
    checks.check(
        "netns2 -> 10.0.2.2 UDP with IP_RECVERR and TTL 2: EHOSTUNREACH, error queue holds \
         time exceeded from 10.0.1.26",
        python_json(&c1, scripts::UDP_PROBE, &[FAR, "33434", "2", "1", "3"]).and_then(|v| {
            let ee = v.get("ee").cloned().unwrap_or(Value::Null);
            verdict(
                int(&v, "errno") == EHOSTUNREACH
                    && int(&ee, "errno") == EHOSTUNREACH
                    && int(&ee, "origin") == SO_EE_ORIGIN_ICMP
                    && int(&ee, "type") == 11
                    && string(&ee, "offender") == LAN,
                v.to_string(),
            )
        }),
    );
    let ping = exec(&c1, &["ping", "-n", "-t", "2", "-c", "1", "-W", "2", FAR]);
    let ping_out = text(&ping.stdout);
    checks.check(
        "ping -t 2 -c 1 10.0.2.2 from netns2: Time to live exceeded from 10.0.1.26",
        verdict(
            ping_out.contains(&format!("From {LAN}")) && ping_out.contains("Time to live exceeded"),
            ping_out.trim().to_string(),
        ),
    );
    let trace = exec(&c1, &["timeout", "30", "tracepath", "-n", "-m", "5", FAR]);
    let trace_out = text(&trace.stdout);
    checks.check(
        "tracepath -n 10.0.2.2 from netns2: hop 10.0.1.26, pmtu 1400, far side reached",
        verdict(
            trace_out.contains(&format!(" {LAN} "))
                && trace_out.contains(&format!("pmtu {FAR_MTU}"))
                && trace_out.contains("reached"),
            trace_out.trim().to_string(),
        ),
    );

    checks.check(
        "counters icmp_error_in, icmp_error_out and pass_icmp_error_untracked moved",
        counters_moved(&sb, &names, &before),
    );
    let private = capture.read(NO_PRIVATE_ADDRESS);
    let errors = capture.read("icmp and (icmp[0] = 3 or icmp[0] = 11)");
    checks.check(
        "the LAN wire carries ICMP errors, none with a 172.16.0.0/24 address, outer or quoted",
        verdict(
            private.is_empty() && !errors.is_empty(),
            format!(
                "{} ICMP errors; with a private address: {private:?} ({})",
                errors.len(),
                capture.summary()
            ),
        ),
    );
    print_counters(&sb, &test);
    checks.finish();
}

fn path_mtu(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, "");
    let far = FarNet::behind(&sb);
    full_checksums(&sb);
    let names = ["icmp_error_in"];
    let before = counters(&sb, &names);
    let test = format!("path_mtu_{}", ingress.as_str());
    let mut checks = Checks::new(&test);
    let c1 = sb.container(2);

    let sink = Background::spawn(
        far.ns(),
        &["python3", "-c", scripts::TCP_SINK, FAR, "9100", "10"],
    );
    wait_listening(far.ns(), "tcp", 9100);
    let upload = python_json(&c1, scripts::TCP_UPLOAD, &[FAR, "9100", "300000", "8"]);
    let answered = upload.as_ref().is_ok_and(|v| v.get("answer").is_some());
    let (seen, _) = if answered {
        sink.wait(Duration::from_secs(5))
    } else {
        sink.finish()
    };
    checks.check(
        "300 kB TCP upload netns2 -> 10.0.2.2 across the 1400-byte link completes byte-exact",
        upload.and_then(|v| {
            let want = format!("300000 {}", string(&v, "sent_sha"));
            verdict(string(&v, "answer") == want, v.to_string())
        }),
    );
    checks.check(
        "the far side saw the uplink address 10.0.1.48",
        verdict(
            seen.split_whitespace().nth(2) == Some(HOST),
            format!("sink printed {:?}", seen.trim()),
        ),
    );
    let route = text(&exec(&c1, &["ip", "route", "get", FAR]).stdout);
    checks.check(
        "netns2's `ip route get 10.0.2.2` shows the learned mtu 1400",
        verdict(
            route.contains(&format!("mtu {FAR_MTU}")),
            route.trim().to_string(),
        ),
    );
    checks.check(
        "counter icmp_error_in moved",
        counters_moved(&sb, &names, &before),
    );
    print_counters(&sb, &test);
    checks.finish();
}

#[test]
fn icmp_errors_with_tc_ingress() {
    icmp_errors(IngressMode::Tc, "it");
}

#[test]
fn icmp_errors_with_xdp_ingress() {
    icmp_errors(IngressMode::Xdp, "ix");
}

#[test]
fn path_mtu_discovery_with_tc_ingress() {
    path_mtu(IngressMode::Tc, "mt");
}

#[test]
fn path_mtu_discovery_with_xdp_ingress() {
    path_mtu(IngressMode::Xdp, "mx");
}
