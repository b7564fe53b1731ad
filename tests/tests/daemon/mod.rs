//! `netfast run` as a child process, and TCP streams held open across namespaces.
//! Shared by `persistence` and `conntrack_gc`; everything is killed on drop.

use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpStream},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::support::{Sandbox, netfast_bin};

/// `netfast --netns <host> run --config <sandbox config> ARGS...`, with its stdout and
/// stderr gathered as they come.
pub struct Daemon {
    child: Child,
    output: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

impl Daemon {
    pub fn start(sb: &Sandbox, args: &[&str]) -> Daemon {
        Self::spawn(&sb.host(), &[&["--config", sb.config_str()], args].concat())
    }

    /// `netfast --netns <host_ns> run ARGS...`.
    pub fn spawn(host_ns: &str, args: &[&str]) -> Daemon {
        let mut child = Command::new(netfast_bin())
            .args(["--netns", host_ns, "run"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netfast run");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for mut pipe in [
            Box::new(stdout) as Box<dyn Read + Send>,
            Box::new(stderr) as Box<dyn Read + Send>,
        ] {
            let output = Arc::clone(&output);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                    output.lock().expect("output lock").push_str(&chunk);
                }
            });
        }
        Daemon {
            child,
            output,
            exited: None,
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Waits until the daemon printed `needle`; fails with its output otherwise, or
    /// when it exits first.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "netfast run exited ({status}) before printing {needle:?}:\n{}",
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "netfast run did not print {needle:?} within {limit:?}:\n{}",
            self.output()
        );
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits for the daemon to exit by itself, bounded.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        self.exit_within(limit).unwrap_or_else(|| {
            panic!(
                "netfast run did not exit by itself within {limit:?}:\n{}",
                self.output()
            )
        })
    }

    /// Sends `signal` and waits for the daemon to exit, bounded.
    pub fn stop(&mut self, signal: Signal, limit: Duration) -> ExitStatus {
        nix::sys::signal::kill(self.pid(), signal).expect("signal netfast run");
        self.exit_within(limit).unwrap_or_else(|| {
            panic!(
                "netfast run did not exit within {limit:?} of {signal}:\n{}",
                self.output()
            )
        })
    }

    fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                // Let the reader threads catch the last lines.
                thread::sleep(Duration::from_millis(200));
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address a daemon started with `--metrics` printed: "netfast: metrics on
/// http://ADDR/metrics".
pub fn metrics_addr(run: &Daemon) -> SocketAddrV4 {
    let out = run.output();
    let addr = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("netfast: metrics on http://")?
                .strip_suffix("/metrics")
        })
        .unwrap_or_else(|| panic!("no metrics address printed:\n{out}"));
    addr.parse().expect("an IPv4 socket address")
}

/// `GET PATH` over HTTP/1.1 from namespace `ns`; returns (status line, headers in
/// lower case, body).
pub fn http_get(ns: &str, to: SocketAddrV4, path: &str) -> (String, String, String) {
    let mut stream = connect_in(ns, to);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("read the answer to the end");
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {answer:?}"));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_owned(),
        headers.to_ascii_lowercase(),
        body.to_owned(),
    )
}

/// The value of the sample `line_start` (metric name and labels, as encoded) in the
/// OpenMetrics text `body`.
pub fn metric(body: &str, line_start: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {line_start} in\n{body}"))
        .parse()
        .unwrap_or_else(|e| panic!("{line_start}: {e}"))
}

/// A TCP connection opened from inside network namespace `ns`. The socket stays in
/// that namespace whichever thread uses it afterwards.
pub fn connect_in(ns: &str, to: SocketAddrV4) -> TcpStream {
    let stream = netfast::host::netns::run_in(ns, || {
        TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))
    })
    .unwrap_or_else(|e| panic!("entering {ns}: {e}"))
    .unwrap_or_else(|e| panic!("connecting to {to} from {ns}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    stream
}

/// Sends `len` bytes tagged with `tag` through an echo server and checks that exactly
/// those bytes come back. Chunked, so neither side's buffers fill up. Returns `len`.
pub fn echo_exchange(stream: &mut TcpStream, tag: &str, len: usize) -> usize {
    let payload: Vec<u8> = tag
        .bytes()
        .chain(b"|".iter().copied())
        .cycle()
        .zip(0..len)
        .map(|(b, i)| b ^ (i as u8 & 0x1f))
        .collect();
    for chunk in payload.chunks(8192) {
        stream
            .write_all(chunk)
            .unwrap_or_else(|e| panic!("{tag}: writing {} bytes: {e}", chunk.len()));
        let mut back = vec![0u8; chunk.len()];
        stream
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("{tag}: reading the echo of {} bytes: {e}", chunk.len()));
        assert!(back == chunk, "{tag}: the echo differs from what was sent");
    }
    len
}

/// A TCP echo server for many connections in turn. For each one it prints
/// "ADDR PORT BYTES eof|reset|<error>" when the connection ends, one whole line at a
/// time (print() writes its arguments one by one, so two connections ending together
/// interleaved their lines).
pub const TCP_ECHO_SERVER: &str = "import socket,sys,threading
out=threading.Lock()
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen()
def serve(c,a):
    n=0; how='eof'
    try:
        while True:
            d=c.recv(65536)
            if not d: break
            c.sendall(d); n+=len(d)
    except ConnectionResetError: how='reset'
    except Exception as e: how=type(e).__name__
    with out: sys.stdout.write(f'{a[0]} {a[1]} {n} {how}\\n'); sys.stdout.flush()
    c.close()
while True:
    c,a=s.accept(); threading.Thread(target=serve,args=(c,a),daemon=True).start()";
