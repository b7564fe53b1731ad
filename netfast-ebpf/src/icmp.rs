//! ICMP errors about a translated flow (RFC 5508 section 4, what nf_nat does for
//! RELATED packets): the error is matched through the packet it quotes, and both
//! headers are translated, so the host that sent the quoted packet recognises it.
//!
//! - Ingress, an error from outside: the outer destination and the quoted source go
//!   back to the container's (masquerade) or backend's (published port) address.
//! - Egress, an error from a container, a backend or the host: the outer source and
//!   the quoted destination become the uplink's or published address.
//! - An error about a routed flow (`allow_direct_routing`) is counted like these and
//!   left as it is: the flow translates nothing.
//!
//! Checksums: the quoted IPv4 header checksum is updated for the address; the
//! quoted L4 checksum is updated for the address (TCP/UDP pseudo-header) and the port,
//! as nf_nat's `l4proto_manip_pkt` does, and only where the quote holds it: always
//! for UDP unless it is 0, for TCP only when the whole 20-byte header is quoted,
//! always for ICMP echo. The ICMP checksum covers all of these and is updated for
//! every word that changes; an error that arrived with a bad checksum keeps it bad
//! (nf_nat recomputes it from scratch instead).

use netfast_common::{Counter, proto};

use crate::{
    conntrack::{self, Side},
    csum,
    nat::Rewriter,
    parse::{IP_DST_OFF, IP_SRC_OFF, IPV4_CSUM, IPV4_DST, IPV4_SRC, Packet, Quoted, parse_quoted},
};

/// One field to overwrite: where it is, what it holds, what it gets.
struct Write<T> {
    off: usize,
    old: T,
    new: T,
}

/// Translates an ICMP error whose quoted packet belongs to a flow translated on
/// `side`; any other error is passed untouched.
#[inline(always)]
pub fn translate_error<R: Rewriter>(r: &mut R, pkt: &Packet, side: Side) -> Counter {
    let (data, data_end) = r.bounds();
    let Some(quoted) = parse_quoted(data, data_end, pkt) else {
        return Counter::PassIcmpErrorUntracked;
    };
    // An error goes back to the quoted packet's sender; one addressed elsewhere is
    // forged or misrouted, and nf_conntrack refuses it too ("outer daddr != inner
    // saddr", `nf_conntrack_inet_error`).
    if pkt.key.dst_addr != quoted.key.src_addr {
        return Counter::PassIcmpErrorUntracked;
    }
    // The quoted packet went the other way: its reverse tuple is the flow's entry for
    // packets crossing on this side, which says what to write.
    let Some((addr, port)) = conntrack::related(&quoted.key.reversed(), side) else {
        return Counter::PassIcmpErrorUntracked;
    };
    let ip_off = usize::from(quoted.ip_off);
    // The outer header takes the field a flow's own packet would have rewritten on
    // this side; the quote, which travelled the other way, takes the mirror one.
    let (outer, quoted_addr, quoted_port, outcome) = match side {
        Side::Ingress => (
            Write {
                off: IP_DST_OFF,
                old: pkt.key.dst_addr,
                new: addr,
            },
            Write {
                off: ip_off + IPV4_SRC,
                old: quoted.key.src_addr,
                new: addr,
            },
            Write {
                off: usize::from(quoted.src_port_off),
                old: quoted.key.src_port,
                new: port,
            },
            Counter::IcmpErrorIn,
        ),
        Side::Egress => (
            Write {
                off: IP_SRC_OFF,
                old: pkt.key.src_addr,
                new: addr,
            },
            Write {
                off: ip_off + IPV4_DST,
                old: quoted.key.dst_addr,
                new: addr,
            },
            Write {
                off: usize::from(quoted.dst_port_off),
                old: quoted.key.dst_port,
                new: port,
            },
            Counter::IcmpErrorOut,
        ),
    };
    // A routed flow translates nothing (`ct::KIND_ROUTED`): its errors keep every
    // byte, checksums included, as they came.
    if quoted_addr.old == quoted_addr.new
        && quoted_port.old == quoted_port.new
        && outer.old == outer.new
    {
        return outcome;
    }
    if rewrite_quote(r, pkt, &quoted, &quoted_addr, &quoted_port).is_err() {
        return Counter::DropRewriteFailed;
    }
    // The outer header is ICMP: no pseudo-header, only the IP checksum.
    if outer.old != outer.new
        && r.rewrite_addr(pkt, outer.off, outer.old, outer.new)
            .is_err()
    {
        return Counter::DropRewriteFailed;
    }
    outcome
}

/// Rewrites the quoted address and port, with the quoted IP and L4 checksums and the
/// ICMP checksum that covers them all. Every value is computed from what parsing read,
/// then stored; no helper is needed, and no earlier write is read back.
#[inline(always)]
fn rewrite_quote<R: Rewriter>(
    r: &mut R,
    pkt: &Packet,
    quoted: &Quoted,
    addr: &Write<u32>,
    port: &Write<u16>,
) -> Result<(), ()> {
    let mut icmp = pkt.l4_csum;
    let ip_csum = csum::replace4(quoted.ip_csum, addr.old, addr.new);
    icmp = csum::replace4(icmp, addr.old, addr.new);
    icmp = csum::replace2(icmp, quoted.ip_csum, ip_csum);
    icmp = csum::replace2(icmp, port.old, port.new);
    if quoted.l4_csum_off != 0 {
        let mut l4 = quoted.l4_csum;
        if quoted.key.proto != proto::ICMP {
            l4 = csum::replace4(l4, addr.old, addr.new);
        }
        l4 = csum::replace2(l4, port.old, port.new);
        // A UDP checksum that comes out 0 is sent as all ones (RFC 768).
        if l4 == 0 && quoted.key.proto == proto::UDP {
            l4 = 0xffff;
        }
        icmp = csum::replace2(icmp, quoted.l4_csum, l4);
        r.store_u16(usize::from(quoted.l4_csum_off), l4)?;
    }
    r.store_u32(addr.off, addr.new)?;
    r.store_u16(usize::from(quoted.ip_off) + IPV4_CSUM, ip_csum)?;
    r.store_u16(port.off, port.new)?;
    r.store_u16(usize::from(pkt.l4_csum_off), icmp)
}
