//! Pinned state outlives netfast: TCP connections held open across a second `up` and
//! across a `kill -9` of `netfast run`, byte-exact and without a reset; and pinned
//! maps from another layout (or another capacity) refused before anything changes.

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
    net::{Shutdown, SocketAddrV4},
    path::Path,
    time::Duration,
};

use aya::maps::MapInfo;
use daemon::{Daemon, TCP_ECHO_SERVER, connect_in, echo_exchange};
use netfast::config::IngressMode;
use netfast_common::{
    layout::LAYOUT_VERSION,
    names::{MAP_CONNTRACK, MAP_META, MAP_PUBLISHED_PORTS},
};
use nix::sys::signal::Signal;
use support::{Background, Sandbox, text, wait_listening};

const HOST: &str = "10.0.1.48";
const LAN: &str = "10.0.1.26";
const CHUNK: usize = 64 * 1024;

/// Polls until no TCP connection on local `port` in `ns` is established, for at most
/// 5 s; a FIN that never arrives then shows in the servers' missing lines.
fn wait_all_closed(ns: &str, port: u16) {
    let filter = format!("( sport = :{port} )");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let out = support::exec(ns, &["ss", "-Htn", "state", "established", &filter]);
        if out.status.success() && text(&out.stdout).trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().expect("socket address")
}

/// Parses the echo server's "ADDR PORT BYTES HOW" lines.
fn server_lines(stdout: &str) -> Vec<(String, u16, usize, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                [a, p, n, how] => Some((
                    a.to_string(),
                    p.parse().ok()?,
                    n.parse().ok()?,
                    how.to_string(),
                )),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn tcp_connections_survive_reup_and_daemon_kill9() {
    let sb = Sandbox::up("p", IngressMode::Tc, "");
    // Published port: LAN -> 10.0.1.48:8088 -> netns2:80 (DNAT).
    let backend = Background::spawn(
        &sb.container(2),
        &["python3", "-c", TCP_ECHO_SERVER, "172.16.0.102", "80"],
    );
    // Masquerade: netns3 -> 10.0.1.26:9000, seen from 10.0.1.48 (SNAT).
    let far = Background::spawn(&sb.lan(), &["python3", "-c", TCP_ECHO_SERVER, LAN, "9000"]);
    wait_listening(&sb.container(2), "tcp", 80);
    wait_listening(&sb.lan(), "tcp", 9000);

    let mut dnat = connect_in(&sb.lan(), addr(&format!("{HOST}:8088")));
    let mut snat = connect_in(&sb.container(3), addr(&format!("{LAN}:9000")));
    let (mut dnat_sent, mut snat_sent) = (0, 0);
    let mut both = |step: &str, dnat_sent: &mut usize, snat_sent: &mut usize| {
        *dnat_sent += echo_exchange(&mut dnat, &format!("dnat {step}"), CHUNK);
        *snat_sent += echo_exchange(&mut snat, &format!("snat {step}"), CHUNK);
    };
    both("before", &mut dnat_sent, &mut snat_sent);

    // (a) a second `up` over the pins: programs swapped in place, maps reused.
    let again = sb.netfast(&["up", "--config", sb.config_str()]);
    assert!(
        again.status.success(),
        "second up failed: {}",
        text(&again.stderr)
    );
    both("after re-up", &mut dnat_sent, &mut snat_sent);

    // (b) the daemon: its own `up`, then GC with the default timeouts, then kill -9.
    let mut run = Daemon::start(&sb, &["--interval", "1"]);
    run.wait_for("netfast: running instance", Duration::from_secs(30));
    both("under the daemon", &mut dnat_sent, &mut snat_sent);
    run.wait_for("dnat_established=", Duration::from_secs(10));
    let status = run.stop(Signal::SIGKILL, Duration::from_secs(10));
    assert!(!status.success(), "kill -9 must end the daemon: {status}");
    eprintln!("netfast run printed:\n{}", run.output());
    assert!(
        !run.output().contains("datapath log unavailable"),
        "the daemon must find the attached programs' log buffer:\n{}",
        run.output()
    );
    assert!(
        !run.output().contains("taking instance"),
        "a killed daemon cannot take the instance down:\n{}",
        run.output()
    );
    let pins = netfast::bpf::pins::pin_dir(&sb.prefix);
    assert!(
        pins.join(MAP_CONNTRACK).exists() && pins.join("link_uplink_ingress").exists(),
        "kill -9 must leave the pins"
    );
    both("after kill -9", &mut dnat_sent, &mut snat_sent);
    std::thread::sleep(Duration::from_secs(1));
    both("a second after kill -9", &mut dnat_sent, &mut snat_sent);

    // The datapath without any netfast process: a new connection each way.
    let mut fresh = connect_in(&sb.lan(), addr(&format!("{HOST}:8088")));
    let fresh_sent = echo_exchange(&mut fresh, "new dnat after kill -9", 1000);
    let mut fresh_out = connect_in(&sb.container(2), addr(&format!("{LAN}:9000")));
    let fresh_out_sent = echo_exchange(&mut fresh_out, "new snat after kill -9", 1000);

    for s in [&dnat, &snat, &fresh, &fresh_out] {
        s.shutdown(Shutdown::Write).expect("shutdown");
    }
    // Each server prints a line and closes once it has read EOF: wait until neither
    // holds an established connection (bounded), then collect the lines.
    wait_all_closed(&sb.container(2), 80);
    wait_all_closed(&sb.lan(), 9000);
    let (backend_out, backend_err) = backend.finish();
    let (far_out, far_err) = far.finish();
    // Sorted by size: the two connections of a server end at about the same time.
    let mut backend_lines = server_lines(&backend_out);
    let mut far_lines = server_lines(&far_out);
    backend_lines.sort_by_key(|line| std::cmp::Reverse(line.2));
    far_lines.sort_by_key(|line| std::cmp::Reverse(line.2));
    assert_eq!(
        backend_lines
            .iter()
            .map(|(a, _, n, how)| (a.as_str(), *n, how.as_str()))
            .collect::<Vec<_>>(),
        [(LAN, dnat_sent, "eof"), (LAN, fresh_sent, "eof")],
        "the backend must see the LAN client's two connections end cleanly with every byte \
         (stderr: {backend_err})"
    );
    assert_eq!(
        far_lines
            .iter()
            .map(|(a, _, n, how)| (a.as_str(), *n, how.as_str()))
            .collect::<Vec<_>>(),
        [(HOST, snat_sent, "eof"), (HOST, fresh_out_sent, "eof")],
        "the far side must see both masqueraded connections from {HOST} end cleanly \
         (stderr: {far_err})"
    );
    assert_eq!(dnat_sent, 5 * CHUNK, "five exchanges of {CHUNK} bytes");
}

fn map_id(path: &Path) -> u32 {
    MapInfo::from_pin(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .id()
}

/// `up` over pins of another layout exits 2, names both layouts and the migration, and
/// changes nothing: same maps, same programs, same META.
fn assert_refused(sb: &Sandbox, needles: &[&str]) {
    let pins = netfast::bpf::pins::pin_dir(&sb.prefix);
    let conntrack = map_id(&pins.join(MAP_CONNTRACK));
    let prog = netfast::bpf::loader::ingress_prog_id(&sb.prefix).expect("ingress program");
    let out = sb.netfast(&["up", "--config", sb.config_str()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "up must refuse: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{stderr:?} lacks {n:?}");
    }
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one sentence, one line: {stderr}"
    );
    assert_eq!(
        map_id(&pins.join(MAP_CONNTRACK)),
        conntrack,
        "CONNTRACK was replaced"
    );
    assert_eq!(
        netfast::bpf::loader::ingress_prog_id(&sb.prefix).expect("ingress program"),
        prog,
        "the attached program was replaced"
    );
}

#[test]
fn other_layout_or_capacity_is_refused_and_changes_nothing() {
    let sb = Sandbox::up("l", IngressMode::Tc, "");
    let prefix = sb.prefix.clone();
    let config = sb.config_str().to_owned();
    assert_eq!(
        netfast::bpf::layout::read_meta(&prefix).expect("META"),
        LAYOUT_VERSION
    );

    // Another build's layout number.
    netfast::bpf::layout::write_meta_pinned(&prefix, 999).expect("write META");
    let migrate =
        format!("run `netfast down --config {config}` then `netfast up --config {config}`");
    assert_refused(
        &sb,
        &[
            &format!("/sys/fs/bpf/netfast/{prefix} were written by layout 999"),
            &format!("this build uses layout {LAYOUT_VERSION}"),
            &migrate,
            "established flows are dropped",
        ],
    );
    // The operator commands refuse to read those maps too.
    let ct = sb.netfast(&["ct", "list", "--instance", &prefix]);
    assert_eq!(
        ct.status.code(),
        Some(2),
        "ct list over another layout: {}",
        text(&ct.stderr)
    );
    assert!(
        text(&ct.stderr).contains("were written by layout 999"),
        "ct list names the layout: {}",
        text(&ct.stderr)
    );
    assert_eq!(
        netfast::bpf::layout::read_meta(&prefix).expect("META"),
        999,
        "META untouched"
    );
    netfast::bpf::layout::write_meta_pinned(&prefix, LAYOUT_VERSION).expect("restore META");

    // Another capacity: aya would silently keep the old map, so it is refused too.
    let original = std::fs::read_to_string(&sb.config).expect("read config");
    std::fs::write(
        &sb.config,
        format!("{original}\n[conntrack]\ncapacity = 131072\n"),
    )
    .expect("write config");
    assert_refused(
        &sb,
        &[
            "CONNTRACK holds 262144 entries, [conntrack] capacity asks for 131072",
            "set capacity = 262144 to keep the flows",
            &migrate,
        ],
    );
    // The migration the message advises works: down, then up with the new capacity.
    let down = sb.netfast(&["down", "--config", &config]);
    assert!(down.status.success(), "down: {}", text(&down.stderr));
    let up = sb.netfast(&["up", "--config", &config]);
    assert!(up.status.success(), "up: {}", text(&up.stderr));
    let pins = netfast::bpf::pins::pin_dir(&prefix);
    let info = MapInfo::from_pin(pins.join(MAP_CONNTRACK)).expect("CONNTRACK");
    assert_eq!(info.max_entries(), 131_072);

    // Pins from before layout versioning: no META at all.
    std::fs::remove_file(pins.join(MAP_META)).expect("unpin META");
    assert_refused(
        &sb,
        &[
            "were written by layout 1 (no META map",
            &format!("this build uses layout {LAYOUT_VERSION}"),
            &migrate,
        ],
    );
    assert!(
        !pins.join(MAP_META).exists(),
        "a refused up must not create META"
    );
}

/// An instance a layout-7 build pinned (PUBLISHED_PORTS was FORWARDS then) is refused
/// by `up` and the operator commands, and `down` with this build removes it whole: the
/// old map's pin too, so the directory goes and a fresh `up` works.
#[test]
fn a_layout_7_instance_is_refused_then_taken_down_whole() {
    let sb = Sandbox::up("l7", IngressMode::Tc, "");
    let prefix = sb.prefix.clone();
    let config = sb.config_str().to_owned();
    let pins = netfast::bpf::pins::pin_dir(&prefix);
    std::fs::rename(pins.join(MAP_PUBLISHED_PORTS), pins.join("FORWARDS"))
        .expect("rename the pin as layout 7 named it");
    netfast::bpf::layout::write_meta_pinned(&prefix, 7).expect("write META");

    assert_refused(
        &sb,
        &[
            "were written by layout 7",
            &format!("this build uses layout {LAYOUT_VERSION}"),
        ],
    );
    let list = sb.netfast(&["publish", "list", "--instance", &prefix]);
    assert_eq!(list.status.code(), Some(2), "{}", text(&list.stderr));
    assert!(
        text(&list.stderr).contains("were written by layout 7"),
        "{}",
        text(&list.stderr)
    );

    let down = sb.netfast(&["down", "--config", &config]);
    assert!(down.status.success(), "down: {}", text(&down.stderr));
    assert!(!pins.exists(), "{} is left behind", pins.display());
    let up = sb.netfast(&["up", "--config", &config]);
    assert!(up.status.success(), "up: {}", text(&up.stderr));
    assert!(pins.join(MAP_PUBLISHED_PORTS).exists());
}

#[test]
fn a_second_daemon_for_the_same_instance_is_refused() {
    let sb = Sandbox::up("2", IngressMode::Tc, "");
    let mut first = Daemon::start(&sb, &["--interval", "1"]);
    first.wait_for("netfast: running instance", Duration::from_secs(30));

    // The programs and links attached now: the refused daemon must not swap them.
    let attached = || {
        netfast::bpf::pinned::PinnedInstance::open(&sb.prefix)
            .expect("pins")
            .links()
            .expect("pinned links")
            .iter()
            .map(|l| (l.pin.clone(), l.prog_id, l.link_id))
            .collect::<Vec<_>>()
    };
    let before = attached();
    assert!(!before.is_empty(), "the first daemon attached the programs");

    // Started like the first, so that if it were not refused the test fails, not hangs.
    let mut second = Daemon::start(&sb, &["--interval", "1"]);
    let status = second.wait_exit(Duration::from_secs(30));
    let err = second.output();
    assert_eq!(status.code(), Some(2), "a second run is refused: {err}");
    assert!(
        err.contains("already has a running `netfast run`"),
        "the refusal says why: {err}"
    );
    // It took the lock before anything else: no `up`, so no program was re-attached.
    assert!(!err.contains("is up"), "the refused daemon ran up: {err}");
    assert_eq!(
        attached(),
        before,
        "the refused daemon re-attached the programs (prog or link ids changed)"
    );
    // The refused daemon neither took the instance down nor disturbed the first one.
    assert!(
        netfast::bpf::pins::pin_dir(&sb.prefix)
            .join(MAP_CONNTRACK)
            .exists(),
        "the instance is still up"
    );
    // The first one keeps running: more summary lines ("[     Ns] ...") appear.
    let summaries = |d: &Daemon| d.output().matches("s] ").count();
    let before = summaries(&first);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        summaries(&first) > before,
        "the first daemon stopped: {}",
        first.output()
    );
    let status = first.stop(Signal::SIGTERM, Duration::from_secs(30));
    assert!(
        status.success(),
        "the first daemon exits cleanly: {}",
        first.output()
    );
}
