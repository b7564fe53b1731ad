//! Traffic for one trial: small Rust clients and servers (each socket created on a
//! thread inside its namespace), and iperf3. Every generator is bounded by a duration
//! and a count, and sends only to the lane's own addresses.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use netfast::host::netns;

use crate::{BenchError, sys};

const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Client threads and generators run here.
const CLIENT_CPU: usize = 0;
/// Servers and sinks run here when the ends are split.
const SERVER_CPU: usize = 1;

/// Where a TCP trial's two ends run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Placement {
    /// Client on CPU 0, server on CPU 1: each round trip pays cross-CPU wake-ups
    /// (about 40 µs on this machine's 2 vCPUs), which hide sub-µs path differences.
    Split,
    /// Both ends on CPU 0: every packet's softirq runs there too (veth delivers on the
    /// sender's CPU), so a figure is the path's CPU cost without cross-CPU wake-ups.
    OneCpu,
}

impl Placement {
    fn server_cpu(self) -> usize {
        match self {
            Placement::Split => SERVER_CPU,
            Placement::OneCpu => CLIENT_CPU,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// A TCP server in `ns` on `bind`: per connection, read one byte, answer one byte
/// (or echo until EOF for the latency test). Stops when dropped.
struct TcpServer {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl TcpServer {
    fn start(ns: &str, bind: SocketAddrV4, placement: Placement) -> Result<TcpServer, BenchError> {
        let listener = netns::run_in(ns, move || TcpListener::bind(bind))?
            .map_err(io_err(format!("listening on {bind} in {ns}")))?;
        set_timeout(
            listener.as_raw_fd(),
            libc::SO_RCVTIMEO,
            Duration::from_millis(50),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || serve(listener, flag, placement.server_cpu()))
            .map_err(io_err("starting the server thread"))?;
        Ok(TcpServer {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(listener: TcpListener, stop: Arc<AtomicBool>, cpu: usize) {
    sys::pin_to_cpu(cpu);
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = listener.accept() else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(IO_TIMEOUT));
        // Echo until EOF: one byte for the connection-rate client, many for latency.
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    }
}

fn set_timeout(fd: i32, opt: libc::c_int, d: Duration) {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: fd is a valid socket owned by the caller; tv lives across the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// Scenario 1: short connections, one after another.
#[derive(Debug, Clone)]
pub struct ConnResult {
    pub connections: u64,
    pub failures: u64,
    pub elapsed: Duration,
    /// connect() latency of every successful connection, in microseconds.
    pub connect_us: Vec<f64>,
}

pub fn conn_rate(
    server_ns: &str,
    client_ns: &str,
    target: SocketAddrV4,
    backend_port: u16,
    duration: Duration,
    max_connections: u64,
    placement: Placement,
) -> Result<ConnResult, BenchError> {
    let _server = TcpServer::start(
        server_ns,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, backend_port),
        placement,
    )?;
    netns::run_in(client_ns, move || {
        sys::pin_to_cpu(CLIENT_CPU);
        let mut r = ConnResult {
            connections: 0,
            failures: 0,
            elapsed: Duration::ZERO,
            connect_us: Vec::with_capacity(50_000),
        };
        let start = Instant::now();
        while start.elapsed() < duration && r.connections + r.failures < max_connections {
            let t0 = Instant::now();
            let ok = (|| -> std::io::Result<()> {
                let mut s = TcpStream::connect_timeout(&target.into(), IO_TIMEOUT)?;
                let connected = t0.elapsed();
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.write_all(b"x")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                s.shutdown(Shutdown::Write)?;
                r.connect_us.push(connected.as_secs_f64() * 1e6);
                Ok(())
            })();
            match ok {
                Ok(()) => r.connections += 1,
                Err(_) => r.failures += 1,
            }
        }
        r.elapsed = start.elapsed();
        r
    })
    .map_err(BenchError::from)
}

/// Scenario 2: one connection, one byte each way, round trip after round trip.
pub fn request_response(
    server_ns: &str,
    client_ns: &str,
    target: SocketAddrV4,
    backend_port: u16,
    duration: Duration,
    max_round_trips: usize,
    placement: Placement,
) -> Result<Vec<f64>, BenchError> {
    let _server = TcpServer::start(
        server_ns,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, backend_port),
        placement,
    )?;
    netns::run_in(client_ns, move || -> Result<Vec<f64>, BenchError> {
        sys::pin_to_cpu(CLIENT_CPU);
        let err = io_err(format!("request/response with {target}"));
        let mut s = TcpStream::connect_timeout(&target.into(), IO_TIMEOUT).map_err(err)?;
        let err = || io_err(format!("request/response with {target}"));
        s.set_nodelay(true).map_err(err())?;
        s.set_read_timeout(Some(IO_TIMEOUT)).map_err(err())?;
        let mut rtts = Vec::with_capacity(max_round_trips.min(1 << 20));
        let mut b = [0u8; 1];
        // A few warm-up round trips fill caches and the neighbour table.
        for _ in 0..50 {
            s.write_all(b"x").map_err(err())?;
            s.read_exact(&mut b).map_err(err())?;
        }
        let start = Instant::now();
        while start.elapsed() < duration && rtts.len() < max_round_trips {
            let t0 = Instant::now();
            s.write_all(b"x").map_err(err())?;
            s.read_exact(&mut b).map_err(err())?;
            rtts.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        let _ = s.shutdown(Shutdown::Both);
        Ok(rtts)
    })?
}

/// Scenario 3 result: what the generator sent and the sink received.
#[derive(Debug, Clone)]
pub struct UdpResult {
    pub offered_pps: f64,
    pub sent: u64,
    pub received: u64,
    pub elapsed: Duration,
    /// Machine-wide CPU busy ticks during the trial.
    pub cpu: sys::CpuTimes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpFlows {
    /// Every packet from a source address and port not used before in this lane.
    New,
    /// A fixed set of 64 flows, cycled.
    Established,
}

/// Source tuples for new flows: 10.0.1.128–254 × ports 10000–59999, in order; `cursor`
/// carries on across trials of a lane so flows stay new.
pub struct FlowCursor(pub u64);

const SPOOF_HOSTS: u64 = 127;
const SPOOF_PORTS: u64 = 50_000;

fn new_flow_source(n: u64) -> (Ipv4Addr, u16) {
    let n = n % (SPOOF_HOSTS * SPOOF_PORTS);
    let host = 128 + (n / SPOOF_PORTS) as u8;
    let port = 10_000 + (n % SPOOF_PORTS) as u16;
    (Ipv4Addr::new(10, 0, 1, host), port)
}

const UDP_PAYLOAD: usize = 18; // 64-byte frames on the wire
const BATCH: usize = 32;

#[expect(clippy::too_many_arguments, reason = "both ends and the load shape")]
pub fn udp_pps(
    sink_ns: &str,
    client_ns: &str,
    client_addr: Ipv4Addr,
    target: SocketAddrV4,
    sink_port: u16,
    flows: UdpFlows,
    cursor: &mut FlowCursor,
    rate_pps: u64,
    duration: Duration,
) -> Result<UdpResult, BenchError> {
    let sink = netns::run_in(sink_ns, move || {
        UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, sink_port))
    })?
    .map_err(io_err(format!("binding the UDP sink in {sink_ns}")))?;
    let bufsize: libc::c_int = 8 << 20;
    // SAFETY: valid socket fd; the option value lives across the call. Root may exceed
    // rmem_max with SO_RCVBUFFORCE, so the sink's buffer isn't what limits delivery.
    unsafe {
        libc::setsockopt(
            sink.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bufsize as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    set_timeout(
        sink.as_raw_fd(),
        libc::SO_RCVTIMEO,
        Duration::from_millis(20),
    );
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sink_thread = {
        let (received, stop) = (received.clone(), stop.clone());
        thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || udp_sink(sink, received, stop))
            .map_err(io_err("starting the UDP sink"))?
    };

    let total = (rate_pps as f64 * duration.as_secs_f64()).ceil() as u64;
    let first = cursor.0;
    cursor.0 += if flows == UdpFlows::New { total } else { 0 };
    let cpu_before = sys::CpuTimes::read()?;
    let sent = netns::run_in(client_ns, move || {
        udp_generate(client_addr, target, flows, first, rate_pps, total, duration)
    });
    // Let the last packets land before the sink stops counting.
    thread::sleep(Duration::from_millis(100));
    let cpu = sys::CpuTimes::read()?.since(&cpu_before);
    stop.store(true, Ordering::SeqCst);
    let _ = sink_thread.join();
    let (sent, elapsed, warm) = sent??;
    Ok(UdpResult {
        offered_pps: rate_pps as f64,
        sent,
        // The warm-up packets reached the sink too, outside the timed part.
        received: received.load(Ordering::SeqCst).saturating_sub(warm),
        elapsed,
        cpu,
    })
}

fn udp_sink(sock: UdpSocket, received: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    sys::pin_to_cpu(SERVER_CPU);
    const N: usize = 64;
    let mut bufs = [[0u8; 64]; N];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr is valid; each points at its own iovec that outlives it.
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs/iovs/bufs stay alive and unaliased during the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                N as libc::c_uint,
                0,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// An IPv4+UDP datagram with both checksums computed, for a raw IP_HDRINCL socket.
fn udp_datagram(src: Ipv4Addr, sport: u16, dst: SocketAddrV4, seq: u64) -> Vec<u8> {
    let udp_len = (8 + UDP_PAYLOAD) as u16;
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.ip().octets());
    let ip_csum = checksum_fold(sum16(&p));
    p[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    let mut payload = [0u8; UDP_PAYLOAD];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    udp.extend_from_slice(&payload);
    let pseudo =
        sum16(&src.octets()) + sum16(&dst.ip().octets()) + 17 + u32::from(udp_len) + sum16(&udp);
    let c = match checksum_fold(pseudo) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&udp);
    p
}

/// Paced sendmmsg on a raw socket: never more than `total` packets, never longer than
/// `duration` (+ one batch).
fn udp_generate(
    client_addr: Ipv4Addr,
    target: SocketAddrV4,
    flows: UdpFlows,
    first: u64,
    rate_pps: u64,
    total: u64,
    duration: Duration,
) -> Result<(u64, Duration, u64), BenchError> {
    sys::pin_to_cpu(CLIENT_CPU);
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(BenchError::Io {
            what: "opening a raw socket for the UDP generator".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(target.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // Established flows: 64 fixed source ports of the client's own address, warmed
    // up below so each is in conntrack (netfast's or the kernel's) before timing.
    let packet_for = |n: u64| -> Vec<u8> {
        match flows {
            UdpFlows::New => {
                let (src, port) = new_flow_source(first + n);
                udp_datagram(src, port, target, n)
            }
            UdpFlows::Established => udp_datagram(client_addr, 40_000 + (n % 64) as u16, target, n),
        }
    };
    let send_batch = |packets: &mut [Vec<u8>]| -> usize {
        let mut iovs: Vec<libc::iovec> = packets
            .iter_mut()
            .map(|p| libc::iovec {
                iov_base: p.as_mut_ptr().cast(),
                iov_len: p.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: a zeroed mmsghdr is valid; pointers set below outlive the call.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m.msg_hdr.msg_name = (&dst as *const libc::sockaddr_in).cast_mut().cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m
            })
            .collect();
        // SAFETY: msgs point into iovs/packets/dst, all alive for the call.
        let n = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                0,
            )
        };
        usize::try_from(n).unwrap_or(0)
    };
    let mut warm_sent = 0;
    if flows == UdpFlows::Established {
        let mut warm: Vec<Vec<u8>> = (0..64).map(packet_for).collect();
        warm_sent = send_batch(&mut warm) as u64;
        thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    while sent < total {
        let elapsed = start.elapsed();
        if elapsed > duration + Duration::from_millis(200) {
            break;
        }
        let due = ((elapsed.as_secs_f64() * rate_pps as f64) as u64).min(total);
        if due <= sent {
            // Coarse pacing: waking up more often would itself cost CPU per packet.
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        let n = (due - sent).min(BATCH as u64);
        batch.clear();
        batch.extend((sent..sent + n).map(packet_for));
        let done = send_batch(&mut batch);
        if done == 0 {
            // ENOBUFS and the like: the packet is not sent; pace on.
            thread::sleep(Duration::from_micros(20));
        }
        sent += done as u64;
        if sys::interrupted() {
            break;
        }
    }
    Ok((sent, start.elapsed(), warm_sent))
}

/// Scenario 4: `iperf3 -c` in the client ns against a one-shot server in the container.
/// With [`Placement::OneCpu`] both iperf3 processes run on CPU 0 (`-A 0`); split,
/// the scheduler places them.
pub fn iperf3(
    server_ns: &str,
    client_ns: &str,
    target: SocketAddrV4,
    seconds: u32,
    placement: Placement,
) -> Result<f64, BenchError> {
    let port = target.port().to_string();
    let bound = Duration::from_secs(u64::from(seconds) + 20);
    let affinity: &[&str] = match placement {
        Placement::Split => &[],
        Placement::OneCpu => &["-A", "0"],
    };
    let mut server = std::process::Command::new("timeout")
        .arg(bound.as_secs().to_string())
        .args(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1"])
        .args(affinity)
        .arg("-p")
        .arg(crate::lanes::IPERF_PORT.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(io_err("starting iperf3 -s"))?;
    // Wait until the server listens (bounded). A probe connection would use up the
    // one-shot server, so look at the namespace's socket table instead.
    let listen_deadline = Instant::now() + Duration::from_secs(5);
    let port_hex = format!(":{:04X}", crate::lanes::IPERF_PORT);
    loop {
        let port_hex = port_hex.clone();
        let up = netns::run_in(server_ns, move || {
            ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
                .iter()
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .any(|t| {
                    t.lines().any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        // local_address ends in the port, and st 0A is LISTEN.
                        f.len() > 3 && f[1].ends_with(&port_hex) && f[3] == "0A"
                    })
                })
        })?;
        if up {
            break;
        }
        if Instant::now() > listen_deadline {
            let _ = server.kill();
            let _ = server.wait();
            return Err(BenchError::Check {
                what: format!("iperf3 -s did not listen in {server_ns} within 5 s"),
            });
        }
        thread::sleep(Duration::from_millis(30));
    }
    let target_ip = target.ip().to_string();
    let seconds = seconds.to_string();
    let mut args = vec![
        "iperf3", "-c", &target_ip, "-p", &port, "-t", &seconds, "-J",
    ];
    args.extend_from_slice(affinity);
    let out = sys::run_tool(Some(client_ns), &args, bound);
    let _ = server.kill();
    let _ = server.wait();
    let out = out?;
    let json: serde_json::Value = serde_json::from_str(&out).map_err(|e| BenchError::Check {
        what: format!("iperf3 -J printed no JSON: {e}"),
    })?;
    json.pointer("/end/sum_received/bits_per_second")
        .and_then(|v| v.as_f64())
        .ok_or_else(|| BenchError::Check {
            what: "iperf3's JSON has no end.sum_received.bits_per_second".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_datagram_checksums_verify() {
        let p = udp_datagram(
            Ipv4Addr::new(10, 0, 1, 130),
            12345,
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 48), 8089),
            7,
        );
        assert_eq!(checksum_fold(sum16(&p[..20])), 0);
        let udp = &p[20..];
        let pseudo = sum16(&p[12..16]) + sum16(&p[16..20]) + 17 + udp.len() as u32 + sum16(udp);
        assert_eq!(checksum_fold(pseudo), 0);
        assert_eq!(p.len(), 20 + 8 + UDP_PAYLOAD);
    }

    #[test]
    fn new_flow_sources_do_not_repeat_soon() {
        let a = new_flow_source(0);
        let b = new_flow_source(SPOOF_PORTS);
        assert_ne!(a, b);
        assert_eq!(a, (Ipv4Addr::new(10, 0, 1, 128), 10_000));
        assert_eq!(new_flow_source(SPOOF_HOSTS * SPOOF_PORTS), a);
    }
}
