//! ICMP errors about a translated flow (RFC 5508 section 4, what nf_nat does for
//! RELATED packets): the error is matched through the packet it quotes, and both
//! headers are translated, so the host that sent the quoted packet recognises it.
//!
//! - Ingress, an error from outside: the outer destination and the quoted source go
//!   back to the container's (masquerade) or backend's (published port) address.
//! - Egress, an error from a container, a backend or the host: the outer source and
//!   the quoted destination become the uplink's or published address.
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
    parse::{IP_DST_OFF, IP_SRC_OFF, IPV4_CSUM, IPV4_DST, IPV4_SRC, Packet, Quoted},
};

/// Translates an ICMP error whose quoted packet belongs to a flow translated on
/// `side`; any other error is passed untouched.
#[inline(always)]
pub fn translate_error<R: Rewriter>(
    r: &mut R,
    pkt: &Packet,
    quoted: &Quoted,
    side: Side,
) -> Counter {
    // The quoted packet went the other way: its reverse tuple is the flow's entry for
    // packets crossing on this side, which says what to write.
    let Some(rewrite) = conntrack::related(&quoted.key.reversed(), side) else {
        return Counter::PassIcmpErrorUntracked;
    };
    let (outer_off, outer_old, inner_off, inner_old, port_off, port_old, outcome) = match side {
        Side::Ingress => (
            IP_DST_OFF,
            pkt.key.dst_addr,
            usize::from(quoted.ip_off) + IPV4_SRC,
            quoted.key.src_addr,
            usize::from(quoted.src_port_off),
            quoted.key.src_port,
            Counter::IcmpErrorIn,
        ),
        Side::Egress => (
            IP_SRC_OFF,
            pkt.key.src_addr,
            usize::from(quoted.ip_off) + IPV4_DST,
            quoted.key.dst_addr,
            usize::from(quoted.dst_port_off),
            quoted.key.dst_port,
            Counter::IcmpErrorOut,
        ),
    };
    let (addr, port) = rewrite;
    let quote = rewrite_quote(
        r,
        pkt,
        quoted,
        (inner_off, inner_old, addr),
        (port_off, port_old, port),
    );
    if quote.is_err() {
        return Counter::DropRewriteFailed;
    }
    // The outer header is ICMP: no pseudo-header, only the IP checksum.
    if outer_old != addr && r.rewrite_addr(pkt, outer_off, outer_old, addr).is_err() {
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
    (addr_off, old_addr, new_addr): (usize, u32, u32),
    (port_off, old_port, new_port): (usize, u16, u16),
) -> Result<(), ()> {
    let mut icmp = pkt.l4_csum;
    let ip_csum = csum::replace4(quoted.ip_csum, old_addr, new_addr);
    icmp = csum::replace4(icmp, old_addr, new_addr);
    icmp = csum::replace2(icmp, quoted.ip_csum, ip_csum);
    icmp = csum::replace2(icmp, old_port, new_port);
    if quoted.l4_csum_off != 0 {
        let mut l4 = quoted.l4_csum;
        if quoted.key.proto != proto::ICMP {
            l4 = csum::replace4(l4, old_addr, new_addr);
        }
        l4 = csum::replace2(l4, old_port, new_port);
        // A UDP checksum that comes out 0 is sent as all ones (RFC 768).
        if l4 == 0 && quoted.key.proto == proto::UDP {
            l4 = 0xffff;
        }
        icmp = csum::replace2(icmp, quoted.l4_csum, l4);
        r.store_u16(usize::from(quoted.l4_csum_off), l4)?;
    }
    r.store_u32(addr_off, new_addr)?;
    r.store_u16(usize::from(quoted.ip_off) + IPV4_CSUM, ip_csum)?;
    r.store_u16(port_off, new_port)?;
    r.store_u16(usize::from(pkt.l4_csum_off), icmp)
}
