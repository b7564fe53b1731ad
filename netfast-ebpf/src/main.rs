//! netfast's datapath: port-forward DNAT and masquerade SNAT on the uplink, with
//! conntrack in BPF maps. Entry points stay thin; the logic is in `uplink`.
#![no_std]
#![no_main]

mod conntrack;
mod csum;
mod maps;
mod nat;
mod parse;
mod uplink;

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use netfast_common::{Counter, proto};

use crate::{
    maps::count,
    nat::Rewriter,
    parse::{IP_CSUM_OFF, Packet, Unparsed, parse, ptr_at},
};

#[classifier]
pub fn uplink_ingress_tc(ctx: TcContext) -> i32 {
    let parsed = parse_skb(&ctx);
    tc_verdict(uplink::ingress(&mut SkbRewriter { ctx: &ctx }, parsed))
}

#[classifier]
pub fn uplink_egress_tc(ctx: TcContext) -> i32 {
    let parsed = parse_skb(&ctx);
    tc_verdict(uplink::egress(&mut SkbRewriter { ctx: &ctx }, parsed))
}

#[xdp]
pub fn uplink_ingress_xdp(ctx: XdpContext) -> u32 {
    let mut frame = XdpRewriter {
        data: ctx.data(),
        data_end: ctx.data_end(),
    };
    let parsed = parse(frame.data, frame.data_end);
    let counter = uplink::ingress(&mut frame, parsed);
    count(counter);
    if counter.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[inline(always)]
fn tc_verdict(counter: Counter) -> i32 {
    count(counter);
    if counter.is_drop() {
        TC_ACT_SHOT as i32
    } else {
        TC_ACT_OK as i32
    }
}

/// Enough for Ethernet, the longest IPv4 header, and a TCP header.
const MAX_HEADERS: u32 = 14 + 60 + 20;

/// An skb's headers may sit partly in paged data; pull them into the linear part once
/// before calling the packet truncated.
#[inline(always)]
fn parse_skb(ctx: &TcContext) -> Result<Packet, Unparsed> {
    let parsed = parse(ctx.data(), ctx.data_end());
    match parsed {
        Err(Unparsed {
            reason: Counter::DropTruncated,
            ..
        }) if (ctx.len() as usize) > ctx.data_end() - ctx.data() => {
            let want = if ctx.len() < MAX_HEADERS {
                ctx.len()
            } else {
                MAX_HEADERS
            };
            if ctx.pull_data(want).is_err() {
                return parsed;
            }
            parse(ctx.data(), ctx.data_end())
        }
        parsed => parsed,
    }
}

/// TC: the kernel's checksum helpers, which also keep CHECKSUM_PARTIAL and
/// CHECKSUM_COMPLETE skbs right (veth traffic is mostly CHECKSUM_PARTIAL).
struct SkbRewriter<'a> {
    ctx: &'a TcContext,
}

impl SkbRewriter<'_> {
    #[inline(always)]
    fn l4_flags(pkt: &Packet, size: u64) -> u64 {
        // A UDP checksum that the update would make 0 is written as 0xffff instead.
        let mangled = if pkt.key.proto == proto::UDP {
            u64::from(BPF_F_MARK_MANGLED_0)
        } else {
            0
        };
        size | mangled
    }
}

impl Rewriter for SkbRewriter<'_> {
    #[inline(always)]
    fn rewrite_addr(
        &mut self,
        pkt: &Packet,
        addr_off: usize,
        old: u32,
        new: u32,
    ) -> Result<(), ()> {
        if pkt.l4_csum_off != 0 && pkt.has_pseudo_header() {
            let flags = Self::l4_flags(pkt, 4) | u64::from(BPF_F_PSEUDO_HDR);
            self.ctx
                .l4_csum_replace(pkt.l4_csum_off, old.into(), new.into(), flags)
                .map_err(|_| ())?;
        }
        self.ctx
            .l3_csum_replace(IP_CSUM_OFF, old.into(), new.into(), 4)
            .map_err(|_| ())?;
        self.ctx.store(addr_off, &new, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn rewrite_port(
        &mut self,
        pkt: &Packet,
        port_off: usize,
        old: u16,
        new: u16,
    ) -> Result<(), ()> {
        if pkt.l4_csum_off != 0 {
            self.ctx
                .l4_csum_replace(
                    pkt.l4_csum_off,
                    old.into(),
                    new.into(),
                    Self::l4_flags(pkt, 2),
                )
                .map_err(|_| ())?;
        }
        self.ctx.store(port_off, &new, 0).map_err(|_| ())
    }
}

/// XDP: direct packet writes with RFC 1624 checksum updates. Frames from a real NIC
/// carry full checksums, so plain incremental updates are right here.
struct XdpRewriter {
    data: usize,
    data_end: usize,
}

impl XdpRewriter {
    #[inline(always)]
    fn field<T>(&self, offset: usize) -> Result<*mut T, ()> {
        ptr_at::<T>(self.data, self.data_end, offset).ok_or(())
    }

    #[inline(always)]
    fn update_l4_csum(&self, pkt: &Packet, update: impl FnOnce(u16) -> u16) -> Result<(), ()> {
        if pkt.l4_csum_off == 0 {
            return Ok(());
        }
        let check = self.field::<u16>(pkt.l4_csum_off)?;
        // SAFETY: bounds-checked by `field`; unaligned because options shift L4.
        unsafe {
            let mut value = update(check.read_unaligned());
            if value == 0 && pkt.key.proto == proto::UDP {
                value = 0xffff;
            }
            check.write_unaligned(value);
        }
        Ok(())
    }
}

impl Rewriter for XdpRewriter {
    #[inline(always)]
    fn rewrite_addr(
        &mut self,
        pkt: &Packet,
        addr_off: usize,
        old: u32,
        new: u32,
    ) -> Result<(), ()> {
        if pkt.has_pseudo_header() {
            self.update_l4_csum(pkt, |check| csum::replace4(check, old, new))?;
        }
        let ip_check = self.field::<u16>(IP_CSUM_OFF)?;
        let addr = self.field::<u32>(addr_off)?;
        // SAFETY: bounds-checked by `field`.
        unsafe {
            ip_check.write_unaligned(csum::replace4(ip_check.read_unaligned(), old, new));
            addr.write_unaligned(new);
        }
        Ok(())
    }

    #[inline(always)]
    fn rewrite_port(
        &mut self,
        pkt: &Packet,
        port_off: usize,
        old: u16,
        new: u16,
    ) -> Result<(), ()> {
        self.update_l4_csum(pkt, |check| csum::replace2(check, old, new))?;
        let port = self.field::<u16>(port_off)?;
        // SAFETY: bounds-checked by `field`.
        unsafe { port.write_unaligned(new) };
        Ok(())
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
