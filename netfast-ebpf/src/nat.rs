//! The translation itself, written once over a `Rewriter` that TC and XDP implement
//! in their own way (kernel checksum helpers vs. RFC 1624 arithmetic).

use netfast_common::Counter;

use crate::{
    conntrack::Rewrite,
    parse::{IP_DST_OFF, IP_SRC_OFF, Packet},
};

/// Writes one header field and fixes every checksum that covers it.
pub trait Rewriter {
    /// Rewrites the IPv4 address at `addr_off`: IP checksum, and the L4 checksum
    /// through the pseudo-header for TCP and UDP.
    fn rewrite_addr(&mut self, pkt: &Packet, addr_off: usize, old: u32, new: u32)
    -> Result<(), ()>;
    /// Rewrites the port (or ICMP echo identifier) at `port_off` and the L4 checksum.
    fn rewrite_port(&mut self, pkt: &Packet, port_off: usize, old: u16, new: u16)
    -> Result<(), ()>;
    /// Writes raw bytes (read natively) and nothing else: the caller keeps every
    /// checksum that covers them right itself.
    fn store_u16(&mut self, off: usize, value: u16) -> Result<(), ()>;
    /// The packet's bounds now (`data`, `data_end`), for a second look at its bytes.
    fn bounds(&self) -> (usize, usize);
    fn store_u32(&mut self, off: usize, value: u32) -> Result<(), ()>;
}

/// Applies `state` to the packet: the destination or the source side, address and
/// port (a later fragment has no port to rewrite: its first fragment had it).
#[inline(always)]
pub fn translate<R: Rewriter>(r: &mut R, pkt: &Packet, state: &Rewrite) -> Result<(), Counter> {
    let (addr_off, old_addr, port_off, old_port) = if state.rewrites_destination() {
        (
            IP_DST_OFF,
            pkt.key.dst_addr,
            usize::from(pkt.dst_port_off),
            pkt.key.dst_port,
        )
    } else {
        (
            IP_SRC_OFF,
            pkt.key.src_addr,
            usize::from(pkt.src_port_off),
            pkt.key.src_port,
        )
    };
    let failed = |()| Counter::DropRewriteFailed;
    if old_addr != state.nat_addr {
        r.rewrite_addr(pkt, addr_off, old_addr, state.nat_addr)
            .map_err(failed)?;
    }
    if port_off != 0 && old_port != state.nat_port {
        r.rewrite_port(pkt, port_off, old_port, state.nat_port)
            .map_err(failed)?;
    }
    Ok(())
}
