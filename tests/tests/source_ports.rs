//! Issue 8, section 3, end to end: source ports as MASQUERADE chooses them, seen from
//! the far side with real sockets. A privileged port and a SIP port leave as they
//! are; a port the host itself uses toward the same remote is never claimed, and the
//! host's connection keeps working.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::time::Duration;

use netfast::config::IngressMode;
use support::{Background, Sandbox, exec_ok, wait_listening};

const LAN: &str = "10.0.1.26";
const HOST: &str = "10.0.1.48";

/// Accepts `n` TCP connections on ARGV[1]:ARGV[2], echoes one message each, and prints
/// each peer as "ADDR PORT".
const TCP_PEERS: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2]))); s.listen(); s.settimeout(20)
cs=[]
for _ in range(int(sys.argv[3])):
    c,a=s.accept(); cs.append(c); print(a[0],a[1],flush=True)
    c.sendall(c.recv(100))
for c in cs:
    d=c.recv(100)
    if d: c.sendall(d)
";

/// Binds ARGV[1]:ARGV[2] (address may be empty), connects to ARGV[3]:ARGV[4], sends
/// and reads back a message, waits for a line on stdin, exchanges a second one, and
/// prints "OK" when both came back intact.
const TCP_CLIENT: &str = "import socket,sys
c=socket.socket(); c.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
c.bind((sys.argv[1],int(sys.argv[2]))); c.settimeout(10)
c.connect((sys.argv[3],int(sys.argv[4])))
c.sendall(b'one'); assert c.recv(100)==b'one'
sys.stdin.readline()
c.sendall(b'two'); assert c.recv(100)==b'two'
print('OK',flush=True)
";

/// Receives one UDP datagram on ARGV[1]:ARGV[2] and prints its sender.
const UDP_PEER: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(10)
s.bind((sys.argv[1],int(sys.argv[2])))
d,a=s.recvfrom(100); print(a[0],a[1],flush=True)
";

fn peers(stdout: &str) -> Vec<(String, u16)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut w = line.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn privileged_and_service_ports_are_kept() {
    let sb = Sandbox::up("sp", IngressMode::Tc, "");
    let nfs = Background::spawn(&sb.lan(), &["python3", "-c", TCP_PEERS, LAN, "2049", "1"]);
    wait_listening(&sb.lan(), "tcp", 2049);
    // The NFS client's own port 800, a privileged one: no stdin, so it runs through.
    exec_ok(
        &sb.container(2),
        &[
            "sh",
            "-c",
            &format!("echo | python3 -c \"{TCP_CLIENT}\" '' 800 {LAN} 2049"),
        ],
    );
    let (out, err) = nfs.wait(Duration::from_secs(10));
    assert_eq!(
        peers(&out),
        [(HOST.to_owned(), 800)],
        "NFS server saw: {out} {err}"
    );

    let sip = Background::spawn(&sb.lan(), &["python3", "-c", UDP_PEER, LAN, "5060"]);
    wait_listening(&sb.lan(), "udp", 5060);
    exec_ok(
        &sb.container(2),
        &[
            "python3",
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('',5060)); s.sendto(b'INVITE',(sys.argv[1],5060))",
            LAN,
        ],
    );
    let (out, err) = sip.wait(Duration::from_secs(10));
    assert_eq!(
        peers(&out),
        [(HOST.to_owned(), 5060)],
        "SIP peer saw: {out} {err}"
    );
}

/// The host holds 10.0.1.48:62000 -> LAN:9000; a container then binds 62000 and
/// connects to the same LAN:9000. It must leave from another port, and both
/// connections must keep exchanging bytes (before the fix, the LAN's replies to the
/// host were steered to the container and the host's connection died).
#[test]
fn a_port_the_host_uses_toward_the_remote_is_not_claimed() {
    let sb = Sandbox::up("sh", IngressMode::Tc, "");
    let server = Background::spawn(&sb.lan(), &["python3", "-c", TCP_PEERS, LAN, "9000", "2"]);
    wait_listening(&sb.lan(), "tcp", 9000);
    let script = |bind: &str| {
        format!("(sleep 2; echo) | python3 -c \"{TCP_CLIENT}\" '{bind}' 62000 {LAN} 9000")
    };
    let host = Background::spawn(&sb.host(), &["sh", "-c", &script(HOST)]);
    std::thread::sleep(Duration::from_millis(500));
    let container = Background::spawn(&sb.container(2), &["sh", "-c", &script("")]);
    let (host_out, host_err) = host.wait(Duration::from_secs(15));
    let (cont_out, cont_err) = container.wait(Duration::from_secs(15));
    let (out, err) = server.wait(Duration::from_secs(15));
    assert_eq!(host_out.trim(), "OK", "the host's connection: {host_err}");
    assert_eq!(
        cont_out.trim(),
        "OK",
        "the container's connection: {cont_err}"
    );
    let seen = peers(&out);
    assert_eq!(seen.len(), 2, "the LAN saw {out} {err}");
    assert_eq!(
        seen[0],
        (HOST.to_owned(), 62000),
        "the host's connection first"
    );
    assert_eq!(seen[1].0, HOST, "the container is masqueraded");
    assert_ne!(
        seen[1].1, 62000,
        "the container must not get the host's port"
    );
    assert!(
        sb.counter("snat_port_host_socket") >= 1,
        "the host socket was found"
    );
}
