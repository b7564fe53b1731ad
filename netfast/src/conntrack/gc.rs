//! Conntrack garbage collection: removes flows that have been idle longer than their
//! protocol's (or TCP state's) timeout, both halves together.
//!
//! A pass reads every entry of one conntrack map once (`CONNTRACK`, then
//! `CONNTRACK_UNASSURED`: a flow's halves always share a map), joins the entries into
//! flows ([`conntrack::pair_flows`]), and decides each flow with [`expired`], a pure
//! function. A flow's idle time counts from the newer `last_seen_ns` of its two
//! halves, and its TCP state comes from what both recorded
//! (`netfast_common::tcp::tcp_state`). Right before
//! deleting, both halves are read again: if either moved (a packet arrived since the
//! scan) or a missing half appeared, the flow is live and is kept.
//!
//! What remains is the gap between that re-read and the delete, a few microseconds
//! for a flow that was idle for its whole timeout. A packet landing exactly there
//! finds no entry and starts a new flow, as it would one moment after the timeout.

use std::{
    borrow::{Borrow, BorrowMut},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, MapData, MapError};
use netfast_common::{
    CtEntry, CtTuple,
    names::{MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED},
};

/// Where callers of the GC always found them.
pub use super::{Timeouts, expired};
use crate::{
    bpf::{self, DatapathError},
    conntrack::{self, Flow},
};

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Entries read (two per complete flow).
    pub scanned: usize,
    /// Flows found idle past their timeout in the scan.
    pub expired: usize,
    /// Entries deleted (both halves of each removed flow).
    pub deleted: usize,
    /// Expired flows kept because a half moved, or reappeared, after the scan.
    pub revived: usize,
    /// Flows with one half only (the LRU evicted the other, or an insert failed).
    pub half_flows: usize,
    pub duration: Duration,
}

/// Two passes' reports as one (one per conntrack map).
impl std::ops::Add for GcReport {
    type Output = GcReport;

    fn add(self, other: GcReport) -> GcReport {
        GcReport {
            scanned: self.scanned + other.scanned,
            expired: self.expired + other.expired,
            deleted: self.deleted + other.deleted,
            revived: self.revived + other.revived,
            half_flows: self.half_flows + other.half_flows,
            duration: self.duration + other.duration,
        }
    }
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scanned {}, {} expired, {} deleted, {} revived, in {:.1} ms",
            crate::count(self.scanned as u64, "entry", "entries"),
            crate::count(self.expired as u64, "flow", "flows"),
            crate::count(self.deleted as u64, "entry", "entries"),
            self.revived,
            self.duration.as_secs_f64() * 1e3
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("conntrack map {what}: {source}")]
    Map {
        what: &'static str,
        #[source]
        source: MapError,
    },
}

/// The conntrack maps a GC pass covers, in order.
pub const CONNTRACK_MAPS: [&str; 2] = [MAP_CONNTRACK, MAP_CONNTRACK_UNASSURED];

/// Opens one of the instance's pinned conntrack maps ([`CONNTRACK_MAPS`]) for
/// [`collect`].
pub fn open_conntrack(
    instance: &str,
    name: &'static str,
) -> Result<HashMap<MapData, CtTuple, CtEntry>, GcError> {
    let (map, _) =
        bpf::maps::open_pinned_map(instance, name, size_of::<CtTuple>(), size_of::<CtEntry>())?;
    HashMap::try_from(map).map_err(|source| GcError::Map {
        what: "open",
        source,
    })
}

/// One GC pass over `map` with the clock read now.
pub fn collect<T>(
    map: &mut HashMap<T, CtTuple, CtEntry>,
    timeouts: &Timeouts,
) -> Result<GcReport, GcError>
where
    T: Borrow<MapData> + BorrowMut<MapData>,
{
    collect_at(map, conntrack::monotonic_ns(), timeouts)
}

/// One GC pass over `map`, taking `now_ns` as the current `CLOCK_MONOTONIC` time.
pub fn collect_at<T>(
    map: &mut HashMap<T, CtTuple, CtEntry>,
    now_ns: u64,
    timeouts: &Timeouts,
) -> Result<GcReport, GcError>
where
    T: Borrow<MapData> + BorrowMut<MapData>,
{
    let started = Instant::now();
    let mut report = GcReport::default();
    // Snapshot first: deleting while walking with get_next_key restarts the walk
    // from the start whenever the current key vanishes.
    let mut entries = Vec::new();
    for item in map.iter() {
        match item {
            Ok(entry) => entries.push(entry),
            // The entry went away between get_next_key and lookup (the LRU evicted
            // it, or another GC or `ct flush` deleted it): nothing left to collect.
            Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(GcError::Map {
                    what: "scan",
                    source,
                });
            }
        }
    }
    report.scanned = entries.len();
    for flow in conntrack::pair_flows(entries) {
        if !flow.is_complete() {
            report.half_flows += 1;
        }
        if !expired(
            flow.proto(),
            flow.tcp_state(),
            flow.last_seen_ns(),
            now_ns,
            timeouts,
        ) {
            continue;
        }
        report.expired += 1;
        if moved_since_scan(map, &flow)? {
            report.revived += 1;
            continue;
        }
        for key in flow.keys() {
            match map.remove(&key) {
                Ok(()) => report.deleted += 1,
                Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(GcError::Map {
                        what: "delete",
                        source,
                    });
                }
            }
        }
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// True when a half of `flow` changed since the scan: its `last_seen_ns` moved, or a
/// half that was missing now exists.
fn moved_since_scan<T>(map: &HashMap<T, CtTuple, CtEntry>, flow: &Flow) -> Result<bool, GcError>
where
    T: Borrow<MapData>,
{
    let scanned = [flow.original, flow.reply];
    for (key, half) in flow.keys().iter().zip(scanned) {
        let now = match map.get(key, 0) {
            Ok(state) => Some(state.last_seen_ns),
            Err(MapError::KeyNotFound) => None,
            Err(source) => {
                return Err(GcError::Map {
                    what: "re-read",
                    source,
                });
            }
        };
        if now != half.map(|h| h.state.last_seen_ns) && now.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::TcpState;
    use netfast_common::proto;
    use netfast_common::tcp::{Segment, flags::*};

    const S: u64 = 1_000_000_000;

    fn short() -> Timeouts {
        let secs = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: secs(20),
            tcp_syn_recv: secs(21),
            tcp_established: secs(100),
            tcp_fin_wait: secs(5),
            tcp_close_wait: secs(6),
            tcp_last_ack: secs(7),
            tcp_time_wait: secs(8),
            tcp_close: secs(9),
            udp: secs(30),
            icmp: secs(10),
        }
    }

    #[test]
    fn timeout_follows_protocol_and_tcp_state() {
        let t = short();
        // What each side sent, as (flags, seq, seq_end, ack): the client's ISN is 100,
        // the server's 900.
        let state = |client: &[(u8, u32, u32, u32)], server: &[(u8, u32, u32, u32)]| {
            let (mut o, mut r) = (CtEntry::default(), CtEntry::default());
            for (half, segs) in [(&mut o, client), (&mut r, server)] {
                for &(flags, seq, seq_end, ack) in segs {
                    half.record_tcp(&Segment {
                        flags,
                        seq,
                        seq_end,
                        ack,
                        window: 1000,
                    });
                }
            }
            t.for_flow(proto::TCP, Some(netfast_common::tcp::tcp_state(&o, &r)))
                .as_secs()
        };
        let syn = (SYN, 100, 101, 0);
        let syn_ack = (SYN | ACK, 900, 901, 101);
        let ack = (ACK, 101, 101, 901);
        let fin = (FIN | ACK, 101, 102, 901);
        let ack_fin = (ACK, 901, 901, 102);
        assert_eq!(state(&[], &[]), 20, "nothing yet");
        assert_eq!(state(&[syn], &[]), 20, "SYN sent");
        assert_eq!(state(&[syn], &[syn_ack]), 21, "SYN-ACK, final ACK not seen");
        assert_eq!(state(&[syn, ack], &[syn_ack]), 100, "handshake done");
        assert_eq!(state(&[ack], &[]), 100, "picked up mid-stream");
        assert_eq!(state(&[syn, ack, fin], &[syn_ack]), 5, "FIN_WAIT");
        assert_eq!(
            state(&[syn, ack, fin], &[syn_ack, ack_fin]),
            6,
            "CLOSE_WAIT"
        );
        let server_fin = (FIN | ACK, 901, 902, 102);
        let last = (ACK, 102, 102, 902);
        assert_eq!(
            state(&[syn, ack, fin], &[syn_ack, server_fin]),
            7,
            "LAST_ACK"
        );
        assert_eq!(
            state(&[syn, ack, fin, last], &[syn_ack, server_fin]),
            8,
            "TIME_WAIT"
        );
        assert_eq!(state(&[syn], &[(RST | ACK, 0, 0, 101)]), 9, "refused");
        assert_eq!(t.for_flow(proto::TCP, None).as_secs(), 20);
        assert_eq!(t.for_flow(proto::UDP, None).as_secs(), 30);
        assert_eq!(t.for_flow(proto::ICMP, None).as_secs(), 10);
        assert_eq!(t.for_flow(47, None).as_secs(), 30, "anything else: udp's");
    }

    #[test]
    fn expiry_is_strictly_after_the_timeout() {
        let t = short();
        let now = 1_000 * S;
        let udp = |last| expired(proto::UDP, None, last, now, &t);
        assert!(!udp(now), "just seen");
        assert!(!udp(now - 30 * S), "exactly the timeout is kept");
        assert!(udp(now - 30 * S - 1), "one ns past it goes");
        assert!(!udp(now + 5 * S), "seen after the clock was read");
        assert!(udp(0), "seen at boot");
        let est = Some(TcpState::Established);
        assert!(!expired(proto::TCP, est, now - 99 * S, now, &t));
        assert!(expired(proto::TCP, est, now - 101 * S, now, &t));
        let closing = Some(TcpState::Close);
        assert!(expired(proto::TCP, closing, now - 10 * S, now, &t));
        assert!(!expired(proto::ICMP, None, now - 10 * S, now, &t));
        assert!(expired(proto::ICMP, None, now - 11 * S, now, &t));
    }

    #[test]
    fn a_pair_is_as_idle_as_its_newer_half() {
        use netfast_common::ct::{DIR_ORIGINAL, DIR_REPLY, KIND_DNAT};
        let t = short();
        let now = 1_000 * S;
        let original = CtTuple {
            src_addr: 1,
            dst_addr: 2,
            src_port: 4000,
            dst_port: 8088,
            proto: proto::UDP,
            _pad: [0; 3],
        };
        let o = CtEntry {
            nat_addr: 3,
            nat_port: 53,
            kind: KIND_DNAT,
            direction: DIR_ORIGINAL,
            last_seen_ns: now - 500 * S,
            ..CtEntry::default()
        };
        let reply = o.reverse_tuple(&original);
        let r = CtEntry {
            nat_addr: 2,
            nat_port: 8088,
            kind: KIND_DNAT,
            direction: DIR_REPLY,
            last_seen_ns: now - S,
            ..CtEntry::default()
        };
        let flows = conntrack::pair_flows([(original, o), (reply, r)]);
        assert_eq!(flows.len(), 1);
        let flow = flows[0];
        assert!(flow.is_complete());
        assert!(
            !expired(flow.proto(), flow.tcp_state(), flow.last_seen_ns(), now, &t),
            "the reply half is fresh, so the flow lives"
        );
        assert_eq!(flow.keys(), [original, reply]);
    }
}
