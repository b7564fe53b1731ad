//! TCP tracking, shared by the datapath (which records segments and checks RSTs) and
//! userspace (which derives states for the GC and `ct list`).
//!
//! Each `CONNTRACK` half records what its own direction sent: the flags, the highest
//! sequence number reached, the highest acknowledgement and the largest window. A
//! flow's state follows from its two halves ([`tcp_state`]), so no packet ever writes
//! the other direction's entry. The states and their timeouts are nf_conntrack's
//! (`nf_conntrack_proto_tcp.c`).

use crate::CtEntry;

/// TCP flag bits as they sit in the header's flags byte (and in `CtEntry::tcp_flags`).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

use flags::{ACK, FIN, RST, SYN};

/// The window a side is assumed to offer when it never advertised one (raw, bytes):
/// the largest unscaled TCP window.
pub const MAX_RAW_WINDOW: u32 = 65_535;

/// The TCP facts of one segment that tracking needs. Sequence numbers are host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub flags: u8,
    pub seq: u32,
    /// `seq` plus the payload length, plus one for SYN and one for FIN: the sequence
    /// number after this segment (nf_conntrack's `end`).
    pub seq_end: u32,
    pub ack: u32,
    /// The raw window field (unscaled).
    pub window: u16,
}

/// A TCP flow's state, nf_conntrack's names and meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// No TCP segment recorded yet (an entry rebuilt before its first packet).
    None,
    /// The original side sent SYN; nothing came back yet.
    SynSent,
    /// The reply side answered SYN-ACK; the original side has not acknowledged it.
    SynRecv,
    /// The handshake completed, or the flow was picked up mid-stream.
    Established,
    /// One side sent FIN, not acknowledged yet.
    FinWait,
    /// One side's FIN was acknowledged; the other side may still send (half-close).
    CloseWait,
    /// Both sides sent FIN; the last one is not acknowledged yet.
    LastAck,
    /// Both FINs were acknowledged.
    TimeWait,
    /// An RST (in window) was seen.
    Close,
}

impl TcpState {
    /// The name operators see, in conntrack's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }

    /// Whether a new SYN from the original side starts a fresh flow on this tuple, as
    /// nf_conntrack reopens a TIME_WAIT or CLOSE connection (`nf_conntrack_tcp_packet`,
    /// "Attempt to reopen a closed/aborted connection").
    pub const fn is_closed(self) -> bool {
        matches!(self, TcpState::TimeWait | TcpState::Close)
    }

    /// Whether the flow is assured, nf_conntrack's IPS_ASSURED for TCP: the handshake
    /// completed (or the flow was picked up mid-stream). Only assured flows enter the
    /// main conntrack table, where nothing unassured can push them out.
    pub const fn is_assured(self) -> bool {
        !matches!(self, TcpState::None | TcpState::SynSent | TcpState::SynRecv)
    }
}

/// `a` comes after `b` in sequence space (RFC 9293 3.4, modulo 2^32).
#[inline(always)]
pub const fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl CtEntry {
    /// Records a segment this half's direction sent: the flags, the sequence number
    /// reached, the acknowledgement and the window, each only when it moves forward
    /// (a retransmission or a reordered segment changes nothing). Fields are written
    /// only when they change, so most hits leave them alone.
    #[inline(always)]
    pub fn record_tcp(&mut self, seg: &Segment) {
        let seen = self.tcp_flags != 0;
        if !seen || after(seg.seq_end, self.tcp_seq_end) {
            self.tcp_seq_end = seg.seq_end;
        }
        if seg.flags & ACK != 0 && (self.tcp_flags & ACK == 0 || after(seg.ack, self.tcp_ack)) {
            self.tcp_ack = seg.ack;
        }
        if seg.window > self.tcp_window {
            self.tcp_window = seg.window;
        }
        if seg.flags & !self.tcp_flags != 0 {
            self.tcp_flags |= seg.flags;
        }
    }

    /// Whether this half's FIN was acknowledged by the other half's direction.
    #[inline(always)]
    const fn fin_acked_by(&self, other: &CtEntry) -> bool {
        self.tcp_flags & FIN != 0
            && other.tcp_flags & ACK != 0
            && !after(self.tcp_seq_end, other.tcp_ack)
    }
}

/// The TCP state of a flow from what each direction recorded. First match wins:
/// 1. An RST either way (only in-window RSTs are recorded): `Close`.
/// 2. FIN both ways: `TimeWait` once both are acknowledged, else `LastAck`.
/// 3. FIN one way: `CloseWait` once acknowledged, else `FinWait`.
/// 4. SYN-ACK from the reply side: `Established` once the original side acknowledged
///    anything, else `SynRecv`.
/// 5. SYN from the original side only: `SynSent`.
/// 6. ACKs without any SYN (picked up mid-stream, as nf_conntrack's loose mode does):
///    `Established`.
/// 7. Nothing: `None`.
#[inline(always)]
pub const fn tcp_state(original: &CtEntry, reply: &CtEntry) -> TcpState {
    let (o, r) = (original.tcp_flags, reply.tcp_flags);
    let all = o | r;
    if all & RST != 0 {
        return TcpState::Close;
    }
    let o_acked = original.fin_acked_by(reply);
    let r_acked = reply.fin_acked_by(original);
    if o & FIN != 0 && r & FIN != 0 {
        return if o_acked && r_acked {
            TcpState::TimeWait
        } else {
            TcpState::LastAck
        };
    }
    if all & FIN != 0 {
        return if o_acked || r_acked {
            TcpState::CloseWait
        } else {
            TcpState::FinWait
        };
    }
    if r & SYN != 0 {
        return if o & ACK != 0 {
            TcpState::Established
        } else {
            TcpState::SynRecv
        };
    }
    if o & SYN != 0 {
        return TcpState::SynSent;
    }
    if all & ACK != 0 {
        TcpState::Established
    } else {
        TcpState::None
    }
}

/// Whether an RST from `sender` may close the flow, given what `receiver` (the other
/// half) recorded. nf_conntrack checks every segment against both windows
/// (`tcp_in_window`); netfast checks RSTs only, the segments that end a flow:
/// - the receiver acknowledged something: the RST's sequence number lies between its
///   last acknowledgement and what the sender has sent, widened by the receiver's
///   largest raw window on both sides (`[ack - W, max(sent, ack) + W]`). A real RST
///   carries the sender's next sequence number, which lies in there; a blind one with
///   a random sequence number hits it with odds of about 2W in 2^32.
/// - the receiver sent only its SYN: the RST must acknowledge that SYN (RFC 9293
///   3.10.7.3, SYN-SENT).
/// - the receiver sent nothing (or its half was rebuilt): the RST's sequence number
///   lies within `MAX_RAW_WINDOW` of what the sender has sent.
#[inline(always)]
pub const fn rst_in_window(sender: &CtEntry, receiver: &CtEntry, seg: &Segment) -> bool {
    if receiver.tcp_flags & ACK != 0 {
        let window = if receiver.tcp_window == 0 {
            1
        } else {
            receiver.tcp_window as u32
        };
        let low = receiver.tcp_ack.wrapping_sub(window);
        let top = if sender.tcp_flags != 0 && after(sender.tcp_seq_end, receiver.tcp_ack) {
            sender.tcp_seq_end
        } else {
            receiver.tcp_ack
        };
        let high = top.wrapping_add(window);
        return seg.seq.wrapping_sub(low) <= high.wrapping_sub(low);
    }
    if receiver.tcp_flags & SYN != 0 {
        return seg.flags & ACK != 0 && seg.ack == receiver.tcp_seq_end;
    }
    if sender.tcp_flags == 0 {
        return true;
    }
    let low = sender.tcp_seq_end.wrapping_sub(MAX_RAW_WINDOW);
    seg.seq.wrapping_sub(low) <= 2 * MAX_RAW_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half() -> CtEntry {
        CtEntry::default()
    }

    fn seg(flags: u8, seq: u32, len: u32, ack: u32) -> Segment {
        let extra = u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0);
        Segment {
            flags,
            seq,
            seq_end: seq.wrapping_add(len + extra),
            ack,
            window: 64_240,
        }
    }

    /// A client (original) and server (reply) through the handshake.
    fn established() -> (CtEntry, CtEntry) {
        let (mut c, mut s) = (half(), half());
        c.record_tcp(&seg(SYN, 1000, 0, 0));
        assert_eq!(tcp_state(&c, &s), TcpState::SynSent);
        s.record_tcp(&seg(SYN | ACK, 500_000, 0, 1001));
        assert_eq!(tcp_state(&c, &s), TcpState::SynRecv);
        c.record_tcp(&seg(ACK, 1001, 0, 500_001));
        assert_eq!(tcp_state(&c, &s), TcpState::Established);
        (c, s)
    }

    #[test]
    fn half_close_waits_for_the_other_side() {
        let (mut c, mut s) = established();
        c.record_tcp(&seg(ACK, 1001, 3, 500_001));
        c.record_tcp(&seg(FIN | ACK, 1004, 0, 500_001));
        assert_eq!(tcp_state(&c, &s), TcpState::FinWait);
        s.record_tcp(&seg(ACK, 500_001, 0, 1005));
        assert_eq!(tcp_state(&c, &s), TcpState::CloseWait);
        // The server still answers, later: still CLOSE_WAIT.
        s.record_tcp(&seg(ACK, 500_001, 100, 1005));
        c.record_tcp(&seg(ACK, 1005, 0, 500_101));
        assert_eq!(tcp_state(&c, &s), TcpState::CloseWait);
        s.record_tcp(&seg(FIN | ACK, 500_101, 0, 1005));
        assert_eq!(tcp_state(&c, &s), TcpState::LastAck);
        c.record_tcp(&seg(ACK, 1005, 0, 500_102));
        assert_eq!(tcp_state(&c, &s), TcpState::TimeWait);
        assert!(tcp_state(&c, &s).is_closed());
    }

    #[test]
    fn retransmissions_do_not_move_tracking_back() {
        let (mut c, _) = established();
        c.record_tcp(&seg(ACK, 1001, 100, 500_001));
        c.record_tcp(&seg(ACK, 1001, 50, 500_001));
        assert_eq!(c.tcp_seq_end, 1101);
        // Across the 2^32 wrap.
        let mut w = half();
        w.record_tcp(&seg(SYN, u32::MAX - 10, 0, 0));
        w.record_tcp(&seg(ACK, u32::MAX - 9, 20, 7));
        assert_eq!(w.tcp_seq_end, 10);
    }

    #[test]
    fn rst_window() {
        let (c, s) = established();
        // The server resets: its next sequence number, and around it.
        for seq in [500_001, 500_001 + 64_240, 500_001 - 64_240] {
            assert!(rst_in_window(&s, &c, &seg(RST, seq, 0, 0)), "{seq}");
        }
        for seq in [500_001 + 64_241, 500_001 - 64_241, 500_001 ^ 0x8000_0000, 0] {
            assert!(!rst_in_window(&s, &c, &seg(RST, seq, 0, 0)), "{seq}");
        }
        // An RST answering a bare SYN must acknowledge it.
        let mut syn = half();
        syn.record_tcp(&seg(SYN, 1000, 0, 0));
        assert!(rst_in_window(&half(), &syn, &seg(RST | ACK, 0, 0, 1001)));
        assert!(!rst_in_window(&half(), &syn, &seg(RST | ACK, 0, 0, 1002)));
        assert!(!rst_in_window(&half(), &syn, &seg(RST, 0, 0, 1001)));
    }

    #[test]
    fn rst_closes_and_syn_reopens_only_closed_flows() {
        let (mut c, s) = established();
        assert!(!tcp_state(&c, &s).is_closed());
        c.record_tcp(&seg(RST, 1001, 0, 0));
        assert_eq!(tcp_state(&c, &s), TcpState::Close);
        assert!(tcp_state(&c, &s).is_closed());
    }

    #[test]
    fn mid_stream_pickup_is_established() {
        let (mut c, s) = (half(), half());
        c.record_tcp(&seg(ACK, 77, 10, 99));
        assert_eq!(tcp_state(&c, &s), TcpState::Established);
        assert!(tcp_state(&c, &s).is_assured());
        assert_eq!(tcp_state(&half(), &half()), TcpState::None);
    }
}
