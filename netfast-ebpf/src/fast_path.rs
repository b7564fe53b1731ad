//! The fast path (`[datapath] fast_path`, on by default): a translated packet goes
//! straight between the uplink and a container's veth, past the bridge, the host's
//! routing and its netfilter hooks.
//!
//! - Toward a container (`uplink_ingress_tc`, and the same program behind XDP): after
//!   a DNAT to a backend or a reply to a masqueraded flow, `bpf_redirect_peer` hands
//!   the frame to the peer of the container's host-side veth (its `ENDPOINTS` entry),
//!   which receives it in the container's namespace as if it came off the wire there.
//! - Toward the uplink (`container_ingress_tc`): when the kernel's route for a packet
//!   as the container sent it (`bpf_fib_lookup` from its veth) leads out of the
//!   uplink to a next hop whose MAC is known, the flow's translation (a masqueraded
//!   flow, a published backend's reply, or none for a routed flow's reply) is done on
//!   the veth and `bpf_redirect`
//!   sends the frame out of the uplink, with the route's MACs. The uplink's egress
//!   program then passes it by its mark (`FAST_PATH_MARK`).
//!
//! Both take what the host's forwarding would take: the TTL goes down by one, and a
//! packet whose TTL would expire on the hop, or that exceeds the MTU of the link it
//! would leave by, takes the normal path instead, so that the host answers with the
//! ICMP error; each fallback is counted by reason. New masqueraded flows open on the
//! normal path (the uplink's egress creates them); their later packets take the fast
//! path. What the fast path skips on purpose: the host's FORWARD rules never see its
//! packets, as with Cilium's BPF host routing.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        TC_ACT_OK, TC_ACT_SHOT, bpf_check_mtu_flags::BPF_MTU_CHK_SEGS, bpf_fib_lookup as FibParams,
    },
    helpers::{bpf_check_mtu, bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use netfast_common::{
    Counter, DatapathConfig,
    ct::{DIR_ORIGINAL, KIND_ROUTED},
    names::FAST_PATH_MARK,
    proto,
};

use crate::{
    SkbRewriter,
    conntrack::{self, Side},
    maps::{count, endpoint},
    nat::translate,
    parse::{FRAG_NONE, IP_CSUM_OFF, IP_DST_OFF, IP_OFF, Packet},
    route,
};

/// Offset of the TTL, and of the 16-bit word (TTL, protocol) the IP checksum sees it in.
const IP_TTL_OFF: usize = IP_OFF + 8;
/// Offset of the flags and fragment offset, and their bits (host order).
const IP_FRAG_OFF: usize = IP_OFF + 6;
const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;
/// `skb->pkt_type` of a frame to this host's MAC (include/uapi/linux/if_packet.h).
const PACKET_HOST: u32 = 0;

/// Sends a frame that the uplink's ingress just translated toward a container into
/// that container; returns the tc verdict. Falls back (TC_ACT_OK, the frame goes on
/// through the host's routing, translated) when the destination has no endpoint,
/// the TTL would expire, or the frame exceeds the container link's MTU.
#[inline(always)]
pub fn to_container(ctx: &TcContext) -> i32 {
    // A fragment keeps the normal path: its datagram's other fragments do (they carry
    // no ports), and a host that reassembles (nf_defrag, for any stateful rule) must
    // see them all.
    match ctx.load::<u16>(IP_FRAG_OFF) {
        Ok(frag) if u16::from_be(frag) & (IP_MF | IP_OFFSET_MASK) == 0 => {}
        _ => return TC_ACT_OK as i32,
    }
    // SAFETY: `skb` is the context the kernel passed in; pkt_type is readable in tc.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST {
        // Broadcast, multicast or another host's MAC: the host's forwarding drops
        // such a frame (`ip_forward`), so the fast path must not deliver it.
        return fall_back(Counter::FastPathFallbackNotHost);
    }
    let Some(to) = ctx.load::<u32>(IP_DST_OFF).ok().and_then(endpoint) else {
        return fall_back(Counter::FastPathFallbackNoEndpoint);
    };
    if let Err(reason) = hop_allowed(ctx, to.ifindex) {
        return fall_back(reason);
    }
    if decrement_ttl(ctx).is_err() || write_macs(ctx, &to.mac, &to.host_mac).is_err() {
        count(Counter::DropRewriteFailed);
        return TC_ACT_SHOT as i32;
    }
    count(Counter::FastPathToContainer);
    // SAFETY: no preconditions; with flags 0 the helper returns TC_ACT_REDIRECT, and
    // the kernel hands the frame to the veth's peer, in the container's namespace.
    unsafe { bpf_redirect_peer(to.ifindex, 0) as i32 }
}

/// What `container_ingress_tc` does with a container's packet before hairpin: `Some`
/// tc verdict for a packet whose route leads out of the uplink (sent there translated,
/// or passed to the normal path, counted), `None` for every other packet, which the
/// hairpin program decides on.
#[inline(always)]
pub fn to_uplink(ctx: &TcContext, config: &DatapathConfig) -> Option<i32> {
    let pkt = crate::parse_skb(ctx).ok()?;
    // Fragments and ICMP errors keep the normal path, whose uplink programs translate
    // them (a first fragment must be recorded there for its later ones).
    let trackable = matches!(pkt.key.proto, proto::TCP | proto::UDP | proto::ICMP);
    if !trackable || pkt.fragment != FRAG_NONE || pkt.quote_off != 0 {
        return None;
    }
    // SAFETY: `skb` is the context the kernel passed in; ifindex and gso_size are
    // readable in tc.
    let (veth, gso_size) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).gso_size) };
    // Only a container's own address, from its own veth: a spoofed source is left to
    // the host's stack, whose rp_filter and rules see it as before.
    if endpoint(pkt.key.src_addr).is_none_or(|from| from.ifindex != veth) {
        return None;
    }
    let mut params = route::forward_params(&pkt.key, veth);
    // The datagram's length against its route's MTU (`ip_mtu_from_fib_result`: the
    // device's, or a route's own where the helper sees it); a GSO packet's segments
    // are checked against the device's below (`bpf_check_mtu`).
    if gso_size == 0 {
        params.__bindgen_anon_1.tot_len = pkt.ip_len;
    }
    let found = route::next_hop(&SkbRewriter { ctx }, &mut params);
    // Too big for its route (the helper then names no interface): the host's
    // forwarding answers with "fragmentation needed", or fragments it.
    if found == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) {
        count(Counter::FastPathFallbackMtu);
        return Some(pass_to_uplink());
    }
    if params.ifindex != config.uplink_ifindex {
        return None;
    }
    let reason = match found {
        ret if ret == i64::from(BPF_FIB_LKUP_RET_SUCCESS) => hop_allowed(ctx, params.ifindex),
        ret if ret == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) => Err(Counter::FastPathFallbackNoNeigh),
        _ => return None,
    };
    if let Err(reason) = reason {
        count(reason);
        return Some(pass_to_uplink());
    }
    Some(translate_to_uplink(
        ctx,
        &pkt,
        &params,
        config.uplink_ifindex,
    ))
}

/// The flow's translation of a container's packet, done on its veth, then the frame
/// sent out of the uplink with the route's MACs; no flow: the normal path opens one.
#[inline(always)]
fn translate_to_uplink(ctx: &TcContext, pkt: &Packet, params: &FibParams, uplink: u32) -> i32 {
    let rewrite = match conntrack::lookup_for(&pkt.key, pkt, Side::Egress) {
        Ok(Some(rewrite)) => rewrite,
        Ok(None) => return pass_to_uplink(),
        Err(drop) => return shot(drop),
    };
    if let Err(drop) = translate(&mut SkbRewriter { ctx }, pkt, &rewrite) {
        return shot(drop);
    }
    if decrement_ttl(ctx).is_err() || write_macs(ctx, &params.dmac, &params.smac).is_err() {
        return shot(Counter::DropRewriteFailed);
    }
    ctx.set_mark(FAST_PATH_MARK);
    count(if rewrite.kind == KIND_ROUTED {
        // A routed flow's entries translate to what the packet already holds.
        Counter::RoutedReply
    } else if rewrite.direction == DIR_ORIGINAL {
        Counter::SnatEstablished
    } else {
        Counter::DnatReply
    });
    count(Counter::FastPathToUplink);
    // SAFETY: no preconditions; with flags 0 the helper returns TC_ACT_REDIRECT, and
    // the kernel sends the frame out of the uplink (through its tcx egress).
    unsafe { bpf_redirect(uplink, 0) as i32 }
}

/// Whether the host's forwarding would send the packet on over the interface
/// `ifindex` as it is: its TTL would not expire on the hop (`ip_forward`), and it
/// fits that interface's MTU, each GSO segment for a GSO packet (`ip_exceeds_mtu`).
#[inline(always)]
fn hop_allowed(ctx: &TcContext, ifindex: u32) -> Result<(), Counter> {
    match ctx.load::<u8>(IP_TTL_OFF) {
        Ok(ttl) if ttl > 1 => {}
        _ => return Err(Counter::FastPathFallbackTtl),
    }
    let mut mtu = 0u32;
    // SAFETY: `skb` is this program's context; `mtu` is a u32 the helper writes.
    let ret = unsafe {
        bpf_check_mtu(
            ctx.skb.skb.cast(),
            ifindex,
            &mut mtu,
            0,
            u64::from(BPF_MTU_CHK_SEGS),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(Counter::FastPathFallbackMtu)
    }
}

/// The TTL down by one, with the IP checksum (RFC 1624) over the (TTL, protocol) word.
#[inline(always)]
fn decrement_ttl(ctx: &TcContext) -> Result<(), ()> {
    let old: [u8; 2] = ctx.load(IP_TTL_OFF).map_err(|_| ())?;
    let new = [old[0].wrapping_sub(1), old[1]];
    let (old, new) = (u16::from_ne_bytes(old), u16::from_ne_bytes(new));
    ctx.l3_csum_replace(IP_CSUM_OFF, old.into(), new.into(), 2)
        .map_err(|_| ())?;
    ctx.store(IP_TTL_OFF, &new, 0).map_err(|_| ())
}

/// Ethernet's destination and source addresses (no checksum covers them).
#[inline(always)]
fn write_macs(ctx: &TcContext, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), ()> {
    ctx.store(0, dst, 0).map_err(|_| ())?;
    ctx.store(6, src, 0).map_err(|_| ())
}

/// A translated frame the fast path leaves to the host's routing.
#[inline(always)]
fn fall_back(reason: Counter) -> i32 {
    count(reason);
    TC_ACT_OK as i32
}

/// A container's packet left untranslated to the bridge and the host's routing; the
/// uplink's egress program translates it there.
#[inline(always)]
fn pass_to_uplink() -> i32 {
    count(Counter::PassContainerToUplink);
    TC_ACT_OK as i32
}

#[inline(always)]
fn shot(drop: Counter) -> i32 {
    count(drop);
    TC_ACT_SHOT as i32
}
