//! Scenario 6: per-packet program cost through BPF_PROG_TEST_RUN.
//!
//! The kernel reuses one buffer across `repeat`, so from the second repeat a DNAT hit
//! sees its own rewritten packet and is measured as a miss. Every stateful class is
//! therefore timed with repeat=1, one syscall per packet (the input is copied fresh
//! each time), and each class's counter is checked afterwards to prove that every run
//! took the path it claims. repeat=1 timings carry the kernel's timer overhead, so an
//! empty program (`r0 = verdict; exit`, two instructions loaded with a raw bpf() call
//! from here, so netfast-ebpf stays untouched) is measured the same way and
//! subtracted.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, Xdp},
};
use netfast_common::{
    Backend, Counter, DatapathConfig, PublishKey,
    names::{
        MAP_CONFIG, MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED, MAP_COUNTERS, MAP_PUBLISHED_PORTS,
        PROG_UPLINK_EGRESS_TC, PROG_UPLINK_INGRESS_TC, PROG_UPLINK_INGRESS_XDP, unassured_capacity,
    },
    proto,
};
use serde::Serialize;

use netfast::bpf::{
    maps::conntrack_map_entries,
    prog_load::{load_retrying, syscall_retrying},
};

use crate::{BenchError, stats::Summary};

const UPLINK: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 48);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 26);
const BACKEND: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 102);

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    // The rest of union bpf_attr, zero as the kernel requires.
    _rest: [u64; 16],
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Loads `r0 = ret; exit` as a program of `prog_type`.
fn load_empty(prog_type: u32, ret: i32, name: &str) -> Result<OwnedFd, BenchError> {
    load_raw(
        prog_type,
        &[insn(MOV64_IMM, 0, 0, 0, ret), insn(EXIT, 0, 0, 0, 0)],
        name,
    )
}

// The few eBPF instruction encodings the raw programs here need
// (Documentation/bpf/standardization/instruction-set.rst).
const MOV64_IMM: u8 = 0xb7;
const MOV64_REG: u8 = 0xbf;
const ADD64_IMM: u8 = 0x07;
const OR64_REG: u8 = 0x4f;
const STX_MEM_W: u8 = 0x63;
const ST_MEM_DW: u8 = 0x7a;
const LD_IMM64: u8 = 0x18;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_MAP_UPDATE_ELEM: i32 = 2;
const HELPER_GET_PRANDOM_U32: i32 = 7;
const BPF_NOEXIST: i32 = 1;

/// One instruction: opcode, destination and source registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = (src << 4) | (dst & 0x0f);
    i[2..4].copy_from_slice(&off.to_le_bytes());
    i[4..8].copy_from_slice(&imm.to_le_bytes());
    i
}

/// `r1 = map` (two instruction slots).
fn ld_map_fd(map_fd: RawFd) -> [[u8; 8]; 2] {
    [insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd), [0u8; 8]]
}

/// The map operations a new flow cannot do without, alone: for each of `ops`, a key
/// of the conntrack tuple's size (16 bytes) with 64 random bits, then a lookup (a miss)
/// or a BPF_NOEXIST insert of a zeroed 48-byte entry into that map. Returns the OR of
/// the inserts' results, so 0 proves every insert took place.
fn load_map_floor(
    prog_type: u32,
    ops: &[(RawFd, bool)],
    name: &str,
) -> Result<OwnedFd, BenchError> {
    let mut p: Vec<[u8; 8]> = Vec::new();
    // r6: the OR of the inserts' results. The entry at r10-64..-16, the key at -16.
    p.push(insn(MOV64_IMM, 6, 0, 0, 0));
    for off in (-64..-16).step_by(8) {
        p.push(insn(ST_MEM_DW, 10, 0, off, 0));
    }
    for &(map_fd, insert) in ops {
        p.push(insn(ST_MEM_DW, 10, 0, -8, 0));
        for off in [-16, -12] {
            p.push(insn(CALL, 0, 0, 0, HELPER_GET_PRANDOM_U32));
            p.push(insn(STX_MEM_W, 10, 0, off, 0));
        }
        p.extend(ld_map_fd(map_fd));
        p.push(insn(MOV64_REG, 2, 10, 0, 0));
        p.push(insn(ADD64_IMM, 2, 0, 0, -16));
        if insert {
            p.push(insn(MOV64_REG, 3, 10, 0, 0));
            p.push(insn(ADD64_IMM, 3, 0, 0, -64));
            p.push(insn(MOV64_IMM, 4, 0, 0, BPF_NOEXIST));
            p.push(insn(CALL, 0, 0, 0, HELPER_MAP_UPDATE_ELEM));
            p.push(insn(OR64_REG, 6, 0, 0, 0));
        } else {
            p.push(insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM));
        }
    }
    p.push(insn(MOV64_REG, 0, 6, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    load_raw(prog_type, &p, name)
}

/// Loads the raw instructions `insns` as a program of `prog_type`.
fn load_raw(prog_type: u32, insns: &[[u8; 8]], name: &str) -> Result<OwnedFd, BenchError> {
    let insns: Vec<u8> = insns.concat();
    let license = b"GPL\0";
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: (insns.len() / 8) as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: 0,
        _rest: [0; 16],
    };
    let fd = syscall_retrying(|| {
        // SAFETY: attr and the buffers it points to live across the call; size is exact.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &attr as *const ProgLoadAttr,
                std::mem::size_of::<ProgLoadAttr>(),
            )
        };
        if fd < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(fd)
        }
    })
    .map_err(|e| BenchError::Bpf {
        what: format!("loading the raw program {name}"),
        detail: e.to_string(),
    })?;
    // SAFETY: the kernel just handed us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// One BPF_PROG_TEST_RUN; returns (return value, duration ns per repeat, output length).
fn test_run(
    fd: RawFd,
    frame: &[u8],
    out: &mut [u8],
    repeat: u32,
) -> Result<(u32, u32, usize), BenchError> {
    test_run_ctx(fd, frame, out, repeat, None)
}

/// `test_run` with a context (`struct __sk_buff` or `struct xdp_md`, or its head).
fn test_run_ctx(
    fd: RawFd,
    frame: &[u8],
    out: &mut [u8],
    repeat: u32,
    ctx: Option<&[u8]>,
) -> Result<(u32, u32, usize), BenchError> {
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ctx_size_in: ctx.map_or(0, |c| c.len() as u32),
        ctx_in: ctx.map_or(0, |c| c.as_ptr() as u64),
        ..Default::default()
    };
    // SAFETY: attr and both buffers live across the call; sizes match the buffers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(BenchError::Bpf {
            what: "BPF_PROG_TEST_RUN".into(),
            detail: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok((
        attr.retval,
        attr.duration,
        (attr.data_size_out as usize).min(out.len()),
    ))
}

fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An ICMP fragmentation-needed (next-hop MTU 1400) from `src` to `dst`, quoting the
/// IPv4 packet `quoted` whole.
fn frag_needed(src: Ipv4Addr, dst: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend_from_slice(quoted);
    let c = fold(sum16(&icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = u16::try_from(20 + icmp.len()).unwrap_or(u16::MAX);
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = vec![0x45, 0xc0, 0, 0, 0, 1, 0, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// `frame` (a `tcp_frame`) as one fragment of datagram `id`: the first (More
/// Fragments, offset 0, the TCP header) or a later one at `offset` (in 8-byte units,
/// with 64 bytes of payload instead of the header).
fn fragment_of(frame: &[u8], id: u16, first: bool, offset: u16) -> Vec<u8> {
    let mut f = frame[..34].to_vec();
    if !first {
        f.extend_from_slice(&[0x5a; 64]);
    } else {
        f.extend_from_slice(&frame[34..]);
    }
    let total = u16::try_from(f.len() - 14).unwrap_or(u16::MAX);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[18..20].copy_from_slice(&id.to_be_bytes());
    let flags = if first { 0x2000 } else { offset & 0x1fff };
    f[20..22].copy_from_slice(&flags.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = fold(sum16(&f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// Whether a `tcp_frame`'s TCP checksum equals its pseudo-header sum alone, the value a
/// CHECKSUM_PARTIAL sender leaves there.
fn checksum_looks_partial(frame: &[u8]) -> bool {
    let pseudo = !fold(sum16(&frame[26..34]) + 6 + 20);
    frame[50..52] == pseudo.to_be_bytes()
}

/// Ethernet + IPv4 + TCP (20-byte header, no payload), checksums computed.
pub fn tcp_frame(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    let c = fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let c = fold(sum16(&src.ip().octets()) + sum16(&dst.ip().octets()) + 6 + 20 + sum16(&tcp));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYN_ACK: u8 = 0x12;

/// One measured class on one program.
#[derive(Clone, Debug, Serialize)]
pub struct ClassCost {
    pub program: String,
    pub class: String,
    pub counter: String,
    /// repeat=1 durations, raw (timer overhead included), ns.
    pub raw_ns: Summary,
    /// The empty program of the same type, measured the same way, ns.
    pub empty_ns: Summary,
    /// raw median − empty median, ns.
    pub net_ns: f64,
    /// Stateless classes only: repeat=N average minus the empty program's, ns.
    pub net_ns_repeat: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tc,
    Xdp,
}

struct Prog {
    name: &'static str,
    kind: Kind,
    fd: RawFd,
}

/// Measures every class `runs` times (repeat=1), interleaved in `blocks`.
pub fn measure(runs: usize, blocks: usize) -> Result<Vec<ClassCost>, BenchError> {
    measure_classes(runs, blocks, None)
}

/// A routing table the new-flow classes can ask (the datapath's `bpf_fib_lookup`):
/// the calling thread's network namespace, prepared by the caller, with
/// `other_local` an address of the host there that is not CONFIG's uplink address.
/// Without one, the new-flow SNAT test runs have no ingress interface and the
/// route lookup fails at once (the address of `up` is taken), so they do not pay
/// for a lookup that a forwarded packet pays.
#[derive(Clone, Copy, Debug)]
pub struct Routing {
    /// Where the egress program runs: the uplink.
    pub uplink_ifindex: u32,
    /// Where forwarded packets come in from: the bridge.
    pub bridge_ifindex: u32,
    pub other_local: Ipv4Addr,
}

impl Routing {
    /// The head of `struct __sk_buff` up to `ifindex`: ingress_ifindex, ifindex.
    fn egress_ctx(self) -> Vec<u8> {
        let mut words = [0u32; 11];
        words[9] = self.bridge_ifindex;
        words[10] = self.uplink_ifindex;
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
}

/// Like [`measure`], for the classes named in `only` (all when None). Classes share the
/// CPU's caches in each block, so comparing two builds is fair only over one class set:
/// `only` lets a newer build measure the classes an older one had.
pub fn measure_classes(
    runs: usize,
    blocks: usize,
    only: Option<&[&str]>,
) -> Result<Vec<ClassCost>, BenchError> {
    measure_classes_routed(runs, blocks, only, None, None)
}

/// [`measure_classes`] with a routing table to ask: new-flow SNAT runs as a packet
/// forwarded from the bridge, and "new-flow DNAT (other local address)" is measured.
///
/// `conntrack_capacity` sizes `CONNTRACK` (entries; `CONNTRACK_UNASSURED` gets half, as
/// `up` sizes them) instead of the default 262,144. Smaller tables stay in the CPU's
/// caches and TLB, so a sweep shows how much of a class's cost is memory misses
/// rather than instructions; a run of more new flows than half the unassured table
/// holds measures evictions too.
pub fn measure_classes_routed(
    runs: usize,
    blocks: usize,
    only: Option<&[&str]>,
    routing: Option<Routing>,
    conntrack_capacity: Option<u32>,
) -> Result<Vec<ClassCost>, BenchError> {
    let snat_ctx = routing.map(Routing::egress_ctx);
    let object = netfast::bpf::object::object()?;
    let mut loader = EbpfLoader::new();
    if let Some(capacity) = conntrack_capacity {
        loader
            .map_max_entries(MAP_CONNTRACK, conntrack_map_entries(capacity))
            .map_max_entries(MAP_CONNTRACK_UNASSURED, unassured_capacity(capacity));
    }
    let mut ebpf = loader.load(object)?;
    for name in [PROG_UPLINK_INGRESS_TC, PROG_UPLINK_EGRESS_TC] {
        let p: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| missing(name))?
            .try_into()
            .map_err(|e| bpf(name, e))?;
        load_retrying(|| p.load()).map_err(|e| bpf(name, e))?;
    }
    let p: &mut Xdp = ebpf
        .program_mut(PROG_UPLINK_INGRESS_XDP)
        .ok_or_else(|| missing(PROG_UPLINK_INGRESS_XDP))?
        .try_into()
        .map_err(|e| bpf(PROG_UPLINK_INGRESS_XDP, e))?;
    load_retrying(|| p.load()).map_err(|e| bpf(PROG_UPLINK_INGRESS_XDP, e))?;
    configure(&mut ebpf)?;

    let fd_of = |ebpf: &Ebpf, name: &'static str| -> Result<RawFd, BenchError> {
        let p = ebpf.program(name).ok_or_else(|| missing(name))?;
        let fd = p.fd().map_err(|e| bpf(name, e))?;
        Ok(fd.as_fd().as_raw_fd())
    };
    let ingress_tc = Prog {
        name: PROG_UPLINK_INGRESS_TC,
        kind: Kind::Tc,
        fd: fd_of(&ebpf, PROG_UPLINK_INGRESS_TC)?,
    };
    let ingress_xdp = Prog {
        name: PROG_UPLINK_INGRESS_XDP,
        kind: Kind::Xdp,
        fd: fd_of(&ebpf, PROG_UPLINK_INGRESS_XDP)?,
    };
    let egress_tc = Prog {
        name: PROG_UPLINK_EGRESS_TC,
        kind: Kind::Tc,
        fd: fd_of(&ebpf, PROG_UPLINK_EGRESS_TC)?,
    };
    let empty_tc = load_empty(BPF_PROG_TYPE_SCHED_CLS, 0, "bench_empty_tc")?;
    // The floor under any new flow: the two conntrack misses and the two inserts of
    // its halves, on the datapath's own tables, with no program logic around them.
    let conntrack_fd = lru_map_fd(&ebpf, MAP_CONNTRACK)?;
    let unassured_fd = lru_map_fd(&ebpf, MAP_CONNTRACK_UNASSURED)?;
    let floor_fd = load_map_floor(
        BPF_PROG_TYPE_SCHED_CLS,
        &[
            (conntrack_fd, false),
            (unassured_fd, false),
            (unassured_fd, true),
            (unassured_fd, true),
        ],
        "bench_map_floor",
    )?;
    let inserts_fd = load_map_floor(
        BPF_PROG_TYPE_SCHED_CLS,
        &[(unassured_fd, true), (unassured_fd, true)],
        "bench_map_inserts",
    )?;
    let map_floor = Prog {
        name: "(raw map operations)",
        kind: Kind::Tc,
        fd: floor_fd.as_raw_fd(),
    };
    let map_inserts = Prog {
        name: "(raw map operations)",
        kind: Kind::Tc,
        fd: inserts_fd.as_raw_fd(),
    };
    let empty_xdp = load_empty(BPF_PROG_TYPE_XDP, 2, "bench_empty_xdp")?;
    let empty_fd = |k: Kind| match k {
        Kind::Tc => empty_tc.as_raw_fd(),
        Kind::Xdp => empty_xdp.as_raw_fd(),
    };

    let mut out = vec![0u8; 512];
    let miss = tcp_frame(
        SocketAddrV4::new(PEER, 40_000),
        SocketAddrV4::new(UPLINK, 9_999),
        SYN,
    );
    // Set up one established DNAT flow and one masqueraded flow, per ingress program
    // (their own client ports), and learn the masquerade's port from the output.
    let mut flows = Vec::new();
    for (i, p) in [&ingress_tc, &ingress_xdp].into_iter().enumerate() {
        let client = SocketAddrV4::new(PEER, 41_000 + i as u16);
        let syn = tcp_frame(client, SocketAddrV4::new(UPLINK, 8088), SYN);
        test_run(p.fd, &syn, &mut out, 1)?;
        let est = tcp_frame(client, SocketAddrV4::new(UPLINK, 8088), ACK);
        let container = SocketAddrV4::new(BACKEND, 5_000 + i as u16);
        let lan = SocketAddrV4::new(PEER, 9_000);
        let (_, _, len) = test_run(egress_tc.fd, &tcp_frame(container, lan, SYN), &mut out, 1)?;
        if len < 14 + 20 + 2 {
            return Err(BenchError::Check {
                what: "the egress program returned a truncated SNAT packet".into(),
            });
        }
        let nat_port = u16::from_be_bytes([out[34], out[35]]);
        let masqueraded = SocketAddrV4::new(UPLINK, nat_port);
        let reply = tcp_frame(lan, masqueraded, SYN_ACK);
        let backend_reply = tcp_frame(SocketAddrV4::new(BACKEND, 80), client, SYN_ACK);
        // A router's fragmentation-needed about the masqueraded flow's segments.
        let icmp_error = frag_needed(PEER, UPLINK, &tcp_frame(masqueraded, lan, ACK)[14..]);
        // A reply datagram in fragments: the first one (run once here) leaves the
        // record the later one is measured with.
        // Both handshakes complete, so the flows are assured and live in CONNTRACK,
        // as established traffic does (a flow stuck in CONNTRACK_UNASSURED pays a miss
        // in CONNTRACK first).
        test_run(egress_tc.fd, &backend_reply, &mut out, 1)?;
        test_run(p.fd, &est, &mut out, 1)?;
        test_run(p.fd, &reply, &mut out, 1)?;
        test_run(egress_tc.fd, &tcp_frame(container, lan, ACK), &mut out, 1)?;
        let first = fragment_of(&reply, 0x4000 + i as u16, true, 0);
        test_run(p.fd, &first, &mut out, 1)?;
        let later = fragment_of(&reply, 0x4000 + i as u16, false, 5);
        flows.push((est, reply, backend_reply, icmp_error, later));
    }

    // Fresh tuples for the new-flow classes: 10.0.1.64+ × ports 1024.., never reused.
    let mut next_flow: u32 = 0;
    let mut fresh = move || {
        let n = next_flow;
        next_flow += 1;
        (
            Ipv4Addr::new(10, 0, 1, 64 + (n / 60_000) as u8),
            1_024 + (n % 60_000) as u16,
        )
    };

    #[derive(Clone, Copy)]
    enum Frame {
        Fixed(usize),
        NewDnat,
        /// A new flow to an "any" publish on a local address other than CONFIG's.
        NewDnatOther(Ipv4Addr),
        NewSnat,
    }
    struct Case<'a> {
        prog: &'a Prog,
        class: &'static str,
        /// The counter every run must move once; None: the run's return value must be
        /// 0 instead (the raw map-floor program's inserts all succeeded).
        counter: Option<Counter>,
        frame: Frame,
        samples: Vec<f64>,
    }
    let mut fixed: Vec<Vec<u8>> = vec![miss.clone()];
    let mut cases: Vec<Case> = Vec::new();
    for (i, p) in [&ingress_tc, &ingress_xdp].into_iter().enumerate() {
        let (est, reply, _, icmp_error, later) = &flows[i];
        fixed.push(est.clone());
        let est_idx = fixed.len() - 1;
        fixed.push(reply.clone());
        let reply_idx = fixed.len() - 1;
        fixed.push(icmp_error.clone());
        cases.push(Case {
            prog: p,
            class: "ICMP error (masquerade)",
            counter: Some(Counter::IcmpErrorIn),
            frame: Frame::Fixed(fixed.len() - 1),
            samples: Vec::new(),
        });
        fixed.push(later.clone());
        cases.push(Case {
            prog: p,
            class: "later fragment (reply)",
            counter: Some(Counter::FragmentTranslated),
            frame: Frame::Fixed(fixed.len() - 1),
            samples: Vec::new(),
        });
        cases.push(Case {
            prog: p,
            class: "miss",
            counter: Some(Counter::PassNoMatch),
            frame: Frame::Fixed(0),
            samples: Vec::new(),
        });
        cases.push(Case {
            prog: p,
            class: "new-flow DNAT",
            counter: Some(Counter::DnatNew),
            frame: Frame::NewDnat,
            samples: Vec::new(),
        });
        if let Some(routing) = routing {
            cases.push(Case {
                prog: p,
                class: "new-flow DNAT (other local address)",
                counter: Some(Counter::DnatNew),
                frame: Frame::NewDnatOther(routing.other_local),
                samples: Vec::new(),
            });
        }
        cases.push(Case {
            prog: p,
            class: "established DNAT",
            counter: Some(Counter::DnatEstablished),
            frame: Frame::Fixed(est_idx),
            samples: Vec::new(),
        });
        cases.push(Case {
            prog: p,
            class: "reverse SNAT (reply)",
            counter: Some(Counter::SnatReply),
            frame: Frame::Fixed(reply_idx),
            samples: Vec::new(),
        });
    }
    fixed.push(flows[0].2.clone());
    let backend_reply_idx = fixed.len() - 1;
    cases.push(Case {
        prog: &egress_tc,
        class: "reverse DNAT (reply)",
        counter: Some(Counter::DnatReply),
        frame: Frame::Fixed(backend_reply_idx),
        samples: Vec::new(),
    });
    cases.push(Case {
        prog: &egress_tc,
        class: "new-flow SNAT",
        counter: Some(Counter::SnatNew),
        frame: Frame::NewSnat,
        samples: Vec::new(),
    });
    for (prog, class) in [
        (&map_floor, MAP_FLOOR_CLASS),
        (&map_inserts, "map floor: 2 inserts"),
    ] {
        cases.push(Case {
            prog,
            class,
            counter: None,
            frame: Frame::NewDnat,
            samples: Vec::new(),
        });
    }
    if let Some(only) = only {
        cases.retain(|case| only.contains(&case.class));
        if cases.is_empty() {
            return Err(BenchError::Check {
                what: format!("no program cost class is named {only:?}"),
            });
        }
    }
    let mut empty_samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];

    let per_block = runs.div_ceil(blocks.max(1));
    for block in 0..blocks.max(1) {
        crate::sys::check_interrupt()?;
        // Rotate the order per block so no class always runs right after another.
        let n = cases.len();
        for k in 0..n {
            let case = &mut cases[(k + block) % n];
            let before = match case.counter {
                Some(c) => counter(&ebpf, c)?,
                None => 0,
            };
            let mut failed_runs = 0u64;
            for _ in 0..per_block {
                let mut ctx = None;
                let frame = match case.frame {
                    Frame::Fixed(i) => fixed[i].clone(),
                    Frame::NewDnat | Frame::NewDnatOther(_) => loop {
                        let (a, p) = fresh();
                        let host = match case.frame {
                            Frame::NewDnatOther(other) => other,
                            _ => UPLINK,
                        };
                        let frame =
                            tcp_frame(SocketAddrV4::new(a, p), SocketAddrV4::new(host, 8088), SYN);
                        // About 1 tuple in 65536 makes a checksum equal to the bare
                        // pseudo-header sum, which XDP leaves to tc as possibly partial
                        // (`pass_xdp_csum_partial`): not this class's path.
                        if !checksum_looks_partial(&frame) {
                            break frame;
                        }
                    },
                    Frame::NewSnat => {
                        ctx = snat_ctx.as_deref();
                        // A fresh destination per flow: to one destination the SNAT
                        // range (4536 ports) would run out and the class would
                        // measure port exhaustion instead.
                        let (a, p) = fresh();
                        tcp_frame(
                            SocketAddrV4::new(BACKEND, 33_000),
                            SocketAddrV4::new(a, p),
                            SYN,
                        )
                    }
                };
                let (retval, ns, _) = test_run_ctx(case.prog.fd, &frame, &mut out, 1, ctx)?;
                failed_runs += u64::from(retval != 0);
                case.samples.push(f64::from(ns));
            }
            let Some(class_counter) = case.counter else {
                if failed_runs != 0 {
                    return Err(BenchError::Check {
                        what: format!(
                            "{}: {failed_runs} of {per_block} runs had an insert refused",
                            case.class
                        ),
                    });
                }
                continue;
            };
            let after = counter(&ebpf, class_counter)?;
            if after - before != per_block as u64 {
                return Err(BenchError::Check {
                    what: format!(
                        "{} {}: counter {} moved by {} over {per_block} runs; the class did not take its path",
                        case.prog.name,
                        case.class,
                        class_counter.name(),
                        after - before
                    ),
                });
            }
        }
        for (i, kind) in [Kind::Tc, Kind::Xdp].into_iter().enumerate() {
            for _ in 0..per_block {
                let (_, ns, _) = test_run(empty_fd(kind), &miss, &mut out, 1)?;
                empty_samples[i].push(f64::from(ns));
            }
        }
    }
    let empty = [
        Summary::of(&empty_samples[0]),
        Summary::of(&empty_samples[1]),
    ];
    // Stateless: a miss leaves the packet as it was, so repeat=N is valid for it.
    let repeat = u32::try_from(runs.max(1)).unwrap_or(u32::MAX);
    let empty_repeat = [
        f64::from(test_run(empty_fd(Kind::Tc), &miss, &mut out, repeat)?.1),
        f64::from(test_run(empty_fd(Kind::Xdp), &miss, &mut out, repeat)?.1),
    ];
    let mut result = Vec::new();
    for case in &cases {
        let idx = usize::from(case.prog.kind == Kind::Xdp);
        let raw = Summary::of(&case.samples);
        let net_ns_repeat = if case.class == "miss" {
            let (_, ns, _) = test_run(case.prog.fd, &miss, &mut out, repeat)?;
            Some(f64::from(ns) - empty_repeat[idx])
        } else {
            None
        };
        result.push(ClassCost {
            program: case.prog.name.to_string(),
            class: case.class.to_string(),
            counter: case
                .counter
                .map_or_else(|| "- (return value 0)".to_owned(), |c| c.name().to_string()),
            net_ns: raw.median - empty[idx].median,
            raw_ns: raw,
            empty_ns: empty[idx].clone(),
            net_ns_repeat,
        });
    }
    Ok(result)
}

/// The class of the raw map-floor program: what a new flow's map operations cost
/// alone, to set against "new-flow DNAT".
pub const MAP_FLOOR_CLASS: &str = "map floor: 2 misses + 2 inserts";

/// The fd of the LRU hash map `name` in the loaded object.
fn lru_map_fd(ebpf: &Ebpf, name: &str) -> Result<RawFd, BenchError> {
    match ebpf.map(name) {
        Some(aya::maps::Map::LruHashMap(data)) => Ok(data.fd().as_fd().as_raw_fd()),
        Some(_) => Err(BenchError::Check {
            what: format!("map {name} in the datapath object is not an LRU hash"),
        }),
        None => Err(BenchError::Bpf {
            what: format!("the datapath object has no map {name}"),
            detail: "rebuild netfast".into(),
        }),
    }
}

fn missing(name: &str) -> BenchError {
    BenchError::Bpf {
        what: format!("the datapath object has no program {name}"),
        detail: "rebuild netfast".into(),
    }
}

fn bpf(name: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Bpf {
        what: format!("program {name}"),
        detail: e.to_string(),
    }
}

fn configure(ebpf: &mut Ebpf) -> Result<(), BenchError> {
    let be = |a: Ipv4Addr| u32::from_ne_bytes(a.octets());
    let config = DatapathConfig {
        uplink_addr: be(UPLINK),
        subnet_addr: be(Ipv4Addr::new(172, 16, 0, 0)),
        subnet_mask: be(Ipv4Addr::new(255, 255, 255, 0)),
        snat_port_min: 61_000,
        snat_port_max: 65_535,
        enabled: 1,
        masquerade: 1,
        ephemeral_min: 32_768,
        ephemeral_max: 60_999,
        allow_direct_routing: 0,
        fast_path: 1,
        host_netns_cookie: 0,
        uplink_ifindex: 0,
        _pad: [0; 4],
    };
    let map = ebpf
        .map_mut(MAP_CONFIG)
        .ok_or_else(|| missing(MAP_CONFIG))?;
    let mut array: Array<&mut MapData, DatapathConfig> =
        Array::try_from(map).map_err(|e| bpf(MAP_CONFIG, e))?;
    array.set(0, config, 0).map_err(|e| bpf(MAP_CONFIG, e))?;
    let map = ebpf
        .map_mut(MAP_PUBLISHED_PORTS)
        .ok_or_else(|| missing(MAP_PUBLISHED_PORTS))?;
    let mut published: HashMap<&mut MapData, PublishKey, Backend> =
        HashMap::try_from(map).map_err(|e| bpf(MAP_PUBLISHED_PORTS, e))?;
    let key = PublishKey {
        host_addr: 0,
        host_port: 8088u16.to_be(),
        proto: proto::TCP,
        _pad: 0,
    };
    let value = Backend {
        addr: be(BACKEND),
        port: 80u16.to_be(),
        _pad: [0; 2],
    };
    published
        .insert(key, value, 0)
        .map_err(|e| bpf(MAP_PUBLISHED_PORTS, e))
}

fn counter(ebpf: &Ebpf, c: Counter) -> Result<u64, BenchError> {
    let map = ebpf
        .map(MAP_COUNTERS)
        .ok_or_else(|| missing(MAP_COUNTERS))?;
    let counters: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(|e| bpf(MAP_COUNTERS, e))?;
    Ok(counters
        .get(&(c as u32), 0)
        .map_err(|e| bpf(MAP_COUNTERS, e))?
        .iter()
        .sum())
}
