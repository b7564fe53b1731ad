//! What `netfast run` gives out: a Prometheus scrape (`--metrics ADDR`) over real HTTP,
//! inside the sandbox's host namespace, shows the packets a real connection made, the
//! flow in `CONNTRACK` and the GC's passes; a port in use is refused before anything
//! is made; and a stdout that closes (`netfast run | head -1`) stops the daemon as a
//! signal does, instance taken down, no panic.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod daemon;

use std::{
    net::{Shutdown, TcpListener},
    time::{Duration, Instant},
};

use daemon::{
    Daemon, TCP_ECHO_SERVER, connect_in, echo_exchange, http_get, metric as sample, metrics_addr,
};
use netfast::config::IngressMode;
use nix::sys::signal::Signal;
use support::{Background, Sandbox, text, wait_listening};

#[test]
fn a_scrape_shows_the_connection_the_flow_and_the_gc() {
    let sb = Sandbox::up("mx", IngressMode::Tc, "");
    let _backend = Background::spawn(
        &sb.container(2),
        &["python3", "-c", TCP_ECHO_SERVER, "172.16.0.102", "80"],
    );
    wait_listening(&sb.container(2), "tcp", 80);

    // Port 0: the kernel picks a free one in the sandbox's host namespace.
    let mut run = Daemon::start(&sb, &["--interval", "1", "--metrics", "127.0.0.1:0"]);
    run.wait_for("netfast: running instance", Duration::from_secs(30));
    let at = metrics_addr(&run);
    let instance = format!("netfast_instance=\"{}\"", sb.prefix);
    let dnat_new =
        format!("netfast_packets_total{{{instance},decision=\"dnat_new\",verdict=\"pass\"}}");
    let established = format!(
        "netfast_packets_total{{{instance},decision=\"dnat_established\",verdict=\"pass\"}}"
    );
    let conntrack = format!("netfast_map_entries{{{instance},map=\"CONNTRACK\"}}");
    let gc_runs = format!("netfast_gc_runs_total{{{instance}}}");

    let (status, headers, before) = http_get(&sb.host(), at, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{before}");
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    assert_eq!(before.lines().last(), Some("# EOF"));

    // One published connection from the LAN, held open so its flow stays assured.
    let mut conn = connect_in(&sb.lan(), "10.0.1.48:8088".parse().expect("address"));
    echo_exchange(&mut conn, "metrics", 4096);
    let (_, _, after) = http_get(&sb.host(), at, "/metrics");
    assert_eq!(
        sample(&after, &dnat_new) - sample(&before, &dnat_new),
        1.0,
        "one new flow:\n{after}"
    );
    assert!(sample(&after, &established) > sample(&before, &established));
    assert_eq!(
        sample(&after, &conntrack),
        2.0,
        "the assured flow's two halves"
    );
    // The scrape and `netfast stats` read the same counters.
    let stats = sb.netfast(&["stats", "--instance", &sb.prefix, "--json"]);
    assert!(stats.status.success(), "{}", text(&stats.stderr));
    let stats: serde_json::Value = serde_json::from_str(&text(&stats.stdout)).expect("JSON");
    let (_, _, now) = http_get(&sb.host(), at, "/metrics");
    for name in ["dnat_new", "dnat_established", "dnat_reply"] {
        let shown = stats["counters"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == name))
            .and_then(|r| r["value"].as_f64())
            .unwrap_or_else(|| panic!("{name} in stats --json"));
        let line =
            format!("netfast_packets_total{{{instance},decision=\"{name}\",verdict=\"pass\"}}");
        assert_eq!(sample(&now, &line), shown, "{name}");
    }

    // The first GC pass runs as the daemon starts.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut runs = sample(&now, &gc_runs);
    while runs < 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        runs = sample(&http_get(&sb.host(), at, "/metrics").2, &gc_runs);
    }
    assert!(runs >= 1.0, "the GC's passes are counted");

    let (status, _, body) = http_get(&sb.host(), at, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found", "{body}");

    conn.shutdown(Shutdown::Both).expect("shutdown");
    let exit = run.stop(Signal::SIGTERM, Duration::from_secs(20));
    assert!(exit.success(), "{}", run.output());
}

#[test]
fn a_metrics_port_in_use_is_refused_before_up() {
    let sb = Sandbox::up("my", IngressMode::Tc, "");
    let down = sb.netfast(&["down", "--config", sb.config_str()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    // Hold a port in the sandbox's host namespace.
    let held = netfast::host::netns::run_in(&sb.host(), || TcpListener::bind("127.0.0.1:0"))
        .expect("enter the host namespace")
        .expect("bind a port");
    let port = held.local_addr().expect("local address").port();
    let addr = format!("127.0.0.1:{port}");
    let mut run = Daemon::start(&sb, &["--metrics", &addr]);
    let exit = run.wait_exit(Duration::from_secs(20));
    let out = run.output();
    assert!(!exit.success(), "{out}");
    assert!(
        out.contains(&format!(
            "cannot serve metrics on {addr}: Address already in use"
        )) && out.contains("nothing was brought up"),
        "{out}"
    );
    assert!(
        !netfast::bpf::pins::pin_dir(&sb.prefix).exists(),
        "no instance pinned"
    );
}

#[test]
fn a_closed_stdout_stops_the_daemon_like_a_signal() {
    let sb = Sandbox::up("mz", IngressMode::Tc, "");
    let netfast = support::netfast_bin();
    // bash's PIPESTATUS gives netfast's own exit status, not head's.
    let script = format!(
        "{} --netns {} run --config {} --interval 1 | head -1; exit ${{PIPESTATUS[0]}}",
        netfast.display(),
        sb.host(),
        sb.config_str()
    );
    let out = std::process::Command::new("timeout")
        .args(["60", "bash", "-c", &script])
        .output()
        .expect("run bash");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !netfast::bpf::pins::pin_dir(&sb.prefix).exists(),
        "the daemon took the instance down"
    );
}
