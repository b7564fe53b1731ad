//! netfast's datapath: published-port DNAT and masquerade SNAT on the uplink, hairpin
//! on each container's host-side veth, with conntrack in BPF maps, and host-local
//! access to published ports through cgroup socket programs. Entry points stay thin;
//! the logic is in `uplink`, `container` and `host_local`.
#![no_std]
#![no_main]

mod conntrack;
mod container;
mod csum;
mod fast_path;
mod fragment;
mod host_local;
mod icmp;
mod maps;
mod nat;
mod parse;
mod route;
mod sockets;
mod uplink;

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT,
        bpf_fib_lookup as FibParams, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1, xdp_action, xdp_md,
    },
    helpers::{
        bpf_fib_lookup, bpf_redirect, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp,
        bpf_xdp_adjust_meta, bpf_xdp_store_bytes,
    },
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use netfast_common::{
    Counter,
    names::{
        CALL_CONTAINER_HAIRPIN, FAST_PATH_MARK, XDP_DECIDED_MARK, XDP_DECIDED_TO_CONTAINER_MARK,
    },
    proto,
};

/// `skb->pkt_type` values (include/uapi/linux/if_packet.h).
const PACKET_BROADCAST: u32 = 1;
const PACKET_MULTICAST: u32 = 2;

use crate::{
    maps::{CONTAINER_CALLS, count},
    nat::Rewriter,
    parse::{FRAG_NONE, IP_CSUM_OFF, IP_OFF, IP_PROTO_OFF, Packet, Unparsed, parse, ptr_at},
    route::{FIB_PARAMS_LEN, Routes},
    sockets::HostSockets,
};

#[classifier]
pub fn uplink_ingress_tc(ctx: TcContext) -> i32 {
    match xdp_mark(&ctx) {
        // XDP already decided on this frame and counted it.
        Some(XDP_DECIDED_TO_CONTAINER_MARK) => return toward_container(&ctx),
        Some(_) => return TC_ACT_OK as i32,
        None => {}
    }
    let parsed = parse_skb(&ctx);
    let counter = uplink::ingress(&mut SkbRewriter { ctx: &ctx }, parsed);
    count(counter);
    if counter.is_drop() {
        return TC_ACT_SHOT as i32;
    }
    if counter.is_toward_container() {
        return toward_container(&ctx);
    }
    TC_ACT_OK as i32
}

/// A frame translated toward a container: into it on the fast path when that is on,
/// else on through the host's routing.
#[inline(always)]
fn toward_container(ctx: &TcContext) -> i32 {
    match uplink::config() {
        Some(config) if config.fast_path != 0 => fast_path::to_container(ctx),
        _ => TC_ACT_OK as i32,
    }
}

#[classifier]
pub fn uplink_egress_tc(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the context the kernel passed in; mark and ingress_ifindex are
    // readable in tc. Only a forwarded frame (one that came in on an interface) can be
    // the fast path's: a host socket's SO_MARK with the same value is no bypass.
    let (mark, arrived) = unsafe { ((*ctx.skb.skb).mark, (*ctx.skb.skb).ingress_ifindex) };
    if mark == FAST_PATH_MARK && arrived != 0 {
        // Translated by the container-side fast path, which redirected it here.
        ctx.set_mark(0);
        count(Counter::PassFastPathTranslated);
        return TC_ACT_OK as i32;
    }
    let parsed = parse_skb(&ctx);
    tc_verdict(uplink::egress(&mut SkbRewriter { ctx: &ctx }, parsed))
}

/// On tcx ingress of each container's host-side veth: everything that container sends.
/// The fast path toward the uplink first; every packet it does not take goes on to
/// hairpin (`container_hairpin_tc`), by a tail call: each program is verified on a
/// budget of its own.
#[classifier]
pub fn container_ingress_tc(ctx: TcContext) -> i32 {
    if let Some(config) = uplink::config().filter(|config| config.fast_path != 0)
        && let Some(verdict) = fast_path::to_uplink(&ctx, config)
    {
        return verdict;
    }
    // SAFETY: a tail call either does not return or fails (an empty slot) and leaves
    // this program going on, which then passes the packet.
    unsafe { CONTAINER_CALLS.tail_call(&ctx, CALL_CONTAINER_HAIRPIN) };
    count(Counter::PassHairpinUnavailable);
    TC_ACT_OK as i32
}

/// Hairpin (`container.rs`), reached only from `container_ingress_tc`'s tail call.
#[classifier]
pub fn container_hairpin_tc(ctx: TcContext) -> i32 {
    let mut pkt = Packet::EMPTY;
    let parsed = parse_container(&ctx, &mut pkt);
    let decision = container::ingress(&mut SkbRewriter { ctx: &ctx }, parsed, &mut pkt);
    count(decision.counter);
    if decision.counter.is_redirect() {
        // SAFETY: no preconditions; with flags 0 the helper returns TC_ACT_REDIRECT,
        // and the kernel sends the frame out of `ifindex` (the endpoint's host-side
        // veth, so into the container) once the program returns.
        return unsafe { bpf_redirect(decision.ifindex, 0) } as i32;
    }
    if decision.counter.is_drop() {
        TC_ACT_SHOT as i32
    } else {
        TC_ACT_OK as i32
    }
}

/// `parse_skb` into `pkt`, in a BPF subprogram of its own, so that parsing's
/// temporaries do not stay in the container program's frame while its conntrack
/// subprograms run (the verifier adds frames up along a call chain, to 512 bytes).
#[inline(never)]
fn parse_container(ctx: &TcContext, pkt: &mut Packet) -> container::Parsed {
    match parse_skb(ctx) {
        Ok(parsed) => {
            *pkt = parsed;
            container::Parsed::Ipv4
        }
        Err(unparsed) if unparsed.reason == Counter::PassNotIpv4 => container::Parsed::NotIpv4,
        Err(_) => container::Parsed::Other,
    }
}

#[xdp]
pub fn uplink_ingress_xdp(ctx: XdpContext) -> u32 {
    // The room for the decided mark is taken first, before any decision: a frame XDP
    // cannot mark is left to the tc program behind it whole, untranslated. Marking
    // after a translation could fail too late: tc would then take the translated frame
    // for one routed straight to a container (`DropRoutedToContainer`).
    if !reserve_mark(&ctx) {
        count(Counter::XdpMarkFailed);
        return xdp_action::XDP_PASS;
    }
    let mut frame = XdpRewriter {
        ctx: ctx.ctx,
        data: ctx.data(),
        data_end: ctx.data_end(),
    };
    let parsed = parse(frame.data, frame.data_end);
    // Fragments keep the normal path (`fast_path::to_container`).
    let whole = matches!(&parsed, Ok(pkt) if pkt.fragment == FRAG_NONE);
    let counter = match &parsed {
        // XDP cannot see skb->ip_summed: a frame that may carry a partial checksum goes
        // to the tc ingress program behind XDP, whose helpers handle both kinds.
        Ok(pkt) if pkt.l4_csum_is_partial() => Counter::PassXdpCsumPartial,
        _ => uplink::ingress(&mut frame, parsed),
    };
    count(counter);
    if counter.is_drop() {
        release_mark(&ctx);
        return xdp_action::XDP_DROP;
    }
    if counter == Counter::PassXdpCsumPartial {
        release_mark(&ctx);
    } else if counter.is_toward_container() && whole {
        write_mark(&ctx, XDP_DECIDED_TO_CONTAINER_MARK);
    } else {
        write_mark(&ctx, XDP_DECIDED_MARK);
    }
    xdp_action::XDP_PASS
}

/// A cgroup sock_addr program's answer: 1 lets the call proceed. netfast never
/// refuses a socket call (0 would fail it with EPERM); recvmsg4's verifier demands 1.
const SOCK_PROCEED: i32 = 1;

#[inline(always)]
fn sock_verdict(counter: Counter) -> i32 {
    count(counter);
    SOCK_PROCEED
}

#[cgroup_sock_addr(connect4)]
pub fn host_connect4(ctx: SockAddrContext) -> i32 {
    sock_verdict(host_local::forward(ctx.sock_addr))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn host_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_verdict(host_local::forward(ctx.sock_addr))
}

#[cgroup_sock_addr(recvmsg4)]
pub fn host_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock_verdict(host_local::reverse(ctx.sock_addr))
}

#[cgroup_sock_addr(getpeername4)]
pub fn host_getpeername4(ctx: SockAddrContext) -> i32 {
    sock_verdict(host_local::reverse(ctx.sock_addr))
}

/// Puts 4 bytes of XDP metadata in front of the frame, which the skb keeps for the tc
/// ingress program behind XDP; false when the driver has no room for metadata. Every
/// packet pointer is stale after `bpf_xdp_adjust_meta`, so this comes before parsing.
#[inline(always)]
fn reserve_mark(ctx: &XdpContext) -> bool {
    let len = size_of::<u32>() as i32;
    // SAFETY: the helper checks the room it takes from the headroom itself.
    unsafe { bpf_xdp_adjust_meta(ctx.ctx, -len) == 0 }
}

/// Writes `mark` into the metadata `reserve_mark` made room for.
#[inline(always)]
fn write_mark(ctx: &XdpContext, mark: u32) {
    let (meta, data) = (ctx.metadata(), ctx.data());
    // The verifier allows writes to metadata only below this exact comparison.
    if meta + size_of::<u32>() > data {
        count(Counter::XdpMarkFailed);
        return;
    }
    // SAFETY: bounds-checked against `data` just above.
    unsafe { (meta as *mut u32).write_unaligned(mark) };
}

/// Gives back the room `reserve_mark` took, for a frame XDP leaves to tc or drops: it
/// carries no metadata then, as before XDP ran. Should the kernel refuse, the room
/// is zeroed instead, since the headroom may hold an earlier frame's mark.
#[inline(always)]
fn release_mark(ctx: &XdpContext) {
    let len = size_of::<u32>() as i32;
    // SAFETY: the helper checks that the metadata it gives back exists.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, len) } != 0 {
        write_mark(ctx, 0);
    }
}

/// The mark of the XDP program in front of this tc program, when it decided on the
/// frame: `XDP_DECIDED_MARK`, or `XDP_DECIDED_TO_CONTAINER_MARK`.
#[inline(always)]
fn xdp_mark(ctx: &TcContext) -> Option<u32> {
    // SAFETY: `skb` is the context the kernel passed in; data_meta is readable in tc.
    let meta = unsafe { (*ctx.skb.skb).data_meta } as usize;
    if meta + size_of::<u32>() > ctx.data() {
        return None;
    }
    // SAFETY: bounds-checked against `data` just above.
    let mark = unsafe { (meta as *const u32).read_unaligned() };
    (mark == XDP_DECIDED_MARK || mark == XDP_DECIDED_TO_CONTAINER_MARK).then_some(mark)
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

/// Enough for Ethernet, the longest IPv4 header, and a TCP header; or for an ICMP
/// error, its header, the quoted IPv4 header at its longest and a quoted TCP header.
const MAX_HEADERS: u32 = 14 + 60 + 8 + 60 + 20;

/// An skb's headers may sit partly in paged data: pull what parsing needs into the
/// linear part first (one parse, not two: the verifier's stack budget is 512 bytes).
#[inline(always)]
pub(crate) fn parse_skb(ctx: &TcContext) -> Result<Packet, Unparsed> {
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if ctx.len() > linear {
        let want = headers_needed(ctx.data(), ctx.data_end()).min(ctx.len());
        // A failed pull leaves the headers short, and parsing then counts the packet
        // as truncated: the error is not lost.
        if linear < want {
            let _short_on_failure = ctx.pull_data(want);
        }
    }
    parse(ctx.data(), ctx.data_end())
}

/// How many bytes from the frame's start parsing reads: Ethernet, the IPv4 header
/// with its options and a TCP header's worth of L4, or for ICMP `MAX_HEADERS` (an
/// error quotes a packet). `MAX_HEADERS` when the IPv4 header itself is not linear.
#[inline(always)]
fn headers_needed(data: usize, data_end: usize) -> u32 {
    let Some(vihl) = ptr_at::<u8>(data, data_end, IP_OFF) else {
        return MAX_HEADERS;
    };
    let Some(ip_proto) = ptr_at::<u8>(data, data_end, IP_PROTO_OFF) else {
        return MAX_HEADERS;
    };
    // SAFETY: both bounds-checked by `ptr_at`.
    let (vihl, ip_proto) = unsafe { (*vihl, *ip_proto) };
    if ip_proto == proto::ICMP {
        return MAX_HEADERS;
    }
    (IP_OFF as u32) + u32::from(vihl & 0x0f) * 4 + 20
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
                .l4_csum_replace(usize::from(pkt.l4_csum_off), old.into(), new.into(), flags)
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
                    usize::from(pkt.l4_csum_off),
                    old.into(),
                    new.into(),
                    Self::l4_flags(pkt, 2),
                )
                .map_err(|_| ())?;
        }
        self.ctx.store(port_off, &new, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn store_u16(&mut self, off: usize, value: u16) -> Result<(), ()> {
        self.ctx.store(off, &value, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn store_u32(&mut self, off: usize, value: u32) -> Result<(), ()> {
        self.ctx.store(off, &value, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        (self.ctx.data(), self.ctx.data_end())
    }
}

impl HostSockets for SkbRewriter<'_> {
    #[inline(always)]
    fn holds(&self, proto: u8, remote: (u32, u16), local: (u32, u16)) -> bool {
        // The tuple of a packet from `remote` arriving at `local`, as the stack would
        // look its socket up.
        let mut tuple = bpf_sock_tuple {
            __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
                ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                    saddr: remote.0,
                    daddr: local.0,
                    sport: remote.1,
                    dport: local.1,
                },
            },
        };
        let size = size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
        let skb = self.ctx.skb.skb.cast();
        let netns = BPF_F_CURRENT_NETNS as u64;
        // SAFETY: `skb` is this program's context and `tuple` a valid IPv4 tuple of
        // `size` bytes; a socket found is released below, as the verifier demands.
        let sk = unsafe {
            match proto {
                proto::TCP => bpf_skc_lookup_tcp(skb, &mut tuple, size, netns, 0),
                proto::UDP => bpf_sk_lookup_udp(skb, &mut tuple, size, netns, 0),
                _ => return false,
            }
        };
        if sk.is_null() {
            return false;
        }
        // SAFETY: `sk` was acquired by the lookup above and is released once.
        unsafe { bpf_sk_release(sk.cast()) };
        true
    }
}

impl Routes for SkbRewriter<'_> {
    #[inline(always)]
    fn fib_lookup(&self, params: &mut FibParams, flags: u32) -> i64 {
        // SAFETY: `skb` is this program's context and `params` a whole, initialised
        // struct of `FIB_PARAMS_LEN` bytes.
        unsafe { bpf_fib_lookup(self.ctx.skb.skb.cast(), params, FIB_PARAMS_LEN, flags) }
    }

    #[inline(always)]
    fn ifindexes(&self) -> (u32, u32) {
        // SAFETY: `skb` is the context the kernel passed in; both fields are readable
        // in tc.
        unsafe {
            (
                (*self.ctx.skb.skb).ingress_ifindex,
                (*self.ctx.skb.skb).ifindex,
            )
        }
    }

    #[inline(always)]
    fn to_group_mac(&self) -> bool {
        // SAFETY: `skb` is the context the kernel passed in; pkt_type is readable in
        // tc. PACKET_BROADCAST and PACKET_MULTICAST, from `eth_type_trans`.
        let pkt_type = unsafe { (*self.ctx.skb.skb).pkt_type };
        pkt_type == PACKET_BROADCAST || pkt_type == PACKET_MULTICAST
    }
}

/// XDP: direct packet writes with RFC 1624 checksum updates. Frames from a real NIC
/// carry full checksums, so plain incremental updates are right here; frames whose
/// checksum may be partial never get here (`PassXdpCsumPartial`).
struct XdpRewriter {
    ctx: *mut xdp_md,
    data: usize,
    data_end: usize,
}

impl XdpRewriter {
    /// Writes through `bpf_xdp_store_bytes`, which checks the bounds itself: the
    /// ICMP-error path writes several fields at offsets from one variable base, and
    /// LLVM folds direct writes there into pointers the verifier cannot follow.
    #[inline(always)]
    fn store<T>(&mut self, off: usize, mut value: T) -> Result<(), ()> {
        // SAFETY: the helper bounds-checks `off` and the length against the frame.
        let ret = unsafe {
            bpf_xdp_store_bytes(
                self.ctx,
                off as u32,
                (&mut value as *mut T).cast(),
                size_of::<T>() as u32,
            )
        };
        if ret == 0 { Ok(()) } else { Err(()) }
    }

    #[inline(always)]
    fn field<T>(&self, offset: usize) -> Result<*mut T, ()> {
        ptr_at::<T>(self.data, self.data_end, offset).ok_or(())
    }

    #[inline(always)]
    fn update_l4_csum(&self, pkt: &Packet, update: impl FnOnce(u16) -> u16) -> Result<(), ()> {
        if pkt.l4_csum_off == 0 {
            return Ok(());
        }
        let check = self.field::<u16>(usize::from(pkt.l4_csum_off))?;
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

    #[inline(always)]
    fn store_u16(&mut self, off: usize, value: u16) -> Result<(), ()> {
        self.store(off, value)
    }

    #[inline(always)]
    fn store_u32(&mut self, off: usize, value: u32) -> Result<(), ()> {
        self.store(off, value)
    }

    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        (self.data, self.data_end)
    }
}

impl Routes for XdpRewriter {
    #[inline(always)]
    fn fib_lookup(&self, params: &mut FibParams, flags: u32) -> i64 {
        // SAFETY: `ctx` is this program's context and `params` a whole, initialised
        // struct of `FIB_PARAMS_LEN` bytes.
        unsafe { bpf_fib_lookup(self.ctx.cast(), params, FIB_PARAMS_LEN, flags) }
    }

    #[inline(always)]
    fn ifindexes(&self) -> (u32, u32) {
        // SAFETY: `ctx` is the context the kernel passed in; ingress_ifindex is
        // readable in XDP.
        let ifindex = unsafe { (*self.ctx).ingress_ifindex };
        (ifindex, ifindex)
    }

    #[inline(always)]
    fn to_group_mac(&self) -> bool {
        // Two bytes, not one: LLVM turns a one-byte bound at offset 0 into
        // `data >= data_end`, which gives the verifier no range to read with.
        let Ok(head) = self.field::<[u8; 2]>(0) else {
            return false;
        };
        // SAFETY: bounds-checked by `field`. The I/G bit of the destination address.
        unsafe { (*head)[0] & 1 != 0 }
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
