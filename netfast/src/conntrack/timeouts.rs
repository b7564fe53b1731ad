//! How long an idle flow lives: per protocol and, for TCP, per state. The GC and
//! `ct list`'s EXPIRES column read them; the config sets them (`[conntrack]`).

use std::time::Duration;

use netfast_common::proto;

use super::TcpState;

/// Idle timeouts per protocol and TCP state. The TCP ones are nf_conntrack's
/// (`nf_conntrack_tcp_timeout_*`), one per state of [`TcpState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: Duration,
    pub tcp_syn_recv: Duration,
    pub tcp_established: Duration,
    pub tcp_fin_wait: Duration,
    pub tcp_close_wait: Duration,
    pub tcp_last_ack: Duration,
    pub tcp_time_wait: Duration,
    pub tcp_close: Duration,
    /// UDP, and any other protocol that ever gets an entry.
    pub udp: Duration,
    /// ICMP echo.
    pub icmp: Duration,
}

impl Default for Timeouts {
    /// nf_conntrack's defaults: TCP 120 s, 60 s, 5 days, 120 s, 60 s, 30 s, 120 s,
    /// 10 s from SYN_SENT to CLOSE; UDP 60 s (its "stream" timeout is 120 s); ICMP 30 s.
    fn default() -> Self {
        let secs = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: secs(120),
            tcp_syn_recv: secs(60),
            tcp_established: secs(5 * 24 * 3600),
            tcp_fin_wait: secs(120),
            tcp_close_wait: secs(60),
            tcp_last_ack: secs(30),
            tcp_time_wait: secs(120),
            tcp_close: secs(10),
            udp: secs(60),
            icmp: secs(30),
        }
    }
}

impl Timeouts {
    /// The timeout of a TCP flow in `state`; a flow with no segment recorded yet is
    /// timed as SYN_SENT.
    pub fn for_tcp(&self, state: TcpState) -> Duration {
        match state {
            TcpState::None | TcpState::SynSent => self.tcp_syn_sent,
            TcpState::SynRecv => self.tcp_syn_recv,
            TcpState::Established => self.tcp_established,
            TcpState::FinWait => self.tcp_fin_wait,
            TcpState::CloseWait => self.tcp_close_wait,
            TcpState::LastAck => self.tcp_last_ack,
            TcpState::TimeWait => self.tcp_time_wait,
            TcpState::Close => self.tcp_close,
        }
    }

    /// The timeout of a flow of protocol `proto`; `tcp` is its state when TCP.
    pub fn for_flow(&self, proto: u8, tcp: Option<TcpState>) -> Duration {
        match (proto, tcp) {
            (proto::TCP, Some(state)) => self.for_tcp(state),
            (proto::TCP, None) => self.tcp_syn_sent,
            (proto::ICMP, _) => self.icmp,
            _ => self.udp,
        }
    }
}

/// Whether a flow last seen at `last_seen_ns` is expired at `now_ns` (both
/// `CLOCK_MONOTONIC`; the datapath's coarse stamps lag it by at most one tick). A `last_seen_ns` after `now_ns` (a packet
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
