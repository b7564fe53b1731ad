//! The invariants every frame must keep, whatever it is. They name counters by
//! `Counter::name()`, not by variant, so they hold as the datapath gains decisions:
//! before ICMP errors and fragments were translated, and after.

use netfast_common::Counter;

use crate::{
    fuzz::frame::{self, Ipv4},
    harness::{Prog, SUBNET_ADDR, SUBNET_MASK, Verdict},
    packet::{ETH_LEN, ETHERTYPE_IPV4},
};

/// The decisions that rewrite the frame: what iptables' NAT would have translated.
pub const TRANSLATIONS: [&str; 9] = [
    "dnat_new",
    "dnat_established",
    "dnat_reply",
    "snat_new",
    "snat_established",
    "snat_reply",
    "icmp_error_in",
    "icmp_error_out",
    "fragment_translated",
];

/// The XDP decision that leaves a CHECKSUM_PARTIAL frame to tc. While the datapath
/// lacks it, XDP still rewrites such frames as if their checksum were full (issue 7,
/// part 3), so the invariant about them is only checked once it exists.
const XDP_CSUM_PARTIAL: &str = "pass_xdp_csum_partial";

pub fn is_translation(counter: Counter) -> bool {
    TRANSLATIONS.contains(&counter.name())
}

/// A decision that passes the frame as it came: the `pass_*` ones, and those of
/// routed flows (`allow_direct_routing`), which are tracked but never translated.
pub fn is_untouched_pass(counter: Counter) -> bool {
    let name = counter.name();
    name.starts_with("pass_") || name.starts_with("routed_")
}

pub fn counter_named(name: &str) -> Option<Counter> {
    Counter::ALL.iter().copied().find(|c| c.name() == name)
}

/// One broken invariant: which one, and what was seen.
#[derive(Clone, Debug)]
pub struct Problem {
    pub invariant: &'static str,
    pub detail: String,
}

/// What one run of one frame did, and what it broke.
#[derive(Debug, Default)]
pub struct Checked {
    /// The decision counter that moved, when exactly one did.
    pub decision: Option<Counter>,
    pub verdict: Option<Verdict>,
    pub problems: Vec<Problem>,
    /// A translation that rewrote bytes past the IPv4 total length, in the frame's
    /// trailing bytes; its L4 and quoted checksums were not checked.
    pub past_total_length: bool,
}

impl Checked {
    fn fail(&mut self, invariant: &'static str, detail: impl Into<String>) {
        self.problems.push(Problem {
            invariant,
            detail: detail.into(),
        });
    }
}

/// Checks one program run: `input` went in, the program returned `return_value` and
/// left `out`, and `moved` are the counters that moved, by how much.
pub fn check(
    prog: Prog,
    input: &[u8],
    return_value: u32,
    out: &[u8],
    moved: &[(Counter, u64)],
) -> Checked {
    let mut checked = Checked {
        verdict: prog.decode(return_value),
        ..Checked::default()
    };
    if checked.verdict.is_none() {
        checked.fail(
            "verdict",
            format!("returned {return_value}, which is neither pass nor drop"),
        );
    }
    // A redirect is the fast path's or hairpin's, and says so in a counter.
    let redirected = moved.iter().any(|(c, _)| {
        c.is_redirect() || matches!(c, Counter::FastPathToContainer | Counter::FastPathToUplink)
    });
    if checked.verdict == Some(Verdict::Redirect) && !redirected {
        checked.fail(
            "verdict",
            "redirected without a fast-path or hairpin counter".to_owned(),
        );
    }
    check_decision(&mut checked, moved);
    if let (Some(decision), Some(verdict)) = (checked.decision, checked.verdict)
        && decision.is_drop() != (verdict == Verdict::Drop)
    {
        checked.fail(
            "verdict",
            format!(
                "verdict {verdict:?} disagrees with decision {}",
                decision.name()
            ),
        );
    }
    if checked.verdict == Some(Verdict::Pass) {
        check_passed(&mut checked, prog, input, out);
    }
    checked
}

/// Exactly one decision counter moved, by one; event counters may move too.
fn check_decision(checked: &mut Checked, moved: &[(Counter, u64)]) {
    // XDP's `pass_xdp_csum_partial` is an event (tc behind it decides on the frame),
    // but it is the XDP run's one outcome.
    let decisions: Vec<_> = moved
        .iter()
        .filter(|(c, _)| c.is_decision() || *c == Counter::PassXdpCsumPartial)
        .collect();
    match decisions.as_slice() {
        [(counter, 1)] => checked.decision = Some(*counter),
        _ => checked.fail(
            "one decision",
            format!(
                "expected exactly one decision counter to move by 1, got {}",
                describe_moved(moved)
            ),
        ),
    }
}

pub fn describe_moved(moved: &[(Counter, u64)]) -> String {
    if moved.is_empty() {
        return "none".into();
    }
    moved
        .iter()
        .map(|(c, n)| format!("{} +{n}", c.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_passed(checked: &mut Checked, prog: Prog, input: &[u8], out: &[u8]) {
    if out.len() != input.len() {
        checked.fail(
            "length kept",
            format!("{} bytes in, {} bytes out", input.len(), out.len()),
        );
    }
    if prog == Prog::EgressTc {
        check_no_private_source(checked, out);
    }
    match checked.decision {
        Some(decision) if is_untouched_pass(decision) && out != input => checked.fail(
            "untouched pass",
            format!("{} passed the frame changed", decision.name()),
        ),
        Some(decision) if is_translation(decision) => check_translated(checked, prog, input, out),
        _ => {}
    }
}

/// No frame leaves egress with an IPv4 source inside the masquerade subnet. Read
/// raw, without trusting IHL or version: whatever carries EtherType IPv4 counts.
/// The datapath's two exceptions cannot occur here: the fuzz runs with
/// `allow_direct_routing` off (no routed flow, whose replies leave as the container
/// sent them) and in a namespace where no subnet address is the host's own
/// (`pass_from_host`).
fn check_no_private_source(checked: &mut Checked, out: &[u8]) {
    if out.len() < ETH_LEN + 16 || u16::from_be_bytes([out[12], out[13]]) != ETHERTYPE_IPV4 {
        return;
    }
    let src = u32::from_be_bytes([out[26], out[27], out[28], out[29]]);
    if src & u32::from(SUBNET_MASK) == u32::from(SUBNET_ADDR) {
        checked.fail(
            "no private source on egress",
            format!("passed with source {}", std::net::Ipv4Addr::from(src)),
        );
    }
}

/// A translated frame: only addresses, ports and checksums changed, and every
/// checksum that was valid going in is valid coming out, recomputed from scratch.
fn check_translated(checked: &mut Checked, prog: Prog, input: &[u8], out: &[u8]) {
    let Some(ip_in) = frame::frame_ipv4(input) else {
        checked.fail(
            "translated frame has its IPv4 header",
            format!(
                "translated a frame without a whole IPv4 header (README: headers shorter \
                 than they claim are drop_truncated): {}",
                why_not_ipv4(input)
            ),
        );
        return;
    };
    let Some(ip_out) = frame::frame_ipv4(out) else {
        checked.fail(
            "translated frame has its IPv4 header",
            format!(
                "the translation broke the IPv4 header: {}",
                why_not_ipv4(out)
            ),
        );
        return;
    };
    check_rewrites_only_nat_fields(checked, input, out, &ip_in);
    if frame::ip_header_ok(input, &ip_in) && !frame::ip_header_ok(out, &ip_out) {
        checked.fail(
            "IPv4 checksum",
            "the IPv4 header checksum no longer verifies",
        );
    }
    if frame::past_total_length(input, out, &ip_in) {
        // The datapath parses by IHL to the end of the frame, not to the total length
        // (like the IP stack, which trims the trailing bytes and drops such packets
        // before any socket sees them). Checksums over the datagram cannot account for
        // bytes outside it, so they are not checked; the run counts these frames.
        checked.past_total_length = true;
        return;
    }
    if frame::l4_ok(input, &ip_in) == Some(true) && frame::l4_ok(out, &ip_out) != Some(true) {
        checked.fail("L4 checksum", "the L4 checksum no longer verifies");
    }
    check_quote(checked, input, out, &ip_in, &ip_out);
    check_udp_zero(checked, input, out, &ip_in, &ip_out);
    if ip_in.is_first_fragment() {
        check_first_fragment(checked, input, out, &ip_in, &ip_out);
    }
    if prog == Prog::IngressXdp && counter_named(XDP_CSUM_PARTIAL).is_some() {
        check_partial_csum(checked, input, out, &ip_in, &ip_out);
    }
}

/// What keeps `frame` from holding a whole IPv4 header.
fn why_not_ipv4(frame: &[u8]) -> String {
    let Some(&vihl) = frame.get(ETH_LEN) else {
        return format!("{} bytes, no IPv4 header at all", frame.len());
    };
    format!(
        "version {}, IHL {} ({} bytes), {} bytes after the Ethernet header",
        vihl >> 4,
        vihl & 0x0f,
        usize::from(vihl & 0x0f) * 4,
        frame.len() - ETH_LEN
    )
}

/// NAT writes addresses, ports (or echo identifiers) and the checksums over them, in
/// the outer headers and in an ICMP error's quoted ones; nothing else.
fn check_rewrites_only_nat_fields(checked: &mut Checked, input: &[u8], out: &[u8], ip: &Ipv4) {
    let allowed = frame::rewritable(input, ip);
    let stray: Vec<usize> = (0..input.len().min(out.len()))
        .filter(|&i| input[i] != out[i] && !allowed.iter().any(|r| r.contains(&i)))
        .collect();
    if !stray.is_empty() {
        checked.fail(
            "only NAT fields rewritten",
            format!("bytes changed outside addresses, ports and checksums at offsets {stray:?}"),
        );
    }
}

/// An ICMP error's quoted IPv4 header checksum stays valid.
fn check_quote(checked: &mut Checked, input: &[u8], out: &[u8], ip_in: &Ipv4, ip_out: &Ipv4) {
    let Some(quoted_in) = frame::quoted_ipv4(input, ip_in) else {
        return;
    };
    if !frame::ip_header_ok(input, &quoted_in) {
        return;
    }
    match frame::quoted_ipv4(out, ip_out) {
        Some(quoted_out) if frame::ip_header_ok(out, &quoted_out) => {}
        Some(_) => checked.fail(
            "quoted IPv4 checksum",
            "the quoted IPv4 header checksum no longer verifies",
        ),
        None => checked.fail("quoted IPv4 checksum", "the quoted IPv4 header is gone"),
    }
}

/// A UDP checksum of 0 means "none" and stays 0, outside and in a quote.
fn check_udp_zero(checked: &mut Checked, input: &[u8], out: &[u8], ip_in: &Ipv4, ip_out: &Ipv4) {
    let zero = |bytes: &[u8], at: usize| bytes[at..at + 2] == [0, 0];
    if ip_in.proto == crate::packet::PROTO_UDP
        && let Some(at) = frame::l4_csum_offset(input, ip_in)
        && zero(input, at)
        && !zero(out, at)
    {
        checked.fail("UDP checksum 0 stays 0", "the UDP checksum 0 was rewritten");
    }
    if let Some(at) = frame::quoted_udp_csum(input, ip_in)
        && zero(input, at)
        && frame::quoted_udp_csum(out, ip_out) == Some(at)
        && !zero(out, at)
    {
        checked.fail(
            "UDP checksum 0 stays 0",
            "the quoted UDP checksum 0 was rewritten",
        );
    }
}

/// A first fragment's L4 checksum covers bytes in later fragments, so it cannot be
/// verified here; what NAT changes in the addresses and ports it must cancel in the
/// checksum field, so the sum over what this frame carries keeps its value.
fn check_first_fragment(
    checked: &mut Checked,
    input: &[u8],
    out: &[u8],
    ip_in: &Ipv4,
    ip_out: &Ipv4,
) {
    let Some(at) = frame::l4_csum_offset(input, ip_in) else {
        return;
    };
    if ip_in.proto == crate::packet::PROTO_UDP && input[at..at + 2] == [0, 0] {
        return;
    }
    if frame::l4_sum_mod(input, ip_in) != frame::l4_sum_mod(out, ip_out) {
        checked.fail(
            "first fragment L4 checksum",
            "the first fragment's L4 checksum field does not cancel the rewrite",
        );
    }
}

/// An XDP rewrite of a CHECKSUM_PARTIAL frame must leave the pseudo-header sum of the
/// new addresses in the field (or XDP must leave the frame to tc, untouched).
fn check_partial_csum(
    checked: &mut Checked,
    input: &[u8],
    out: &[u8],
    ip_in: &Ipv4,
    ip_out: &Ipv4,
) {
    if !frame::is_partial_csum(input, ip_in) {
        return;
    }
    let Some(at) = frame::l4_csum_offset(out, ip_out) else {
        return;
    };
    let want = frame::partial_csum(ip_out, ip_out.segment(out).len());
    if out[at..at + 2] != want.to_be_bytes() {
        checked.fail(
            "XDP partial checksum",
            "XDP rewrote a CHECKSUM_PARTIAL frame as if its checksum were full",
        );
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::packet::{ETH_LEN, Packet, tcp_flags::SYN};

    fn syn() -> Packet {
        Packet::tcp(
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 26), 40_000),
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 48), 8088),
            SYN,
        )
    }

    fn names(checked: &Checked) -> Vec<&'static str> {
        checked.problems.iter().map(|p| p.invariant).collect()
    }

    const TC_PASS: u32 = 0;

    #[test]
    fn a_correct_dnat_passes() {
        let input = syn().bytes();
        let out = syn()
            .with_dst(SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 102), 80))
            .bytes();
        let checked = check(
            Prog::IngressTc,
            &input,
            TC_PASS,
            &out,
            &[(Counter::DnatNew, 1)],
        );
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    }

    #[test]
    fn a_stale_checksum_is_caught() {
        let input = syn().bytes();
        let mut out = input.clone();
        out[33] = 99; // destination address, checksums left alone
        let checked = check(
            Prog::IngressTc,
            &input,
            TC_PASS,
            &out,
            &[(Counter::DnatNew, 1)],
        );
        assert_eq!(names(&checked), ["IPv4 checksum", "L4 checksum"]);
    }

    #[test]
    fn a_changed_miss_and_a_payload_write_are_caught() {
        let input = syn().payload(b"data").bytes();
        let mut out = input.clone();
        *out.last_mut().expect("a payload") ^= 1;
        let pass = counter_named("pass_no_match").expect("pass_no_match exists");
        let checked = check(Prog::IngressTc, &input, TC_PASS, &out, &[(pass, 1)]);
        assert_eq!(names(&checked), ["untouched pass"]);
        let checked = check(
            Prog::IngressTc,
            &input,
            TC_PASS,
            &out,
            &[(Counter::DnatNew, 1)],
        );
        assert!(names(&checked).contains(&"only NAT fields rewritten"));
    }

    #[test]
    fn counters_and_verdicts_are_checked() {
        let input = syn().bytes();
        let checked = check(Prog::IngressTc, &input, TC_PASS, &input, &[]);
        assert_eq!(names(&checked), ["one decision"]);
        let checked = check(Prog::IngressTc, &input, 7, &input, &[(Counter::DnatNew, 1)]);
        assert_eq!(names(&checked), ["verdict"]);
        let drop = counter_named("drop_truncated").expect("drop_truncated exists");
        let checked = check(Prog::IngressTc, &input, TC_PASS, &input, &[(drop, 1)]);
        assert_eq!(names(&checked), ["verdict"]);
    }

    /// A first fragment's L4 checksum cannot be verified, but it must cancel the
    /// rewrite: a DNAT that leaves it alone is caught, one that fixes it is not.
    #[test]
    fn a_first_fragment_checksum_left_behind_is_caught() {
        let backend = SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 102), 80);
        let first = |pkt: Packet| {
            let mut frame = pkt.payload(&[9; 64]).bytes();
            frame.truncate(ETH_LEN + 20 + 40);
            frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&60u16.to_be_bytes());
            frame[ETH_LEN + 6] = 0x20; // MF, offset 0
            frame::fix_checksums(&mut frame);
            frame
        };
        let input = first(syn());
        let right = first(syn().with_dst(backend));
        let mut wrong = right.clone();
        wrong[50..52].copy_from_slice(&input[50..52]);
        let moved = [(Counter::DnatNew, 1)];
        let checked = check(Prog::IngressTc, &input, TC_PASS, &right, &moved);
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        let checked = check(Prog::IngressTc, &input, TC_PASS, &wrong, &moved);
        assert_eq!(names(&checked), ["first fragment L4 checksum"]);
    }

    /// XDP rewriting a partial checksum field as if it were full is caught; the field
    /// left holding the new pseudo-header sum is right.
    #[test]
    fn an_xdp_rewrite_of_a_partial_checksum_is_caught() {
        if counter_named(XDP_CSUM_PARTIAL).is_none() {
            return;
        }
        let backend = SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 102), 8088);
        let partial = |pkt: Packet| {
            let mut frame = pkt.bytes();
            let ip = frame::frame_ipv4(&frame).expect("IPv4");
            let at = frame::l4_csum_offset(&frame, &ip).expect("a TCP checksum");
            let sum = frame::partial_csum(&ip, ip.segment(&frame).len());
            frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
            frame
        };
        let input = partial(syn());
        let right = partial(syn().with_dst(backend));
        let mut wrong = syn().with_dst(backend).bytes();
        wrong[50..52].copy_from_slice(&input[50..52]);
        const XDP_PASS: u32 = 2;
        let moved = [(Counter::DnatNew, 1)];
        let checked = check(Prog::IngressXdp, &input, XDP_PASS, &right, &moved);
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        let checked = check(Prog::IngressXdp, &input, XDP_PASS, &wrong, &moved);
        assert!(names(&checked).contains(&"XDP partial checksum"));
    }

    #[test]
    fn a_private_source_leaving_egress_is_caught() {
        let input = Packet::udp(
            SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 7), 1),
            SocketAddrV4::new(Ipv4Addr::new(8, 8, 8, 8), 53),
        )
        .bytes();
        let pass = counter_named("pass_no_match").expect("pass_no_match exists");
        let checked = check(Prog::EgressTc, &input, TC_PASS, &input, &[(pass, 1)]);
        assert_eq!(names(&checked), ["no private source on egress"]);
    }
}
