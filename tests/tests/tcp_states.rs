//! Issue 8, sections 1 and 2, end to end with real sockets in the seed sandbox: a
//! half-closed connection gets its late answer, a reused tuple starts a fresh flow
//! (through a moved publish and through the masquerade), a blind RST does not end a
//! flow, and a SYN flood does not evict an idle established flow.
//!
//! The far side is the LAN namespace (10.0.1.26), the uplink 10.0.1.48, the
//! containers netns2 (172.16.0.102) and netns3 (172.16.0.103). Sockets are opened by
//! this process inside the namespaces (`netns::run_in`), raw packets are built with
//! `netfast_tests::packet`. Needs root; without it every test fails, saying so.

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
    io::{self, Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use daemon::Daemon;
use netfast::config::IngressMode;
use netfast_common::{
    ct::{DIR_ORIGINAL, KIND_SNAT},
    names::{MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED},
    proto,
};
use netfast_tests::{
    packet::{ETH_LEN, tcp_flags},
    tcp::segment,
};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
};
use serde_json::Value;
use support::{Sandbox, eventually, succeeded};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 48);
const LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 26);
const NETNS2: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 102);
const NETNS3: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 103);
/// The seed's publish: 8088 → netns2:80.
const PUBLISHED: u16 = 8088;
const BACKEND_PORT: u16 = 80;
/// The far side's server port for masqueraded connections.
const LAN_PORT: u16 = 9000;

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// Runs `f` on a thread inside network namespace `ns`; sockets it opens stay there.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    netfast::host::netns::run_in(ns, f).unwrap_or_else(|e| panic!("entering {ns}: {e}"))
}

fn listen(ns: &str, at: SocketAddrV4) -> TcpListener {
    in_ns(ns, || TcpListener::bind(at)).unwrap_or_else(|e| panic!("listening on {at} in {ns}: {e}"))
}

/// A TCP connection from namespace `ns` to `to`, from the local address `from` when
/// given (SO_REUSEADDR, so a port freed by an RST can be bound again at once).
fn connect_from(ns: &str, from: Option<SocketAddrV4>, to: SocketAddrV4) -> io::Result<TcpStream> {
    let fd = in_ns(ns, || {
        socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
    })?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    // connect(2) gives up after SO_SNDTIMEO instead of the SYN retries' two minutes.
    setsockopt(
        &fd,
        sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )?;
    if let Some(from) = from {
        bind(fd.as_raw_fd(), &SockaddrIn::from(from))?;
    }
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

#[track_caller]
fn connect_ok(ns: &str, from: Option<SocketAddrV4>, to: SocketAddrV4) -> TcpStream {
    connect_from(ns, from, to)
        .unwrap_or_else(|e| panic!("connecting from {ns} ({from:?}) to {to}: {e}"))
}

/// Closes with an RST instead of a FIN: SO_LINGER on, with a zero timeout.
fn close_with_rst(stream: TcpStream) {
    setsockopt(
        &stream,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .expect("SO_LINGER 0");
    drop(stream);
}

/// Sends `msg` and reads it back from an echo server.
fn exchange(stream: &mut TcpStream, msg: &str) -> Result<(), String> {
    stream
        .write_all(msg.as_bytes())
        .map_err(|e| format!("sending {msg:?}: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    stream
        .read_exact(&mut back)
        .map_err(|e| format!("reading the echo of {msg:?}: {e}"))?;
    if back == msg.as_bytes() {
        Ok(())
    } else {
        Err(format!(
            "sent {msg:?}, got back {:?}",
            String::from_utf8_lossy(&back)
        ))
    }
}

#[track_caller]
fn exchange_ok(stream: &mut TcpStream, msg: &str) {
    if let Err(e) = exchange(stream, msg) {
        panic!("{e}");
    }
}

/// Reads one line (the server's greeting).
fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("reading a line (so far {line:?}): {e}"),
        }
    }
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

/// Accepts one connection within `limit`.
fn accept_within(listener: &TcpListener, limit: Duration) -> io::Result<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false)?;
                return Ok((stream, peer));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A TCP server in a namespace: for each connection it sends `greeting` (a line) if
/// given, then echoes everything, and records the peer and how the connection ended
/// ("eof", "reset", or the error). Stops accepting on drop.
struct EchoServer {
    stop: Arc<AtomicBool>,
    accepter: Option<JoinHandle<()>>,
    /// (peer, how it ended; "open" until it does).
    seen: Arc<Mutex<Vec<(SocketAddr, String)>>>,
}

impl EchoServer {
    fn start(ns: &str, at: SocketAddrV4, greeting: Option<&str>) -> EchoServer {
        let listener = listen(ns, at);
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let greeting = greeting.map(|g| format!("{g}\n"));
        let accepter = {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, peer)) => {
                            let index = {
                                let mut seen = seen.lock().expect("lock");
                                seen.push((peer, "open".to_owned()));
                                seen.len() - 1
                            };
                            let seen = Arc::clone(&seen);
                            let greeting = greeting.clone();
                            thread::spawn(move || {
                                let how = serve(conn, greeting.as_deref());
                                seen.lock().expect("lock")[index].1 = how;
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("accept on {at}: {e}"),
                    }
                }
            })
        };
        EchoServer {
            stop,
            accepter: Some(accepter),
            seen,
        }
    }

    fn seen(&self) -> Vec<(SocketAddr, String)> {
        self.seen.lock().expect("lock").clone()
    }
}

fn serve(mut conn: TcpStream, greeting: Option<&str>) -> String {
    let _ = conn.set_nonblocking(false);
    // Bounded, so a connection the test forgot cannot keep the thread forever.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    if let Some(g) = greeting
        && let Err(e) = conn.write_all(g.as_bytes())
    {
        return format!("greeting failed: {e}");
    }
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return "eof".to_owned(),
            Ok(n) => {
                if let Err(e) = conn.write_all(&buf[..n]) {
                    return format!("echo failed: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return "reset".to_owned(),
            Err(e) => return format!("{e}"),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}

/// One flow as `ct list --json` shows it: "ORIGINAL as TRANSLATED STATE".
fn describe(flow: &Value) -> String {
    let tuple = |t: &Value| {
        format!(
            "{}:{} -> {}:{}",
            t["src"].as_str().unwrap_or("?"),
            t["sport"],
            t["dst"].as_str().unwrap_or("?"),
            t["dport"]
        )
    };
    format!(
        "{} as {} {}",
        tuple(&flow["original"]),
        tuple(&flow["translated"]),
        flow["tcp_state"].as_str().unwrap_or("-")
    )
}

/// The TCP flows of `kind` ("dnat" or "snat") with `port` on any side, described.
fn tcp_flows(sb: &Sandbox, kind: &str, port: u16) -> Vec<String> {
    let out = sb.netfast(&[
        "ct",
        "list",
        "--instance",
        &sb.prefix,
        "--proto",
        "tcp",
        "--kind",
        kind,
        "--port",
        &port.to_string(),
        "--json",
    ]);
    let flows: Value = serde_json::from_str(&succeeded(&out, "ct list")).expect("ct list JSON");
    flows
        .as_array()
        .expect("ct list --json prints an array")
        .iter()
        .map(describe)
        .collect()
}

fn start_daemon(sb: &Sandbox) -> Daemon {
    let mut run = Daemon::start(sb, &[]);
    run.wait_for("netfast: running instance", Duration::from_secs(30));
    run
}

/// Sends each IPv4 packet (a frame from `netfast_tests::packet` without its Ethernet
/// header) from a raw socket inside `ns`, to the packet's own destination. Returns
/// how many went out; a full queue (ENOBUFS) is waited out.
fn send_raw(ns: &str, frames: &[Vec<u8>]) -> usize {
    in_ns(ns, || {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(
            fd >= 0,
            "raw socket in {ns}: {}",
            io::Error::last_os_error()
        );
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sent = 0;
        for frame in frames {
            let ip = &frame[ETH_LEN..];
            let dst = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
                },
                sin_zero: [0; 8],
            };
            for _ in 0..100 {
                // SAFETY: the buffer and address outlive the call, lengths match.
                let rc = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        ip.as_ptr().cast(),
                        ip.len(),
                        0,
                        std::ptr::from_ref(&dst).cast(),
                        size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                };
                if rc == ip.len() as isize {
                    sent += 1;
                    break;
                }
                let err = io::Error::last_os_error();
                assert_eq!(
                    err.raw_os_error(),
                    Some(libc::ENOBUFS),
                    "raw send in {ns}: {err}"
                );
                thread::sleep(Duration::from_millis(1));
            }
        }
        sent
    })
}

/// The max_entries of a pinned map of the sandbox's instance.
fn capacity(sb: &Sandbox, name: &str) -> u32 {
    let path = netfast::bpf::pins::pin_dir(&sb.prefix).join(name);
    let map = aya::maps::MapData::from_pin(&path)
        .unwrap_or_else(|e| panic!("opening the pinned {}: {e}", path.display()));
    map.info()
        .unwrap_or_else(|e| panic!("BPF_OBJ_GET_INFO_BY_FD of {name}: {e}"))
        .max_entries()
}

// --- half-close -------------------------------------------------------------------

/// How long the server waits before answering a half-closed connection: longer than
/// the old 10 s closing timeout, shorter than CLOSE_WAIT's 60 s.
const ANSWER_AFTER: Duration = Duration::from_secs(25);
const ANSWER: &str = "the answer, 25 s later\n";

/// The server side of a half-close: reads the request to its end (the client's FIN),
/// waits, answers and closes. Returns what it read.
fn answer_late(listener: &TcpListener) -> Result<String, String> {
    let (mut conn, _) =
        accept_within(listener, Duration::from_secs(10)).map_err(|e| format!("accept: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut request = String::new();
    conn.read_to_string(&mut request)
        .map_err(|e| format!("reading the request: {e}"))?;
    thread::sleep(ANSWER_AFTER);
    conn.write_all(ANSWER.as_bytes())
        .map_err(|e| format!("answering: {e}"))?;
    Ok(request)
}

/// The client side: sends "hi\n", shuts down its sending side, and waits for the
/// answer and the server's close.
fn ask_and_half_close(ns: &str, to: SocketAddrV4) -> Result<String, String> {
    let mut conn = connect_from(ns, None, to).map_err(|e| format!("connect: {e}"))?;
    conn.write_all(b"hi\n").map_err(|e| format!("send: {e}"))?;
    conn.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    conn.set_read_timeout(Some(ANSWER_AFTER + Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .map_err(|e| format!("waiting for the answer (got {answer:?} so far): {e}"))?;
    Ok(answer)
}

/// The client sends "hi\n" and shuts down its sending side; the server answers 25 s
/// later. Through the published port and through the masquerade at once, under
/// `netfast run` with nf_conntrack's default timeouts (CLOSE_WAIT 60 s, FIN_WAIT
/// 120 s): the answer arrives both ways, and meanwhile both flows are in CLOSE_WAIT.
#[test]
fn a_half_closed_connection_gets_its_late_answer() {
    let sb = Sandbox::up("hc", IngressMode::Tc, "\n[conntrack]\ngc_interval = 1\n");
    let _run = start_daemon(&sb);
    let dnat_listener = listen(&sb.container(2), sock(NETNS2, BACKEND_PORT));
    let snat_listener = listen(&sb.lan(), sock(LAN, LAN_PORT));
    let (lan, netns3) = (sb.lan(), sb.container(3));

    let (results, states) = thread::scope(|s| {
        let dnat_server = s.spawn(|| answer_late(&dnat_listener));
        let snat_server = s.spawn(|| answer_late(&snat_listener));
        let dnat_client = s.spawn(|| ask_and_half_close(&lan, sock(HOST, PUBLISHED)));
        let snat_client = s.spawn(|| ask_and_half_close(&netns3, sock(LAN, LAN_PORT)));
        // Past the old 10 s closing timeout and several GC passes, before the answer.
        thread::sleep(Duration::from_secs(15));
        let states = (
            tcp_flows(&sb, "dnat", PUBLISHED),
            tcp_flows(&sb, "snat", LAN_PORT),
        );
        let join = |h: thread::ScopedJoinHandle<'_, Result<String, String>>| {
            h.join()
                .unwrap_or_else(|_| Err("the thread panicked".to_owned()))
        };
        (
            [
                ("published port: server read", join(dnat_server)),
                ("published port: client got", join(dnat_client)),
                ("masquerade: server read", join(snat_server)),
                ("masquerade: client got", join(snat_client)),
            ],
            states,
        )
    });

    let expected = ["hi\n", ANSWER, "hi\n", ANSWER];
    let problems: Vec<String> = results
        .iter()
        .zip(expected)
        .filter(|((_, got), want)| got.as_deref() != Ok(*want))
        .map(|((what, got), want)| format!("{what} {got:?}, expected {want:?}"))
        .collect();
    assert!(
        problems.is_empty(),
        "the half-closed connections:\n{}\nct list 15 s in: {states:?}",
        problems.join("\n")
    );
    let (dnat, snat) = states;
    assert!(
        dnat.len() == 1 && dnat[0].ends_with(" CLOSE_WAIT"),
        "the published-port flow 15 s after the half-close: {dnat:?}"
    );
    assert!(
        snat.len() == 1 && snat[0].ends_with(" CLOSE_WAIT"),
        "the masqueraded flow 15 s after the half-close: {snat:?}"
    );
}

// --- tuple reuse ------------------------------------------------------------------

/// The far side connects from port 45000 to the published port and closes with an
/// RST; the publish moves from netns2 to netns3 (`publish del`, `publish add`); the
/// far side connects again from 45000. The new backend answers, and `ct list` shows
/// the new flow to it.
#[test]
fn a_reused_tuple_reaches_the_moved_publish() {
    let sb = Sandbox::up("tr", IngressMode::Tc, "");
    let old = EchoServer::start(&sb.container(2), sock(NETNS2, BACKEND_PORT), Some("netns2"));
    let new = EchoServer::start(&sb.container(3), sock(NETNS3, BACKEND_PORT), Some("netns3"));
    let from = sock(LAN, 45_000);
    let published = sock(HOST, PUBLISHED);
    let reopened = sb.counter("conntrack_reopened");

    let mut first = connect_ok(&sb.lan(), Some(from), published);
    assert_eq!(read_line(&mut first), "netns2", "the first connection");
    exchange_ok(&mut first, "first");
    close_with_rst(first);
    assert!(
        eventually(Duration::from_secs(5), || old
            .seen()
            .iter()
            .any(|(_, how)| how == "reset")),
        "the old backend never saw the RST: {:?}",
        old.seen()
    );
    let closed = tcp_flows(&sb, "dnat", 45_000);
    assert_eq!(
        closed,
        [format!(
            "{from} -> {published} as {from} -> {NETNS2}:{BACKEND_PORT} CLOSE"
        )],
        "the RST closed the flow"
    );

    let inst = sb.prefix.as_str();
    let del = sb.netfast(&[
        "forward",
        "del",
        "--instance",
        inst,
        "8088:172.16.0.102:80/tcp",
    ]);
    succeeded(&del, "publish del");
    let add = sb.netfast(&[
        "forward",
        "add",
        "--instance",
        inst,
        "8088:172.16.0.103:80/tcp",
    ]);
    succeeded(&add, "forward add");

    let mut second = connect_ok(&sb.lan(), Some(from), published);
    let greeting = read_line(&mut second);
    exchange_ok(&mut second, "second");
    let flows = tcp_flows(&sb, "dnat", 45_000);
    let reopened_now = sb.counter("conntrack_reopened");
    drop(second);

    assert_eq!(
        greeting, "netns3",
        "the reused tuple must reach the new backend"
    );
    assert_eq!(
        flows,
        [format!(
            "{from} -> {published} as {from} -> {NETNS3}:{BACKEND_PORT} ESTABLISHED"
        )],
        "ct list shows the new flow, to the new backend"
    );
    assert_eq!(reopened_now, reopened + 1, "conntrack_reopened counts it");
    let peers = |server: &EchoServer| -> Vec<SocketAddr> {
        server.seen().into_iter().map(|(peer, _)| peer).collect()
    };
    assert_eq!(
        peers(&old),
        [SocketAddr::V4(from)],
        "netns2 accepted the first connection only"
    );
    assert_eq!(
        peers(&new),
        [SocketAddr::V4(from)],
        "netns3 accepted the second connection"
    );
}

/// How long a flow stays after an RST in the tests that shorten it (`tcp_close`), and
/// the config that does, with a GC pass every second.
const CLOSE_TIMEOUT: u64 = 3;
const SHORT_CLOSE: &str = "\n[conntrack]\ngc_interval = 1\ntcp_close = 3\n";

/// Long enough for the GC to remove a flow that was in CLOSE (timeout plus two passes).
fn past_the_close_timeout() {
    thread::sleep(Duration::from_secs(CLOSE_TIMEOUT + 3));
}

/// A container connects out from a fixed port, closes with an RST and reconnects
/// from the same port: the new connection is a fresh flow. It idles past the CLOSE
/// timeout under `netfast run`, then exchanges data: it works, and is not reset.
#[test]
fn a_masqueraded_tuple_reused_after_an_rst_outlives_the_close_timeout() {
    let sb = Sandbox::up("mr", IngressMode::Tc, SHORT_CLOSE);
    let _run = start_daemon(&sb);
    let server = EchoServer::start(&sb.lan(), sock(LAN, LAN_PORT), None);
    let from = sock(NETNS2, 45_000);
    let to = sock(LAN, LAN_PORT);
    let reopened = sb.counter("conntrack_reopened");

    let mut first = connect_ok(&sb.container(2), Some(from), to);
    exchange_ok(&mut first, "one");
    close_with_rst(first);
    assert!(
        eventually(Duration::from_secs(2), || server
            .seen()
            .iter()
            .any(|(_, how)| how == "reset")),
        "the far side never saw the RST: {:?}",
        server.seen()
    );
    let mut second = connect_ok(&sb.container(2), Some(from), to);
    exchange_ok(&mut second, "two");
    assert_eq!(
        sb.counter("conntrack_reopened"),
        reopened + 1,
        "the SYN on the closed tuple started a fresh flow"
    );

    past_the_close_timeout();
    let after_idle = exchange(&mut second, "three");
    let flows = tcp_flows(&sb, "snat", LAN_PORT);
    drop(second);
    assert_eq!(
        after_idle,
        Ok(()),
        "the reused tuple must keep working after idling past the CLOSE timeout; ct list: {flows:?}"
    );
    assert!(
        flows.len() == 1
            && flows[0].starts_with(&format!("{from} -> {to} as "))
            && flows[0].ends_with(" ESTABLISHED"),
        "one flow, the new one, ESTABLISHED: {flows:?}"
    );
    let seen = server.seen();
    assert!(
        seen.len() == 2 && seen.iter().all(|(peer, _)| peer.ip() == HOST),
        "the far side saw both connections, masqueraded: {seen:?}"
    );
}

// --- RST validation ---------------------------------------------------------------

/// A masqueraded established flow from netns2 to the far side; the far side sends one
/// RST with a sequence number far outside the window to the masquerade address and
/// port. It is dropped and counted; the flow keeps working, stays ESTABLISHED, and
/// outlives the CLOSE timeout under `netfast run`.
#[test]
fn a_blind_rst_to_the_masquerade_port_does_not_end_the_flow() {
    let sb = Sandbox::up("rv", IngressMode::Tc, SHORT_CLOSE);
    let _run = start_daemon(&sb);
    let _server = EchoServer::start(&sb.lan(), sock(LAN, LAN_PORT), None);
    let mut conn = connect_ok(&sb.container(2), None, sock(LAN, LAN_PORT));
    exchange_ok(&mut conn, "one");
    let local = conn.local_addr().expect("local address");

    // The flow's original half (container side): the RST from the far side is checked
    // against what the container acknowledged.
    let map = netfast::gc::open_conntrack(&sb.prefix, MAP_CONNTRACK).expect("CONNTRACK");
    let (_, original) = map
        .iter()
        .filter_map(Result::ok)
        .find(|(key, state)| {
            key.proto == proto::TCP
                && state.kind == KIND_SNAT
                && state.direction == DIR_ORIGINAL
                && key.src_addr == u32::from_ne_bytes(NETNS2.octets())
                && u16::from_be(key.src_port) == local.port()
        })
        .unwrap_or_else(|| panic!("no assured SNAT flow from {local} in CONNTRACK"));
    let masqueraded = sock(HOST, u16::from_be(original.nat_port));
    let blind_seq = original.tcp_ack.wrapping_add(0x8000_0000);
    let rst = segment(
        sock(LAN, LAN_PORT),
        masqueraded,
        tcp_flags::RST,
        blind_seq,
        0,
        0,
    );

    let dropped = sb.counter("drop_tcp_rst_out_of_window");
    assert_eq!(send_raw(&sb.lan(), &[rst.bytes()]), 1);
    assert!(
        eventually(Duration::from_secs(2), || sb
            .counter("drop_tcp_rst_out_of_window")
            == dropped + 1),
        "drop_tcp_rst_out_of_window must count the blind RST: {} -> {}",
        dropped,
        sb.counter("drop_tcp_rst_out_of_window")
    );
    exchange_ok(&mut conn, "two");
    let expected =
        format!("{local} -> {LAN}:{LAN_PORT} as {masqueraded} -> {LAN}:{LAN_PORT} ESTABLISHED");
    assert_eq!(
        tcp_flows(&sb, "snat", LAN_PORT),
        std::slice::from_ref(&expected)
    );

    past_the_close_timeout();
    let after_idle = exchange(&mut conn, "three");
    assert_eq!(
        after_idle,
        Ok(()),
        "the flow must outlive the CLOSE timeout"
    );
    assert_eq!(
        tcp_flows(&sb, "snat", LAN_PORT),
        [expected],
        "still ESTABLISHED"
    );
    assert_eq!(
        sb.counter("drop_tcp_rst_out_of_window"),
        dropped + 1,
        "exactly one RST was dropped"
    );
}

// --- floods (section 2) -----------------------------------------------------------

/// `count` SYNs from the far side to the published port, from random source ports.
fn syn_flood(sb: &Sandbox, count: u32, seed: u32) -> usize {
    let mut rng = seed | 1;
    let frames: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            // xorshift32
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let port = 1024 + (rng % (65_536 - 1024)) as u16;
            segment(
                sock(LAN, port),
                sock(HOST, PUBLISHED),
                tcp_flags::SYN,
                rng,
                0,
                64_240,
            )
            .bytes()
        })
        .collect();
    send_raw(&sb.lan(), &frames)
}

/// Capacity 1024, one idle established flow from netns2 to the far side; the far side
/// sends 10 x 1024 SYNs to the published port from random source ports, three times.
/// After every flood the idle flow's next exchange succeeds, and its entry is there.
#[test]
fn a_syn_flood_does_not_evict_an_idle_established_flow() {
    const CAPACITY: u32 = 1024;
    let sb = Sandbox::up(
        "fl",
        IngressMode::Tc,
        &format!("\n[conntrack]\ncapacity = {CAPACITY}\n"),
    );
    assert_eq!(
        (
            capacity(&sb, MAP_CONNTRACK),
            capacity(&sb, MAP_CONNTRACK_UNASSURED)
        ),
        (CAPACITY, CAPACITY / 2),
        "CONNTRACK and CONNTRACK_UNASSURED as configured"
    );
    let _server = EchoServer::start(&sb.lan(), sock(LAN, LAN_PORT), None);
    let mut idle = connect_ok(&sb.container(2), None, sock(LAN, LAN_PORT));
    exchange_ok(&mut idle, "before the floods");
    let local = idle.local_addr().expect("local address");
    let ours = |flows: &[String]| -> Vec<String> {
        flows
            .iter()
            .filter(|f| f.starts_with(&format!("{local} -> ")))
            .cloned()
            .collect()
    };
    let before = ours(&tcp_flows(&sb, "snat", LAN_PORT));
    assert!(
        before.len() == 1 && before[0].ends_with(" ESTABLISHED"),
        "{before:?}"
    );

    for run in 1..=3 {
        let opened = sb.counter("dnat_new");
        let sent = syn_flood(&sb, 10 * CAPACITY, 0x9e37_79b9 ^ run);
        // Let the backend's RSTs and the last SYNs pass.
        thread::sleep(Duration::from_millis(500));
        let opened = sb.counter("dnat_new") - opened;
        eprintln!("flood {run}: sent {sent} SYNs, dnat_new +{opened}");
        assert!(
            opened >= u64::from(2 * CAPACITY),
            "flood {run}: the SYNs must open far more flows than the table holds: sent {sent}, dnat_new +{opened}"
        );
        let exchanged = exchange(&mut idle, &format!("after flood {run}"));
        let now = ours(&tcp_flows(&sb, "snat", LAN_PORT));
        assert_eq!(
            exchanged,
            Ok(()),
            "flood {run}: the idle flow's next exchange; its ct entry: {now:?}"
        );
        assert_eq!(now, before, "flood {run}: the idle flow's entry is kept");
    }
}
