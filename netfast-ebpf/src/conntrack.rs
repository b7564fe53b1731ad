//! Flow creation and bookkeeping. A flow is two `CONNTRACK` entries: the original
//! direction's and the reply's, each telling how to translate packets that match it.

use core::num::NonZeroU32;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
};
use aya_log_ebpf::warn;
use netfast_common::{
    Backend, Counter, CtEntry, CtTuple, DatapathConfig,
    ct::{self, DIR_ORIGINAL, DIR_REPLY, KIND_DNAT, KIND_ROUTED, KIND_SNAT},
    proto,
    tcp::{self, flags as tcp_flags},
};

use crate::{
    maps::{CONNTRACK, CONNTRACK_UNASSURED, count},
    parse::Packet,
    sockets::HostSockets,
};

const EEXIST: i32 = 17;

/// Which way a packet crosses the uplink.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Arriving from outside: only entries that rewrite the destination apply.
    Ingress,
    /// Leaving toward outside: only entries that rewrite the source apply.
    Egress,
}

impl Side {
    /// Whether an entry that rewrites the destination (true) or the source (false)
    /// applies to packets crossing on this side.
    #[inline(always)]
    fn takes(self, rewrites_destination: bool) -> bool {
        rewrites_destination == (self == Side::Ingress)
    }
}

/// What packets of a flow get: the fields of its entry that translation reads, so a
/// hit copies 8 bytes, not the 48-byte entry.
#[derive(Clone, Copy)]
pub struct Rewrite {
    /// Network byte order, as in `CtEntry`.
    pub nat_addr: u32,
    pub nat_port: u16,
    pub kind: u8,
    pub direction: u8,
}

impl Rewrite {
    /// No translation yet: a place for a lookup to write one.
    pub const NONE: Rewrite = Rewrite {
        nat_addr: 0,
        nat_port: 0,
        kind: 0,
        direction: 0,
    };

    #[inline(always)]
    fn of(entry: &CtEntry) -> Self {
        Self {
            nat_addr: entry.nat_addr,
            nat_port: entry.nat_port,
            kind: entry.kind,
            direction: entry.direction,
        }
    }

    #[inline(always)]
    pub fn rewrites_destination(&self) -> bool {
        ct::rewrites_destination(self.kind, self.direction)
    }
}

/// A flow's other half is looked for (`restore_reverse`) on its first packets, every
/// `REVERSE_CHECK_EVERY` packets, and after `REVERSE_CHECK_IDLE_NS` without one: the
/// LRU evicts the least recently used entries, so a half goes while the flow idles, or
/// while only the other direction is busy. Checking every packet costs a second hash
/// lookup each time (about 15 ns).
const REVERSE_CHECK_EVERY: u64 = 8;

// Stamps (`created_ns`, `last_seen_ns`) come from `bpf_ktime_get_coarse_ns`:
// CLOCK_MONOTONIC_COARSE, one scheduler tick of resolution, which timeouts in seconds
// never notice. `bpf_ktime_get_ns` reads the clocksource on every call, which on a
// virtual machine's kvm-clock cost about 45 ns per packet in BPF_PROG_TEST_RUN, more
// than the rest of an established hit. Cilium's `bpf_mono_now()` takes jiffies for
// the same reason.
const REVERSE_CHECK_IDLE_NS: u64 = 1_000_000_000;

/// Which of the two conntrack maps an entry lives in. Both halves of a flow always
/// share one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    /// `CONNTRACK`: assured flows.
    Assured,
    /// `CONNTRACK_UNASSURED`: new flows until assured.
    Unassured,
}

impl Table {
    #[inline(always)]
    fn get(self, key: &CtTuple) -> Option<CtEntry> {
        // SAFETY: the value is copied out at once.
        unsafe {
            match self {
                Table::Assured => CONNTRACK.get(key).copied(),
                Table::Unassured => CONNTRACK_UNASSURED.get(key).copied(),
            }
        }
    }

    #[inline(always)]
    fn contains(self, key: &CtTuple) -> bool {
        match self {
            Table::Assured => CONNTRACK.get_ptr(key).is_some(),
            Table::Unassured => CONNTRACK_UNASSURED.get_ptr(key).is_some(),
        }
    }

    /// Inserts with BPF_NOEXIST: never clobbers another flow's entry.
    #[inline(always)]
    fn insert_new(self, key: &CtTuple, state: &CtEntry) -> Result<(), i32> {
        let flags = BPF_NOEXIST.into();
        match self {
            Table::Assured => CONNTRACK.insert(key, state, flags),
            Table::Unassured => CONNTRACK_UNASSURED.insert(key, state, flags),
        }
        .map_err(|err| err as i32)
    }

    /// ENOENT, the only error a delete of a well-formed key can give, means the LRU
    /// or the GC took the entry already: gone either way.
    #[inline(always)]
    fn remove(self, key: &CtTuple) {
        let _gone_either_way = match self {
            Table::Assured => CONNTRACK.remove(key),
            Table::Unassured => CONNTRACK_UNASSURED.remove(key),
        };
    }
}

/// The entry for `key` (the packet's tuple, or for a later fragment its datagram's),
/// if it is meant for this side of the uplink: assured flows first, then new ones. A
/// tuple seen on the wrong side (a spoofed reply from outside, say) is a miss and
/// leaves the entry untouched. The hit is recorded on the entry.
///
/// `Ok(None)` is a miss, also for a SYN that reopens a closed flow (its entries are
/// gone, so the caller starts a fresh one). `Err` drops the packet: an RST outside
/// the window, which leaves the flow untouched.
#[inline(always)]
pub fn lookup_for(key: &CtTuple, pkt: &Packet, side: Side) -> Result<Option<Rewrite>, Counter> {
    if let Some(entry) = CONNTRACK.get_ptr_mut(key) {
        return hit(Table::Assured, key, entry, pkt, side);
    }
    match CONNTRACK_UNASSURED.get_ptr_mut(key) {
        Some(entry) => hit(Table::Unassured, key, entry, pkt, side),
        None => Ok(None),
    }
}

#[inline(always)]
fn hit(
    table: Table,
    key: &CtTuple,
    entry: *mut CtEntry,
    pkt: &Packet,
    side: Side,
) -> Result<Option<Rewrite>, Counter> {
    // SAFETY: the pointer comes from a lookup in this program run. Two CPUs may race
    // on the same entry; the fields written are statistics and forward-only TCP
    // marks, so a lost update is harmless.
    let entry = unsafe { &mut *entry };
    let rewrite = Rewrite::of(entry);
    if !side.takes(rewrite.rewrites_destination()) {
        return Ok(None);
    }
    // A later fragment carries no TCP header: its flags read 0.
    let tcp = pkt.tcp.flags != 0;
    if tcp && pkt.tcp.flags & (tcp_flags::RST | tcp_flags::SYN) != 0 {
        match tcp_control(table, key, entry, pkt) {
            Control::Go => {}
            Control::Reopened => return Ok(None),
            Control::RstOutOfWindow => return Err(Counter::DropTcpRstOutOfWindow),
        }
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let idle = now.wrapping_sub(entry.last_seen_ns);
    entry.last_seen_ns = now;
    entry.packets += 1;
    entry.bytes += u64::from(pkt.ip_len);
    if tcp {
        entry.record_tcp(&pkt.tcp);
    }
    if table == Table::Unassured && assured_by(key, entry, pkt) {
        assure(key, entry);
    } else if entry.packets <= 2
        || entry.packets % REVERSE_CHECK_EVERY == 0
        || idle > REVERSE_CHECK_IDLE_NS
    {
        restore_reverse(table, key, entry);
    }
    Ok(Some(rewrite))
}

/// What `tcp_control` decided. Fieldless, so the caller's result carries no
/// half-defined payload out of it: LLVM spilled such a payload's undefined register
/// in `container_ingress_tc`, and the verifier refuses a write of a register that was
/// never set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Control {
    /// Go on with the hit.
    Go,
    /// A SYN from the original side found the flow closed; both halves were removed,
    /// so the caller starts a fresh flow (a miss).
    Reopened,
    /// An RST outside the window: dropped, the flow left untouched.
    RstOutOfWindow,
}

/// The segments that can end a flow or start a new one, checked against the other
/// half: an RST must fall in the window (`tcp::rst_in_window`), and a SYN from the
/// original side on a closed flow (TIME_WAIT, CLOSE) removes it, so the caller opens
/// a fresh one, as nf_conntrack does.
#[inline(always)]
fn tcp_control(table: Table, key: &CtTuple, entry: &CtEntry, pkt: &Packet) -> Control {
    let flags = pkt.tcp.flags;
    let rst = flags & tcp_flags::RST != 0;
    // A SYN-ACK, or a SYN from the reply side, never reopens: no lookup for them.
    let bare_syn_original = flags & tcp_flags::ACK == 0 && entry.direction == DIR_ORIGINAL;
    if !rst && !bare_syn_original {
        return Control::Go;
    }
    let reverse_tuple = entry.reverse_tuple(key);
    let Some(reverse) = table.get(&reverse_tuple) else {
        return Control::Go;
    };
    if rst {
        if !tcp::rst_in_window(entry, &reverse, &pkt.tcp) {
            return Control::RstOutOfWindow;
        }
        return Control::Go;
    }
    if !tcp::tcp_state(entry, &reverse).is_closed() {
        return Control::Go;
    }
    table.remove(&reverse_tuple);
    table.remove(key);
    count(Counter::ConntrackReopened);
    Control::Reopened
}

/// Whether this packet makes an unassured flow assured, nf_conntrack's IPS_ASSURED:
/// for TCP the completed handshake (`TcpState::is_assured`, which needs the other
/// half), for UDP and ICMP the first reply.
#[inline(always)]
fn assured_by(key: &CtTuple, entry: &CtEntry, pkt: &Packet) -> bool {
    if key.proto != proto::TCP {
        return entry.direction == DIR_REPLY;
    }
    if pkt.tcp.flags & tcp_flags::ACK == 0 || entry.direction != DIR_ORIGINAL {
        return false;
    }
    match Table::Unassured.get(&entry.reverse_tuple(key)) {
        Some(reply) => tcp::tcp_state(entry, &reply).is_assured(),
        None => false,
    }
}

/// Moves an assured flow from `CONNTRACK_UNASSURED` to `CONNTRACK`: both halves with
/// BPF_NOEXIST (reply half first, as on creation), then out of the unassured map. If
/// `CONNTRACK` refuses (the tuple is taken there), the flow stays where it is and
/// keeps working; it is counted.
#[inline(always)]
fn assure(key: &CtTuple, entry: &CtEntry) {
    let reverse_tuple = entry.reverse_tuple(key);
    let reverse = match Table::Unassured.get(&reverse_tuple) {
        Some(reverse) => reverse,
        None => entry.reverse_entry(key),
    };
    let (first, first_state, second, second_state) = if entry.direction == DIR_REPLY {
        (key, entry, &reverse_tuple, &reverse)
    } else {
        (&reverse_tuple, &reverse, key, entry)
    };
    if Table::Assured.insert_new(first, first_state).is_err() {
        count(Counter::ConntrackAssureFailed);
        return;
    }
    if Table::Assured.insert_new(second, second_state).is_err() {
        Table::Assured.remove(first);
        count(Counter::ConntrackAssureFailed);
        return;
    }
    Table::Unassured.remove(second);
    Table::Unassured.remove(first);
    count(Counter::ConntrackAssured);
}

/// What an ICMP error about the flow of `key` must say instead: the entry's address
/// and port, if the entry is meant for this side. An error is not the flow's own
/// traffic, so the entry is neither touched nor rebuilt (nf_conntrack does not
/// refresh a flow's timeout for RELATED packets either).
#[inline(always)]
pub fn related(key: &CtTuple, side: Side) -> Option<(u32, u16)> {
    let entry = match Table::Assured.get(key) {
        Some(entry) => entry,
        None => Table::Unassured.get(key)?,
    };
    if !side.takes(entry.rewrites_destination()) {
        return None;
    }
    Some((entry.nat_addr, entry.nat_port))
}

/// The LRU evicts single entries, so when the table is full a flow can lose its other
/// half, and the next packet the other way would be taken for a new flow. The half
/// that is left holds all it takes to rebuild it. NOEXIST: never clobber a half that
/// another CPU just wrote, or a port another flow has claimed since.
#[inline(always)]
fn restore_reverse(table: Table, key: &CtTuple, state: &CtEntry) {
    let reverse = state.reverse_tuple(key);
    if table.contains(&reverse) {
        return;
    }
    match table.insert_new(&reverse, &state.reverse_entry(key)) {
        Ok(()) => count(Counter::ConntrackHalfRestored),
        Err(err) if err == -EEXIST => {}
        Err(_) => count(Counter::ConntrackRestoreFailed),
    }
}

#[inline(always)]
fn state(pkt: &Packet, nat_addr: u32, nat_port: u16, kind: u8, direction: u8, now: u64) -> CtEntry {
    let seen = direction == DIR_ORIGINAL;
    let mut state = CtEntry {
        nat_addr,
        nat_port,
        kind,
        direction,
        created_ns: now,
        last_seen_ns: now,
        packets: u64::from(seen),
        bytes: if seen { u64::from(pkt.ip_len) } else { 0 },
        ..CtEntry::default()
    };
    if seen && pkt.tcp.flags != 0 {
        state.record_tcp(&pkt.tcp);
    }
    state
}

/// Claims a new flow's reply tuple: the reply half goes into `CONNTRACK_UNASSURED`
/// with BPF_NOEXIST, unless an assured flow holds the tuple already. False when the
/// tuple is taken, by either kind of flow.
#[inline(always)]
fn claim_reply(pkt: &Packet, reply: &CtTuple, reply_state: &CtEntry) -> Result<bool, Counter> {
    if Table::Assured.contains(reply) {
        return Ok(false);
    }
    match Table::Unassured.insert_new(reply, reply_state) {
        Ok(()) => Ok(true),
        Err(err) if err == -EEXIST => Ok(false),
        Err(err) => Err(insert_failed(pkt, err)),
    }
}

/// A new flow to a published port: the original packets go to the backend, and the
/// backend's replies come back from the published address and port.
#[inline(always)]
pub fn create_dnat(pkt: &Packet, backend: &Backend) -> Result<Rewrite, Counter> {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let original = pkt.key;
    let reply = CtTuple {
        src_addr: backend.addr,
        src_port: backend.port,
        dst_addr: original.src_addr,
        dst_port: original.src_port,
        proto: original.proto,
        _pad: [0; 3],
    };
    let reply_state = state(
        pkt,
        original.dst_addr,
        original.dst_port,
        KIND_DNAT,
        DIR_REPLY,
        now,
    );
    let original_state = state(
        pkt,
        backend.addr,
        backend.port,
        KIND_DNAT,
        DIR_ORIGINAL,
        now,
    );
    // The reply tuple (backend to client) may be another flow's: the backend's own
    // masqueraded connection from that port to that client. It is kept.
    if !claim_reply(pkt, &reply, &reply_state)? {
        return Err(Counter::DropConntrackClash);
    }
    insert_original(&original, &original_state, &reply)
}

/// A new routed flow (`allow_direct_routing`): a peer that routes the masqueraded
/// subnet via the host, to a container's own address. Nothing is translated: both
/// halves hold the container's address and port, so the container's replies match
/// the reply half on egress and leave as they are, where a miss would have made them
/// a new masqueraded flow. Inserted like any new flow (reply half first, NOEXIST,
/// rolled back on failure), into `CONNTRACK_UNASSURED` until assured.
#[inline(always)]
pub fn create_routed(pkt: &Packet) -> Result<Rewrite, Counter> {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let original = pkt.key;
    let reply = original.reversed();
    let (addr, port) = (original.dst_addr, original.dst_port);
    let reply_state = state(pkt, addr, port, KIND_ROUTED, DIR_REPLY, now);
    let original_state = state(pkt, addr, port, KIND_ROUTED, DIR_ORIGINAL, now);
    // The reply tuple (container to peer) may be another flow's: the container's own
    // masqueraded connection from that port to that peer. It is kept.
    if !claim_reply(pkt, &reply, &reply_state)? {
        return Err(Counter::DropConntrackClash);
    }
    insert_original(&original, &original_state, &reply)
}

/// Inserts a new flow's original half once its reply half is in, with BPF_NOEXIST. On
/// failure the reply half goes again, so no half-entry holds a port or a tuple
/// (Cilium's `__snat_update` rolls back the same way).
#[inline(always)]
fn insert_original(
    original: &CtTuple,
    original_state: &CtEntry,
    reply: &CtTuple,
) -> Result<Rewrite, Counter> {
    let failed = match Table::Unassured.insert_new(original, original_state) {
        Ok(()) => return Ok(Rewrite::of(original_state)),
        Err(err) if err == -EEXIST => Counter::DropConntrackClash,
        Err(err) => insert_failed(original, err),
    };
    Table::Unassured.remove(reply);
    Err(failed)
}

/// A new flow out of the masqueraded subnet: the source becomes `uplink_addr` (the
/// uplink's address in force, network byte order) and a source port chosen the way
/// MASQUERADE chooses it (nf_nat's `nf_nat_l4proto_unique_tuple`):
/// - the container's own port, when it lies outside the host's ephemeral ports (the
///   host may take those for a connection of its own later) and neither a flow nor a
///   host socket uses it toward this remote;
/// - otherwise, for a privileged port, another privileged one: 1-511 below 512, else
///   600-1023, as nf_nat keeps them apart;
/// - otherwise a port of the SNAT range.
///
/// A search starts at a random port and walks its range in turn (at most `TRIES`
/// ports: `SNAT_MAX_TRIES` on the uplink, `HAIRPIN_SNAT_MAX_TRIES` for hairpin). A port is claimed by inserting the reply entry with
/// BPF_NOEXIST, which is atomic against other CPUs; a port a host socket would take
/// packets from the remote on is skipped.
#[inline(always)]
pub fn create_snat<H: HostSockets, const TRIES: u32>(
    host: &H,
    pkt: &Packet,
    config: &DatapathConfig,
    uplink_addr: u32,
) -> Result<Rewrite, Counter> {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let original = pkt.key;
    let own = u32::from(u16::from_be(original.src_port));
    let reply_state = state(
        pkt,
        original.src_addr,
        original.src_port,
        KIND_SNAT,
        DIR_REPLY,
        now,
    );
    let (min, max) = search_range(pkt, own, config);
    if min == 0 || max < min {
        return Err(Counter::DropSnatPortsExhausted);
    }
    // NonZero: `%` then has no division-by-zero panic path, which the verifier rejects.
    let Some(span) = NonZeroU32::new(max - min + 1) else {
        return Err(Counter::DropSnatPortsExhausted);
    };
    // SAFETY: no preconditions.
    let start = min + unsafe { bpf_get_prandom_u32() } % span;
    // One claim site for the own port and the search, so the verifier walks it once
    // per try: try 0 is the own port when it may be kept, then a sequential walk from
    // `start` that wraps inside the range, as nf_nat and Cilium probe (it finds a
    // free port a few random draws would miss once the range fills).
    let keep_own = keeps_own_port(pkt, own, config);
    let search_tries = if span.get() < TRIES {
        span.get()
    } else {
        TRIES
    };
    let tries = search_tries + u32::from(keep_own);
    let mut port = if keep_own { own } else { start };
    for attempt in 0..TRIES + 1 {
        if attempt >= tries {
            break;
        }
        if attempt > 0 {
            count(Counter::SnatPortRetries);
            port = if keep_own && attempt == 1 {
                start
            } else if port >= max || port < min {
                min
            } else {
                port + 1
            };
        }
        match claim(host, pkt, uplink_addr, port, &reply_state, now) {
            Claim::Won => {
                return Ok(Rewrite {
                    nat_addr: uplink_addr,
                    nat_port: (port as u16).to_be(),
                    kind: KIND_SNAT,
                    direction: DIR_ORIGINAL,
                });
            }
            Claim::Taken => {}
            Claim::Clash => return Err(Counter::DropConntrackClash),
            Claim::InsertFailed => return Err(Counter::DropConntrackInsert),
        }
    }
    // Rare by design (a full port range); aya-log reserves in a ring buffer and gives
    // up quietly when it is full, so a flood of these costs no more than the counter.
    warn!(
        pkt,
        "snat: {} port tries collided for {:i} proto {}; new flow dropped",
        tries,
        u32::from_be(original.src_addr),
        original.proto
    );
    Err(Counter::DropSnatPortsExhausted)
}

/// Whether the container's own source port (host byte order) may be kept: for TCP and
/// UDP when it is outside the host's ephemeral ports; for an ICMP echo identifier,
/// which no host socket shares, when it is inside the SNAT range.
#[inline(always)]
fn keeps_own_port(pkt: &Packet, own: u32, config: &DatapathConfig) -> bool {
    if pkt.key.proto == proto::ICMP {
        return (u32::from(config.snat_port_min)..=u32::from(config.snat_port_max)).contains(&own);
    }
    own != 0 && !(u32::from(config.ephemeral_min)..=u32::from(config.ephemeral_max)).contains(&own)
}

/// Where a port is searched when the container's own cannot be kept (inclusive, host
/// byte order): privileged ports stay privileged, the rest go to the SNAT range.
#[inline(always)]
fn search_range(pkt: &Packet, own: u32, config: &DatapathConfig) -> (u32, u32) {
    match own {
        1..512 if pkt.key.proto != proto::ICMP => (1, 511),
        512..1024 if pkt.key.proto != proto::ICMP => (600, 1023),
        _ => (
            u32::from(config.snat_port_min),
            u32::from(config.snat_port_max),
        ),
    }
}

/// Claims `uplink_addr:port` (network, host byte order) for the new flow: the reply
/// entry with BPF_NOEXIST, then the original. `Taken` when a host socket or another
/// flow holds it toward this remote.
#[inline(always)]
fn claim<H: HostSockets>(
    host: &H,
    pkt: &Packet,
    uplink_addr: u32,
    port: u32,
    reply_state: &CtEntry,
    now: u64,
) -> Claim {
    let original = pkt.key;
    let nat_port = (port as u16).to_be();
    let remote = (original.dst_addr, original.dst_port);
    if original.proto != proto::ICMP && host.holds(original.proto, remote, (uplink_addr, nat_port))
    {
        count(Counter::SnatPortHostSocket);
        return Claim::Taken;
    }
    let reply = CtTuple {
        src_addr: original.dst_addr,
        src_port: original.dst_port,
        dst_addr: uplink_addr,
        dst_port: nat_port,
        proto: original.proto,
        _pad: [0; 3],
    };
    match claim_reply(pkt, &reply, reply_state) {
        Ok(true) => {}
        Ok(false) => return Claim::Taken,
        Err(_) => return Claim::InsertFailed,
    }
    let original_state = state(pkt, uplink_addr, nat_port, KIND_SNAT, DIR_ORIGINAL, now);
    match insert_original(&original, &original_state, &reply) {
        Ok(_) => Claim::Won,
        Err(Counter::DropConntrackClash) => Claim::Clash,
        Err(_) => Claim::InsertFailed,
    }
}

/// `claim`'s answer. Fieldless on purpose: a result with a payload left that payload
/// undefined on the "taken" path, and LLVM spilled the undefined register inside the
/// port search, which the verifier refuses (a write of a register never set).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The port is the new flow's: both halves are in.
    Won,
    /// A host socket or another flow holds it toward this remote: try the next one.
    Taken,
    /// The original tuple is another flow's (`DropConntrackClash`).
    Clash,
    /// The map refused an insert (`DropConntrackInsert`).
    InsertFailed,
}

/// An insert into an LRU map fails only on allocation trouble: worth a log line.
#[inline(always)]
fn insert_failed<T>(ctx: &T, err: i32) -> Counter {
    warn!(
        ctx,
        "conntrack: insert failed with error {}; new flow dropped", err
    );
    Counter::DropConntrackInsert
}
