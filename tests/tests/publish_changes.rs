//! Issue 8, section 5: when a publish is deleted or pointed at another backend, the
//! UDP flows still pinned to the old backend go, as Docker clears conntrack on
//! publish changes, so a sender with a fixed source port reaches the new backend.
//! TCP flows are kept until they close.
//!
//! Both ways a publish moves are driven with real sockets: `publish del` followed by
//! `publish add`, and a re-`up` whose config points the publish elsewhere (or drops
//! it). The far side (the LAN namespace) sends from source port 40001 every 0.2 s.

#[allow(
    dead_code,
    reason = "shared by several test binaries; each uses a part of it"
)]
mod support;

use std::{
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use netfast::config::IngressMode;
use support::{Background, Sandbox, eventually, exec, succeeded, text, wait_listening};

const HOST: &str = "10.0.1.48";
const NETNS2: &str = "172.16.0.102";
const NETNS3: &str = "172.16.0.103";
/// The fixed source port.
const SENDER_PORT: &str = "40001";

/// Sends `seq N` from a fixed source port to HOST:PORT every 0.2 s for at most 60 s.
/// Before sending N it writes N to FILE (atomically, by rename): once the test reads
/// N there, every datagram numbered above N is sent after that read.
const UDP_SENDER: &str = "import socket,sys,time,os
host,port,sport,f=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),sys.argv[4]
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',sport))
for i in range(1,301):
    open(f+'.tmp','w').write(str(i)); os.rename(f+'.tmp',f)
    s.sendto(b'seq %d'%i,(host,port)); time.sleep(0.2)";

/// Receives datagrams on UDP port PORT and appends `<source port> <seq>` to FILE.
const UDP_RECEIVER: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',int(sys.argv[1])))
out=open(sys.argv[2],'a',buffering=1)
while True:
    d,a=s.recvfrom(100); out.write('%d %s\\n'%(a[1],d.decode().split()[1]))";

/// A TCP server that answers each chunk with `<NAME>:<chunk>`, so the client sees
/// which backend it reached.
const TCP_NAMED_ECHO: &str = "import socket,sys,threading
name=sys.argv[1].encode()
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('0.0.0.0',int(sys.argv[2]))); s.listen()
def serve(c):
    with c:
        while True:
            d=c.recv(100)
            if not d: break
            c.sendall(name+b':'+d)
while True:
    c,_=s.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()";

/// Holds one connection: exchanges `one` and prints the reply, writes MARKER, waits
/// for the file GO, exchanges `two` on the same connection and prints the reply.
const TCP_HOLD: &str = "import socket,sys,os,time
host,port,marker,go=sys.argv[1],int(sys.argv[2]),sys.argv[3],sys.argv[4]
s=socket.create_connection((host,port),timeout=5)
s.sendall(b'one'); print(s.recv(100).decode(),flush=True)
open(marker,'w').close()
deadline=time.time()+30
while not os.path.exists(go):
    if time.time()>deadline: sys.exit('never told to go on')
    time.sleep(0.05)
s.sendall(b'two'); print(s.recv(100).decode(),flush=True)";

/// One new connection; prints the reply to `probe`.
const TCP_PROBE: &str = "import socket,sys
s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)
s.sendall(b'probe'); print(s.recv(100).decode())";

/// Temp files removed on drop.
struct TempFiles(Vec<PathBuf>);

impl TempFiles {
    fn new(prefix: &str, names: &[&str]) -> TempFiles {
        TempFiles(
            names
                .iter()
                .map(|n| std::env::temp_dir().join(format!("netfast-{prefix}-{n}")))
                .collect(),
        )
    }

    fn path(&self, i: usize) -> &str {
        self.0[i].to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(p.with_extension("tmp"));
        }
    }
}

/// The (source port, seq) lines a receiver wrote; a line still being written is skipped.
fn received(path: &str) -> Vec<(u16, u32)> {
    let all = std::fs::read_to_string(path).unwrap_or_default();
    let complete = all.rfind('\n').map_or("", |end| &all[..end]);
    complete
        .lines()
        .map(|l| {
            let (port, seq) = l.split_once(' ').expect("'<port> <seq>'");
            (
                port.parse().expect("source port"),
                seq.parse().expect("seq"),
            )
        })
        .collect()
}

/// Seqs that came from the sender's fixed port.
fn seqs_from(path: &str, sport: u16) -> Vec<u32> {
    received(path)
        .into_iter()
        .filter(|&(p, _)| p == sport)
        .map(|(_, s)| s)
        .collect()
}

/// The sender's latest seq: every datagram numbered above it is sent after this call.
fn sent_so_far(path: &str) -> u32 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// UDP DNAT flows through host port `port`, as (translated destination, packets).
fn udp_flows_through(sb: &Sandbox, port: u16) -> Vec<String> {
    let out = sb.netfast(&[
        "ct",
        "list",
        "--instance",
        &sb.prefix,
        "--proto",
        "udp",
        "--kind",
        "dnat",
        "--port",
        &port.to_string(),
        "--json",
    ]);
    let flows: serde_json::Value =
        serde_json::from_str(&succeeded(&out, "ct list")).expect("ct JSON");
    flows
        .as_array()
        .expect("array")
        .iter()
        .filter(|f| f["original"]["dport"] == port)
        .map(|f| {
            format!(
                "{}:{}",
                f["translated"]["dst"].as_str().unwrap_or("?"),
                f["translated"]["dport"]
            )
        })
        .collect()
}

/// The lab plus: UDP receivers on port 53 of netns2 and netns3, TCP named echo servers
/// on port 81 of both, and the far side's UDP sender from port 40001 to HOST:5353.
struct Traffic {
    files: TempFiles,
    _receivers: [Background; 2],
    _servers: [Background; 2],
    sender: Option<Background>,
    held: Option<Background>,
}

const RX2: usize = 0;
const RX3: usize = 1;
const SENT: usize = 2;
const MARKER: usize = 3;
const GO: usize = 4;
const SENT_B: usize = 5;

impl Traffic {
    fn start(sb: &Sandbox) -> Traffic {
        let files = TempFiles::new(&sb.prefix, &["rx2", "rx3", "sent", "held", "go", "sentb"]);
        let receivers = [(2, RX2), (3, RX3)].map(|(n, f)| {
            Background::spawn(
                &sb.container(n),
                &["python3", "-c", UDP_RECEIVER, "53", files.path(f)],
            )
        });
        let servers = [2, 3].map(|n| {
            Background::spawn(
                &sb.container(n),
                &["python3", "-c", TCP_NAMED_ECHO, &format!("netns{n}"), "81"],
            )
        });
        for n in [2, 3] {
            wait_listening(&sb.container(n), "udp", 53);
            wait_listening(&sb.container(n), "tcp", 81);
        }
        let sender = Background::spawn(
            &sb.lan(),
            &[
                "python3",
                "-c",
                UDP_SENDER,
                HOST,
                "5353",
                SENDER_PORT,
                files.path(SENT),
            ],
        );
        let mut t = Traffic {
            files,
            _receivers: receivers,
            _servers: servers,
            sender: Some(sender),
            held: None,
        };
        assert!(
            eventually(Duration::from_secs(5), || seqs_from(t.path(RX2), 40001)
                .len()
                >= 3),
            "netns2 must receive the far side's datagrams through 5353 before the move: {:?}",
            received(t.path(RX2))
        );
        assert!(seqs_from(t.path(RX3), 40001).is_empty());
        // A TCP connection through 8090 held across the move.
        let held = Background::spawn(
            &sb.lan(),
            &[
                "python3",
                "-c",
                TCP_HOLD,
                HOST,
                "8090",
                t.path(MARKER),
                t.path(GO),
            ],
        );
        assert!(
            eventually(Duration::from_secs(10), || Path::new(t.path(MARKER))
                .exists()),
            "the held TCP connection never exchanged its first bytes"
        );
        t.held = Some(held);
        t
    }

    fn path(&self, i: usize) -> &str {
        self.files.path(i)
    }

    /// After the move: the held TCP connection still reaches netns2, a new one netns3.
    fn check_tcp_kept(&mut self, sb: &Sandbox) {
        std::fs::write(self.path(GO), "").expect("go file");
        let (replies, err) = self
            .held
            .take()
            .expect("held connection")
            .wait(Duration::from_secs(10));
        assert_eq!(
            replies.lines().collect::<Vec<_>>(),
            ["netns2:one", "netns2:two"],
            "a TCP connection held through the move keeps its backend: {err}"
        );
        let probe = exec(&sb.lan(), &["python3", "-c", TCP_PROBE, HOST, "8090"]);
        assert_eq!(
            text(&probe.stdout).trim(),
            "netns3:probe",
            "a new TCP connection reaches the new backend: {}",
            text(&probe.stderr)
        );
    }

    /// The UDP part: after the move, netns3 gets the datagrams within about 1 s and
    /// netns2 gets none sent after the move. `start` and `moved` are the sender's seq
    /// read right before the move began and right after it completed.
    fn check_udp_moved(&mut self, sb: &Sandbox, start: u32, moved: u32) {
        let rx3 = self.path(RX3).to_owned();
        let reached = eventually(Duration::from_millis(1200), || {
            !seqs_from(&rx3, 40001).is_empty()
        });
        // Let a few more datagrams go out before judging.
        thread::sleep(Duration::from_millis(1500));
        let sender = self.sender.take().expect("sender");
        let (_, sender_err) = sender.finish();
        let to2 = seqs_from(self.path(RX2), 40001);
        let to3 = seqs_from(&rx3, 40001);
        assert!(
            reached,
            "netns3 received nothing within 1.2 s of the move (netns2 got {to2:?}); sender: {sender_err}"
        );
        let late: Vec<u32> = to2.iter().copied().filter(|&s| s > moved).collect();
        assert!(
            late.is_empty(),
            "netns2 (the old backend) received datagrams sent after the move: {late:?} (moved at seq {moved})"
        );
        assert!(
            to3.len() >= 5 && to3.iter().all(|&s| s > start),
            "netns3 must get the datagrams sent after the move, and none from before seq {start}: {to3:?}"
        );
        let flows = udp_flows_through(sb, 5353);
        assert_eq!(
            flows,
            [format!("{NETNS3}:53")],
            "one UDP flow through 5353, to the new backend"
        );
    }
}

#[test]
fn forward_del_add_moves_udp_flows_and_keeps_tcp() {
    let sb = Sandbox::up(
        "pd",
        IngressMode::Tc,
        "\n[[publish]]\nspec = \"5353:172.16.0.102:53/udp\"\n\
         \n[[publish]]\nspec = \"8090:172.16.0.102:81/tcp\"\n",
    );
    let inst = sb.prefix.clone();
    let mut t = Traffic::start(&sb);
    assert_eq!(udp_flows_through(&sb, 5353), [format!("{NETNS2}:53")]);

    let forward = |args: &[&str]| {
        let mut argv = vec!["forward"];
        argv.extend_from_slice(&args[..1]);
        argv.extend_from_slice(&["--instance", &inst]);
        argv.extend_from_slice(&args[1..]);
        succeeded(&sb.netfast(&argv), &argv.join(" "))
    };
    let start = sent_so_far(t.path(SENT));
    let del_udp = forward(&["del", "5353:172.16.0.102:53/udp"]);
    let moved = sent_so_far(t.path(SENT));
    let add_udp = forward(&["add", "5353:172.16.0.103:53/udp"]);
    let del_tcp = forward(&["del", "8090:172.16.0.102:81/tcp"]);
    let add_tcp = forward(&["add", "8090:172.16.0.103:81/tcp"]);

    t.check_udp_moved(&sb, start, moved);
    t.check_tcp_kept(&sb);

    assert!(
        del_udp.contains("removed 1 UDP flow to the old backend 172.16.0.102:53"),
        "{del_udp}"
    );
    assert!(
        add_udp.contains("published 5353:172.16.0.103:53/udp"),
        "{add_udp}"
    );
    assert!(
        del_tcp.contains("established flows keep working") && !del_tcp.contains("UDP"),
        "{del_tcp}"
    );
    assert!(
        add_tcp.contains("published 8090:172.16.0.103:81/tcp"),
        "{add_tcp}"
    );
}

#[test]
fn re_up_moves_and_drops_udp_flows_and_keeps_tcp() {
    let publishes = |udp: &str, tcp: &str, dropped: bool| {
        let mut extra = format!(
            "\n[[publish]]\nspec = \"5353:{udp}:53/udp\"\n\
             \n[[publish]]\nspec = \"8090:{tcp}:81/tcp\"\n"
        );
        if !dropped {
            extra += &format!("\n[[publish]]\nspec = \"5354:{NETNS2}:53/udp\"\n");
        }
        extra
    };
    let sb = Sandbox::up("pu", IngressMode::Tc, &publishes(NETNS2, NETNS2, false));
    let mut t = Traffic::start(&sb);
    // A second sender, from 40002 to 5354 (netns2's port 53, told apart by the
    // source port): that publish disappears in the new config.
    let sender_b = Background::spawn(
        &sb.lan(),
        &[
            "python3",
            "-c",
            UDP_SENDER,
            HOST,
            "5354",
            "40002",
            t.path(SENT_B),
        ],
    );
    assert!(
        eventually(Duration::from_secs(5), || seqs_from(t.path(RX2), 40002)
            .len()
            >= 3),
        "netns2 must receive the datagrams through 5354 before the re-up"
    );
    assert_eq!(udp_flows_through(&sb, 5354), [format!("{NETNS2}:53")]);

    // The new config: 5353 and 8090 point at netns3, 5354 is gone.
    let seed = std::fs::read_to_string(&sb.config).expect("config");
    let base = seed
        .split("\n[[publish]]\nspec = \"5353:")
        .next()
        .expect("seed part")
        .to_owned();
    std::fs::write(&sb.config, base + &publishes(NETNS3, NETNS3, true)).expect("new config");
    let start = sent_so_far(t.path(SENT));
    let up = succeeded(
        &sb.netfast(&["up", "--config", sb.config_str()]),
        "re-up with the publish moved",
    );
    let moved = sent_so_far(t.path(SENT));
    let moved_b = sent_so_far(t.path(SENT_B));

    t.check_udp_moved(&sb, start, moved);
    t.check_tcp_kept(&sb);

    let (_, err_b) = sender_b.finish();
    let late: Vec<u32> = seqs_from(t.path(RX2), 40002)
        .into_iter()
        .filter(|&s| s > moved_b)
        .collect();
    assert!(
        late.is_empty(),
        "netns2 received datagrams through the dropped publish 5354 after the re-up: {late:?} (re-up at seq {moved_b}); {err_b}"
    );
    assert_eq!(
        udp_flows_through(&sb, 5354),
        Vec::<String>::new(),
        "no flow through the dropped publish 5354"
    );
    assert!(
        up.contains("removed 1 UDP flow to the old backend 172.16.0.102:53 (5353/udp)")
            && up.contains("removed 1 UDP flow to the old backend 172.16.0.102:53 (5354/udp)"),
        "{up}"
    );
}
