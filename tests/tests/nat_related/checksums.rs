//! Issue 7, section 3: frames whose L4 checksum holds only the pseudo-header sum (the
//! sender's CHECKSUM_PARTIAL over veth). XDP cannot update such a field as if it were a
//! full checksum; netfast passes them to the tc program behind XDP
//! (`pass_xdp_csum_partial`). The damage only shows where some hop computes the
//! checksum in software, so each combination of offloads is tried, and the receivers'
//! InCsumErrors must not climb.

use netfast::config::IngressMode;

use crate::{
    HOST, PUBLISH_UDP,
    kit::{
        Checks, TempDir, counter, int, print_counters, python_json, set_tx_csum, snmp, string,
        verdict,
    },
    scripts,
    support::{Background, Sandbox, exec, text, wait_listening},
};

/// InCsumErrors of (netns2 TCP, netns3 UDP, LAN TCP, LAN UDP).
fn csum_errors(sb: &Sandbox) -> [u64; 4] {
    [
        snmp(&sb.container(2), "Tcp", "InCsumErrors"),
        snmp(&sb.container(3), "Udp", "InCsumErrors"),
        snmp(&sb.lan(), "Tcp", "InCsumErrors"),
        snmp(&sb.lan(), "Udp", "InCsumErrors"),
    ]
}

fn partial_checksums(ingress: IngressMode, tag: &str) {
    let sb = Sandbox::up(tag, ingress, PUBLISH_UDP);
    let test = format!("partial_checksums_{}", ingress.as_str());
    let mut checks = Checks::new(&test);
    let (c1, c2, lan, host) = (sb.container(2), sb.container(3), sb.lan(), sb.host());

    let www = TempDir::new(&format!("netfast-www-{}", sb.prefix));
    // Larger than one segment, so that data segments, not only the handshake, are checked.
    let body: String = (0..400)
        .map(|i| format!("line {i} of {}\n", sb.prefix))
        .collect();
    std::fs::write(www.path().join("body.txt"), &body).expect("web file");
    let www_str = www.path().to_str().expect("utf-8 temp path").to_string();
    let _http = Background::spawn(
        &c1,
        &[
            "python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            "172.16.0.102",
            "--directory",
            &www_str,
        ],
    );
    let _echo = Background::spawn(
        &c2,
        &["python3", "-c", scripts::UDP_ECHO, "0.0.0.0", "5300", "30"],
    );
    wait_listening(&c1, "tcp", 80);
    wait_listening(&c2, "udp", 5300);

    let partial_before = counter(&sb, "pass_xdp_csum_partial");
    let no_match_before = counter(&sb, "pass_no_match");
    // (senders' tx checksum offload, tx checksum offload on the containers' host-side
    // veths). Senders with offload hand CHECKSUM_PARTIAL frames to the uplink; a
    // host-side veth without it makes the host compute the checksum in software from
    // what the datapath left in the field, and the container verify it.
    for (senders, ports) in [(true, false), (true, true), (false, false), (false, true)] {
        let on_off = |on: bool| if on { "on" } else { "off" };
        let combo = format!(
            "senders' tx {}, host-side veths' tx {}",
            on_off(senders),
            on_off(ports)
        );
        set_tx_csum(&lan, "eth0", senders);
        set_tx_csum(&c1, "veth2-peer", senders);
        set_tx_csum(&c2, "veth3-peer", senders);
        set_tx_csum(&host, "veth2", ports);
        set_tx_csum(&host, "veth3", ports);
        let errors_before = csum_errors(&sb);

        let curl = exec(
            &lan,
            &[
                "curl",
                "-sS",
                "--max-time",
                "3",
                &format!("http://{HOST}:8088/body.txt"),
            ],
        );
        let got = text(&curl.stdout);
        checks.check(
            &format!("{combo}: curl http://10.0.1.48:8088/body.txt returns the body"),
            verdict(
                got == body,
                format!(
                    "{} of {} bytes{}",
                    got.len(),
                    body.len(),
                    if got == body {
                        String::new()
                    } else {
                        format!(", curl: {}", text(&curl.stderr).trim())
                    }
                ),
            ),
        );
        let udp = python_json(&lan, scripts::UDP_EXCHANGE, &[HOST, "5353", "600", "2"]);
        checks.check(
            &format!("{combo}: 600 B UDP to published 10.0.1.48:5353 and its echo, intact"),
            udp.and_then(|v| {
                verdict(
                    int(&v, "got") == 600
                        && string(&v, "got_sha") == string(&v, "sent_sha")
                        && string(&v, "src") == HOST
                        && int(&v, "sport") == 5353,
                    v.to_string(),
                )
            }),
        );
        let errors_after = csum_errors(&sb);
        checks.check(
            &format!(
                "{combo}: InCsumErrors do not climb (netns2 TCP, netns3 UDP, LAN TCP, LAN UDP)"
            ),
            verdict(
                errors_after == errors_before,
                format!("{errors_before:?} -> {errors_after:?}"),
            ),
        );
    }

    let partial = match (partial_before, counter(&sb, "pass_xdp_csum_partial")) {
        (Ok(before), Ok(after)) => match ingress {
            IngressMode::Xdp => verdict(
                after > before,
                format!("{before} -> {after}: XDP left the partial-checksum frames to tc"),
            ),
            IngressMode::Tc => verdict(
                after == before,
                format!("{before} -> {after}: no XDP program, no such decision"),
            ),
        },
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    checks.check(
        match ingress {
            IngressMode::Xdp => "counter pass_xdp_csum_partial moved",
            IngressMode::Tc => "counter pass_xdp_csum_partial stayed",
        },
        partial,
    );
    // Every frame of these exchanges belongs to a flow. In XDP mode each crosses two
    // ingress programs, and must still be decided once: XDP's mark makes the tc
    // program behind it pass a frame XDP translated without counting a miss.
    let once = match (no_match_before, counter(&sb, "pass_no_match")) {
        (Ok(before), Ok(after)) => verdict(
            after == before,
            format!("pass_no_match {before} -> {after}"),
        ),
        (Err(e), _) | (_, Err(e)) => verdict(false, e),
    };
    checks.check(
        "no frame XDP decided is decided again by tc (pass_no_match unchanged)",
        once,
    );
    if ingress == IngressMode::Xdp {
        let marked = counter(&sb, "xdp_mark_failed")
            .map(|n| verdict(n == 0, format!("xdp_mark_failed = {n}")))
            .unwrap_or_else(|e| verdict(false, e));
        checks.check("veth's XDP takes the decided mark", marked);
    }
    print_counters(&sb, &test);
    checks.finish();
}

#[test]
fn partial_checksums_with_tc_ingress() {
    partial_checksums(IngressMode::Tc, "ct");
}

#[test]
fn partial_checksums_with_xdp_ingress() {
    partial_checksums(IngressMode::Xdp, "cx");
}
