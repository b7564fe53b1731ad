//! Conntrack garbage collection: removes flows that have been idle longer than their
//! protocol's (or TCP state's) timeout, both halves together.
//!
//! A pass reads every `CONNTRACK` entry once, joins the entries into flows
//! ([`conntrack::pair_flows`]), and decides each flow with [`expired`], a pure function.
//! A flow's idle time counts from the newer `last_seen_ns` of its two halves, and its
//! TCP state comes from the flags of both ([`conntrack::tcp_state`]). Right before
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
use netfast_common::{FlowKey, FlowState, names::MAP_CONNTRACK, proto};

use crate::{
    conntrack::{self, Flow, TcpState},
    datapath::{self, DatapathError},
};

/// Idle timeouts per protocol and TCP state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the handshake (or picked up mid-stream).
    pub tcp_established: Duration,
    /// TCP before the handshake completed: SYN sent, SYN-ACK seen, or no flag yet.
    pub tcp_syn: Duration,
    /// TCP once a FIN or an RST was seen.
    pub tcp_closing: Duration,
    /// UDP, and any other protocol that ever gets an entry.
    pub udp: Duration,
    /// ICMP echo.
    pub icmp: Duration,
}

impl Default for Timeouts {
    /// nf_conntrack's spirit, shorter for closing TCP: 6 h, 60 s, 10 s, 60 s, 30 s.
    fn default() -> Self {
        Timeouts {
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_syn: Duration::from_secs(60),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(60),
            icmp: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// The timeout of a flow of protocol `proto`; `tcp` is its state when TCP.
    pub fn for_flow(&self, proto: u8, tcp: Option<TcpState>) -> Duration {
        match (proto, tcp) {
            (proto::TCP, Some(TcpState::Established)) => self.tcp_established,
            (proto::TCP, Some(TcpState::FinWait | TcpState::Closing | TcpState::Closed)) => {
                self.tcp_closing
            }
            (proto::TCP, _) => self.tcp_syn,
            (proto::ICMP, _) => self.icmp,
            _ => self.udp,
        }
    }
}

/// Whether a flow last seen at `last_seen_ns` is expired at `now_ns` (both
/// `CLOCK_MONOTONIC`, as `bpf_ktime_get_ns`). A `last_seen_ns` after `now_ns` (a packet
/// that arrived after the clock was read) is idle 0. Idle exactly the timeout is kept.
pub fn expired(
    proto: u8,
    tcp: Option<TcpState>,
    last_seen_ns: u64,
    now_ns: u64,
    timeouts: &Timeouts,
) -> bool {
    let idle = Duration::from_nanos(now_ns.saturating_sub(last_seen_ns));
    idle > timeouts.for_flow(proto, tcp)
}

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

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scanned {} entries, {} flows expired, {} entries deleted, {} revived, in {:.1} ms",
            self.scanned,
            self.expired,
            self.deleted,
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

/// Opens the instance's pinned `CONNTRACK` for [`collect`].
pub fn open_conntrack(instance: &str) -> Result<HashMap<MapData, FlowKey, FlowState>, GcError> {
    let map = datapath::open_pinned_map(instance, MAP_CONNTRACK)?;
    HashMap::try_from(map).map_err(|source| GcError::Map {
        what: "open",
        source,
    })
}

/// One GC pass over `map` with the clock read now.
pub fn collect<T>(
    map: &mut HashMap<T, FlowKey, FlowState>,
    timeouts: &Timeouts,
) -> Result<GcReport, GcError>
where
    T: Borrow<MapData> + BorrowMut<MapData>,
{
    collect_at(map, conntrack::monotonic_ns(), timeouts)
}

/// One GC pass over `map`, taking `now_ns` as the current `CLOCK_MONOTONIC` time.
pub fn collect_at<T>(
    map: &mut HashMap<T, FlowKey, FlowState>,
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
fn moved_since_scan<T>(map: &HashMap<T, FlowKey, FlowState>, flow: &Flow) -> Result<bool, GcError>
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
    use crate::conntrack::tcp_flags::{ACK, FIN, RST, SYN};
    use crate::conntrack::tcp_state;

    const S: u64 = 1_000_000_000;

    fn short() -> Timeouts {
        Timeouts {
            tcp_established: Duration::from_secs(100),
            tcp_syn: Duration::from_secs(20),
            tcp_closing: Duration::from_secs(5),
            udp: Duration::from_secs(30),
            icmp: Duration::from_secs(10),
        }
    }

    #[test]
    fn timeout_follows_protocol_and_tcp_state() {
        let t = short();
        let tcp = |o, r| t.for_flow(proto::TCP, Some(tcp_state(o, r))).as_secs();
        assert_eq!(tcp(SYN | ACK, SYN | ACK), 100, "handshake done");
        assert_eq!(tcp(ACK, ACK), 100, "picked up mid-stream");
        assert_eq!(tcp(SYN, 0), 20, "SYN sent");
        assert_eq!(tcp(SYN, SYN | ACK), 20, "SYN-ACK, final ACK not seen");
        assert_eq!(tcp(0, 0), 20, "no flag yet");
        assert_eq!(tcp(SYN | ACK | FIN, SYN | ACK), 5, "one FIN");
        assert_eq!(tcp(SYN | ACK | FIN, SYN | ACK | FIN), 5, "both FIN");
        assert_eq!(tcp(SYN, RST | ACK), 5, "refused");
        assert_eq!(tcp(SYN | ACK | RST, SYN | ACK), 5, "reset");
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
        let closing = Some(TcpState::Closed);
        assert!(expired(proto::TCP, closing, now - 6 * S, now, &t));
        assert!(!expired(proto::ICMP, None, now - 10 * S, now, &t));
        assert!(expired(proto::ICMP, None, now - 11 * S, now, &t));
    }

    #[test]
    fn a_pair_is_as_idle_as_its_newer_half() {
        use netfast_common::flow::{DIR_ORIGINAL, DIR_REPLY, KIND_DNAT};
        let t = short();
        let now = 1_000 * S;
        let original = FlowKey {
            src_addr: 1,
            dst_addr: 2,
            src_port: 4000,
            dst_port: 8088,
            proto: proto::UDP,
            _pad: [0; 3],
        };
        let o = FlowState {
            nat_addr: 3,
            nat_port: 53,
            kind: KIND_DNAT,
            direction: DIR_ORIGINAL,
            last_seen_ns: now - 500 * S,
            ..FlowState::default()
        };
        let reply = o.partner_key(&original);
        let r = FlowState {
            nat_addr: 2,
            nat_port: 8088,
            kind: KIND_DNAT,
            direction: DIR_REPLY,
            last_seen_ns: now - S,
            ..FlowState::default()
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
