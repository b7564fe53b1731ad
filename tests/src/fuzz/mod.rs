//! A fuzz run of frames through every datapath program with BPF_PROG_TEST_RUN
//! (issue 7): CONNTRACK is filled with real flows first, then each program gets
//! random, well-formed and damaged frames built around those flows, and every frame
//! is checked against invariants that hold whatever the frame is ([`check`]).
//!
//! A run is a seed and a frame count: the frames come from the seed alone, so a
//! violation reported as "seed S, frame #I" comes back at #I with the same seed.

pub mod check;
pub mod frame;
pub mod generate;
pub mod rng;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use aya::programs::ProgramError;
use netfast_common::Counter;

use crate::{
    diff::hex_diff,
    fuzz::{
        check::{Checked, describe_moved},
        generate::{Case, Flow, Generator, Leg},
    },
    harness::{
        BACKEND, Datapath, LAN_PEER, Prog, TCP_BACKEND_PORT, TCP_PUBLISHED, TestOutput,
        UDP_BACKEND_PORT, UDP_PUBLISHED, UPLINK_ADDR, Verdict, is_decided_mark,
    },
    packet::{ETH_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV4_LEN},
};

/// The seed when none is given: fixed, so the short run in the test suite checks the
/// same frames every time.
pub const DEFAULT_SEED: u64 = 0x6e66_6675_7a7a_0007;

/// Every program the datapath attaches, in the order the run takes turns.
pub const PROGRAMS: [Prog; 3] = [Prog::IngressTc, Prog::IngressXdp, Prog::EgressTc];

/// How many violations the report shows in full when `NETFAST_FUZZ_SHOW` does not
/// say; the rest are only counted.
const EXAMPLES: usize = 5;

/// The size and seed of a run.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub frames_per_program: u64,
    pub seed: u64,
    /// How many violations to show in full.
    pub show: usize,
}

impl Settings {
    /// `NETFAST_FUZZ_FRAMES` (frames per program) and `NETFAST_FUZZ_SEED` (decimal or
    /// 0x-hex) when set, else `default_frames` and [`DEFAULT_SEED`].
    pub fn from_env(default_frames: u64) -> Result<Self, String> {
        let frames_per_program = match std::env::var("NETFAST_FUZZ_FRAMES") {
            Ok(value) => {
                parse_u64(&value).map_err(|err| format!("NETFAST_FUZZ_FRAMES={value:?}: {err}"))?
            }
            Err(_) => default_frames,
        };
        let seed = match std::env::var("NETFAST_FUZZ_SEED") {
            Ok(value) => {
                parse_u64(&value).map_err(|err| format!("NETFAST_FUZZ_SEED={value:?}: {err}"))?
            }
            Err(_) => DEFAULT_SEED,
        };
        let show = match std::env::var("NETFAST_FUZZ_SHOW") {
            Ok(value) => parse_u64(&value)
                .map_err(|err| format!("NETFAST_FUZZ_SHOW={value:?}: {err}"))?
                as usize,
            Err(_) => EXAMPLES,
        };
        Ok(Self {
            frames_per_program,
            seed,
            show,
        })
    }
}

/// A decimal number, or hex after `0x`, with `_` or `,` allowed between digits.
pub fn parse_u64(text: &str) -> Result<u64, String> {
    let digits: String = text.chars().filter(|c| !matches!(c, '_' | ',')).collect();
    let parsed = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    };
    parsed.map_err(|err| format!("not a decimal or 0x-hex u64: {err}"))
}

/// One frame that broke an invariant, with all it takes to look at it again.
#[derive(Debug)]
pub struct Violation {
    pub index: u64,
    pub prog: Prog,
    pub case: Case,
    pub out: Vec<u8>,
    pub moved: Vec<(Counter, u64)>,
    pub checked: Checked,
}

/// What a run did: frames, decisions per program, violations.
#[derive(Debug)]
pub struct Report {
    pub settings: Settings,
    pub elapsed: Duration,
    /// Frames run, per program (in `PROGRAMS` order).
    pub frames: [u64; 3],
    /// Frames test_run cannot take (under 14 bytes; for tc, IPv4 or IPv6 runts),
    /// which the kernel refused with EINVAL as it must.
    pub refused_short: u64,
    /// The flows put into CONNTRACK before the run, and its entries after it.
    pub seeded_flows: usize,
    pub conntrack_after: usize,
    /// Decision name → frames per program; "(none)" when no single decision moved.
    pub decisions: BTreeMap<&'static str, [u64; 3]>,
    pub kinds: BTreeMap<&'static str, u64>,
    /// Frames that broke at least one invariant, and how often each invariant broke.
    pub violations: u64,
    pub by_invariant: BTreeMap<&'static str, u64>,
    /// Translated frames that the datapath rewrote past the IPv4 total length.
    pub past_total_length: u64,
    pub examples: Vec<Violation>,
}

impl Report {
    fn new(settings: Settings) -> Self {
        Self {
            settings,
            elapsed: Duration::ZERO,
            frames: [0; 3],
            refused_short: 0,
            seeded_flows: 0,
            conntrack_after: 0,
            decisions: BTreeMap::new(),
            kinds: BTreeMap::new(),
            violations: 0,
            by_invariant: BTreeMap::new(),
            past_total_length: 0,
            examples: Vec::new(),
        }
    }

    pub fn total_frames(&self) -> u64 {
        self.frames.iter().sum()
    }

    fn record(&mut self, violation: Violation) {
        self.violations += 1;
        for problem in &violation.checked.problems {
            *self.by_invariant.entry(problem.invariant).or_default() += 1;
        }
        if self.examples.len() < self.settings.show {
            self.examples.push(violation);
        }
    }

    /// The one-line result: "fuzz: N frames per program through P programs, seed S:
    /// V invariant violations".
    pub fn summary(&self) -> String {
        format!(
            "fuzz: {} frames per program through {} programs, seed {:#x}: {} invariant violations \
             ({} frames in {:.1} s; {} of them refused by test_run with EINVAL, as they must be: \
             under 14 bytes, or IPv4/IPv6 runts on tc)",
            self.settings.frames_per_program,
            PROGRAMS.len(),
            self.settings.seed,
            self.violations,
            self.total_frames(),
            self.elapsed.as_secs_f64(),
            self.refused_short,
        )
    }

    /// The per-decision histogram, one column per program, then the frame kinds.
    pub fn histogram(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "{:<32}", "DECISION");
        for prog in PROGRAMS {
            let _ = write!(out, "{:>20}", prog.name());
        }
        out.push('\n');
        let mut rows: Vec<_> = self.decisions.iter().collect();
        rows.sort_by_key(|(name, counts)| (std::cmp::Reverse(counts.iter().sum::<u64>()), **name));
        for (name, counts) in rows {
            let _ = write!(out, "{name:<32}");
            for count in counts {
                let _ = write!(out, "{count:>20}");
            }
            out.push('\n');
        }
        let kinds: Vec<String> = self
            .kinds
            .iter()
            .map(|(kind, n)| format!("{kind}={n}"))
            .collect();
        let _ = writeln!(out, "frame kinds: {}", kinds.join(" "));
        let _ = writeln!(
            out,
            "conntrack: {} flows seeded with real packets, {} entries after the run",
            self.seeded_flows, self.conntrack_after
        );
        let _ = write!(
            out,
            "translated frames rewritten past their IPv4 total length (L4 checksums not \
             checked): {}",
            self.past_total_length
        );
        out
    }

    /// Every violation shown in full, and how often each invariant broke.
    pub fn violations_text(&self) -> String {
        let mut out = String::new();
        for (invariant, n) in &self.by_invariant {
            let _ = writeln!(out, "invariant \"{invariant}\" broken by {n} frames");
        }
        for violation in &self.examples {
            out.push_str(&describe(violation, self.settings));
        }
        if self.violations > self.examples.len() as u64 {
            let _ = writeln!(
                out,
                "... and {} more",
                self.violations - self.examples.len() as u64
            );
        }
        out
    }
}

/// A violation as a reader needs it: where to replay it, what moved, and the bytes.
fn describe(v: &Violation, settings: Settings) -> String {
    let mut out = String::new();
    let decision = v.checked.decision.map_or("(none)", Counter::name);
    let _ = writeln!(
        out,
        "\nframe #{} of seed {:#x} ({} kind), {}: decision {decision}, verdict {:?}, counters moved: {}",
        v.index,
        settings.seed,
        v.case.kind.name(),
        v.prog.name(),
        v.checked.verdict,
        describe_moved(&v.moved),
    );
    for problem in &v.checked.problems {
        let _ = writeln!(out, "  broken: {}: {}", problem.invariant, problem.detail);
    }
    let _ = writeln!(
        out,
        "  input ({} bytes): {}",
        v.case.frame.len(),
        hex(&v.case.frame)
    );
    let _ = writeln!(out, "  output ({} bytes): {}", v.out.len(), hex(&v.out));
    let _ = writeln!(out, "  input as \"expected\", output as \"actual\":");
    out.push_str(&hex_diff(&v.case.frame, &v.out));
    let _ = writeln!(
        out,
        "  replay: NETFAST_FUZZ_SEED={:#x} NETFAST_FUZZ_FRAMES={} cargo test -p netfast-tests \
         --test datapath_fuzz -- --nocapture",
        settings.seed, settings.frames_per_program
    );
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads and configures the datapath, seeds its flows, and runs the frames, taking
/// turns between the programs one burst at a time.
pub fn run(settings: Settings) -> Report {
    let started = Instant::now();
    let mut datapath = Datapath::configured();
    let flows = seed_flows(&mut datapath);
    let mut report = Report::new(settings);
    report.seeded_flows = flows.len();
    let mut generator = Generator::new(settings.seed, flows);
    let mut runner = Runner {
        datapath,
        counters: Vec::new(),
        index: 0,
    };
    runner.counters = runner.datapath.counters();
    let budget = settings.frames_per_program;
    while report.frames.iter().any(|&n| n < budget) {
        for (slot, prog) in PROGRAMS.into_iter().enumerate() {
            let left = budget.saturating_sub(report.frames[slot]);
            if left == 0 {
                continue;
            }
            for case in generator.burst(prog).into_iter().take(left as usize) {
                runner.run(prog, slot, case, &mut report);
            }
        }
    }
    report.conntrack_after = runner.datapath.conntrack().len();
    report.elapsed = started.elapsed();
    report
}

/// The datapath and the counters as they stood after the last frame, so each frame
/// costs one counter read.
struct Runner {
    datapath: Datapath,
    counters: Vec<u64>,
    index: u64,
}

impl Runner {
    fn run(&mut self, prog: Prog, slot: usize, case: Case, report: &mut Report) {
        let index = self.index;
        self.index += 1;
        report.frames[slot] += 1;
        *report.kinds.entry(case.kind.name()).or_default() += 1;
        let result = self.datapath.test_run(prog, &case.frame);
        let broken = |checked| Violation {
            index,
            prog,
            case: case.clone(),
            out: Vec::new(),
            moved: Vec::new(),
            checked,
        };
        if refused_by_test_run(prog, &case.frame) {
            match refused_as_short(result) {
                None => report.refused_short += 1,
                Some(checked) => report.record(broken(checked)),
            }
            return;
        }
        let (return_value, out, xdp_meta) = match result {
            Ok(run) => (run.return_value, run.out, run.xdp_meta),
            Err(err) => return report.record(broken(failed_run(&err))),
        };
        let after = self.datapath.counters();
        let moved = moved(&self.counters, &after);
        self.counters = after;
        let mut checked = check::check(prog, &case.frame, return_value, &out, &moved);
        if let Some(problem) = xdp_mark_problem(prog, &checked, &xdp_meta) {
            checked.problems.push(problem);
        }
        let decision = checked.decision.map_or("(none)", Counter::name);
        report.decisions.entry(decision).or_default()[slot] += 1;
        report.past_total_length += u64::from(checked.past_total_length);
        if !checked.problems.is_empty() {
            report.record(Violation {
                index,
                prog,
                case,
                out,
                moved,
                checked,
            });
        }
    }
}

/// XDP's metadata must carry the decided mark exactly when XDP passed the frame with a
/// decision of its own (not `pass_xdp_csum_partial`), so that the tc program behind it
/// neither decides twice nor skips a frame left to it.
fn xdp_mark_problem(prog: Prog, checked: &Checked, xdp_meta: &[u8]) -> Option<check::Problem> {
    if prog != Prog::IngressXdp {
        return None;
    }
    let decision = checked.decision?;
    let want_mark = !decision.is_drop() && decision != Counter::PassXdpCsumPartial;
    let ok = if want_mark {
        is_decided_mark(xdp_meta)
    } else {
        xdp_meta.is_empty()
    };
    (!ok).then(|| check::Problem {
        invariant: "XDP decided mark",
        detail: format!(
            "decision {} wants {}, metadata was {xdp_meta:02x?}",
            decision.name(),
            if want_mark { "the mark" } else { "none" }
        ),
    })
}

/// Whether BPF_PROG_TEST_RUN refuses `frame` with EINVAL before `prog` runs: every
/// program type when it is shorter than an Ethernet header; tc programs also when
/// its EtherType is IPv4 with less than 20 bytes after the Ethernet header, or IPv6
/// with less than 40 (`bpf_prog_test_run_skb` in net/bpf/test_run.c). Those runts
/// reach the XDP program only.
pub fn refused_by_test_run(prog: Prog, frame: &[u8]) -> bool {
    if frame.len() < ETH_LEN {
        return true;
    }
    let l3 = frame.len() - ETH_LEN;
    prog != Prog::IngressXdp
        && match u16::from_be_bytes([frame[12], frame[13]]) {
            ETHERTYPE_IPV4 => l3 < IPV4_LEN,
            ETHERTYPE_IPV6 => l3 < IPV6_LEN,
            _ => false,
        }
}

/// The fixed IPv6 header's length.
const IPV6_LEN: usize = 40;

/// A frame the kernel does not run must be refused with EINVAL.
fn refused_as_short(result: Result<TestOutput, ProgramError>) -> Option<Checked> {
    if let Err(err) = &result
        && os_error(err) == Some(libc::EINVAL)
    {
        return None;
    }
    let mut checked = Checked::default();
    checked.problems.push(check::Problem {
        invariant: "runt refused by test_run",
        detail: format!(
            "expected EINVAL for a frame test_run cannot take (under 14 bytes, or a tc runt), \
             got {result:?}"
        ),
    });
    Some(checked)
}

fn failed_run(err: &ProgramError) -> Checked {
    let mut checked = Checked::default();
    checked.problems.push(check::Problem {
        invariant: "test_run succeeds",
        detail: format!("BPF_PROG_TEST_RUN failed on a frame it must take: {err:?}"),
    });
    checked
}

fn os_error(err: &ProgramError) -> Option<i32> {
    match err {
        ProgramError::SyscallError(err) => err.io_error.raw_os_error(),
        _ => None,
    }
}

/// The counters that differ between two reads, with by how much.
fn moved(before: &[u64], after: &[u64]) -> Vec<(Counter, u64)> {
    Counter::ALL
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| b != a)
        .map(|(&counter, (b, a))| (counter, a.wrapping_sub(*b)))
        .collect()
}

// --- seeding -------------------------------------------------------------------------

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// Real flows, made by running their packets through the programs as the network
/// would: published-port flows from two clients per protocol, masqueraded TCP, UDP and
/// echo flows from two containers. Masqueraded ports are inside the SNAT range, which
/// the datapath keeps (as MASQUERADE does), so the flows are the same on every run.
pub fn seed_flows(datapath: &mut Datapath) -> Vec<Flow> {
    let published_tcp = sock(UPLINK_ADDR, TCP_PUBLISHED);
    let published_udp = sock(UPLINK_ADDR, UDP_PUBLISHED);
    let backend_tcp = sock(BACKEND, TCP_BACKEND_PORT);
    let backend_udp = sock(BACKEND, UDP_BACKEND_PORT);
    let far_client = Ipv4Addr::new(198, 51, 100, 7);
    let other = Ipv4Addr::new(172, 16, 0, 103);
    let mut flows = Vec::new();
    for client in [sock(LAN_PEER, 40_000), sock(far_client, 51_000)] {
        let (original, out) = (
            Leg::Tcp(client, published_tcp),
            Leg::Tcp(client, backend_tcp),
        );
        flows.push(seed_published(datapath, original, out));
    }
    for client in [sock(LAN_PEER, 33_333), sock(far_client, 40_053)] {
        let (original, out) = (
            Leg::Udp(client, published_udp),
            Leg::Udp(client, backend_udp),
        );
        flows.push(seed_published(datapath, original, out));
    }
    for original in [
        Leg::Tcp(sock(BACKEND, 61_234), sock(LAN_PEER, 9000)),
        Leg::Tcp(
            sock(other, 62_001),
            sock(Ipv4Addr::new(203, 0, 113, 5), 443),
        ),
        Leg::Udp(sock(BACKEND, 62_053), sock(LAN_PEER, 53)),
        Leg::Udp(sock(other, 63_000), sock(Ipv4Addr::new(8, 8, 8, 8), 53)),
        Leg::Echo {
            src: BACKEND,
            dst: LAN_PEER,
            id: 61_500,
            reply: false,
        },
        Leg::Echo {
            src: other,
            dst: Ipv4Addr::new(1, 1, 1, 1),
            id: 64_000,
            reply: false,
        },
    ] {
        flows.push(seed_masquerade(datapath, original));
    }
    flows
}

/// A published-port flow: the client's first packet on ingress (tc), the backend's
/// answer on egress, each translated exactly as expected.
fn seed_published(datapath: &mut Datapath, original: Leg, original_out: Leg) -> Flow {
    let flow = Flow {
        original,
        original_out,
        reply: original_out.reversed(),
        reply_out: original.reversed(),
        masquerade: false,
    };
    datapath
        .run(Prog::IngressTc, &original.packet(false).bytes())
        .assert(
            Verdict::Pass,
            Counter::DnatNew,
            &original_out.packet(false).bytes(),
        );
    datapath
        .run(Prog::EgressTc, &flow.reply.packet(true).bytes())
        .assert_counts(
            Verdict::Pass,
            &first_reply(original, Counter::DnatReply),
            &flow.reply_out.packet(true).bytes(),
        );
    flow
}

/// What a flow's first reply counts: `decision`, and for UDP and ICMP echo the move
/// to `CONNTRACK` (a TCP flow is assured by the handshake's last ACK instead).
fn first_reply(original: Leg, decision: Counter) -> Vec<(Counter, u64)> {
    match original {
        Leg::Tcp(..) => vec![(decision, 1)],
        _ => vec![(decision, 1), (Counter::ConntrackAssured, 1)],
    }
}

/// A masqueraded flow: the container's first packet on egress, the answer on ingress
/// (XDP), each translated exactly as expected.
fn seed_masquerade(datapath: &mut Datapath, original: Leg) -> Flow {
    let first = datapath.run(Prog::EgressTc, &original.packet(false).bytes());
    let original_out = masqueraded(original);
    first.assert(
        Verdict::Pass,
        Counter::SnatNew,
        &original_out.packet(false).bytes(),
    );
    let flow = Flow {
        original,
        original_out,
        reply: original_out.reversed(),
        reply_out: original.reversed(),
        masquerade: true,
    };
    datapath
        .run(Prog::IngressXdp, &flow.reply.packet(true).bytes())
        .assert_counts(
            Verdict::Pass,
            &first_reply(original, Counter::SnatReply),
            &flow.reply_out.packet(true).bytes(),
        );
    flow
}

/// `leg` leaving through the masquerade with its port (or echo identifier) kept.
fn masqueraded(leg: Leg) -> Leg {
    match leg {
        Leg::Tcp(src, dst) => Leg::Tcp(sock(UPLINK_ADDR, src.port()), dst),
        Leg::Udp(src, dst) => Leg::Udp(sock(UPLINK_ADDR, src.port()), dst),
        Leg::Echo { dst, id, reply, .. } => Leg::Echo {
            src: UPLINK_ADDR,
            dst,
            id,
            reply,
        },
    }
}
