//! What happens to a packet on the uplink, in each direction. Shared by the TC and
//! XDP entry points; every path ends in exactly one `Counter`, which also decides
//! pass or drop (`Counter::is_drop`).

use netfast_common::{
    Backend, Counter, CtTuple, DatapathConfig, PublishKey,
    ct::{DIR_ORIGINAL, KIND_ROUTED},
    names::SNAT_MAX_TRIES,
    proto,
};

use crate::{
    conntrack::{self, Side},
    fragment, icmp,
    maps::{CONFIG, PUBLISHED_PORTS},
    nat::{Rewriter, translate},
    parse::{FRAG_FIRST, FRAG_LATER, Packet, Unparsed},
    route::{self, Routes},
    sockets::HostSockets,
};

#[inline(always)]
pub fn config() -> Option<&'static DatapathConfig> {
    CONFIG.get(0).filter(|config| config.enabled != 0)
}

/// From outside: replies to masqueraded flows, new or established flows to published
/// ports, their later fragments, and ICMP errors about them. Nothing else reaches the
/// masqueraded subnet by routing, unless `allow_direct_routing` says so
/// (`refuse_routed`); then what opens a flow to a container's address starts a
/// routed flow, tracked and untranslated (`routed_in`).
#[inline(always)]
pub fn ingress<R: Rewriter + Routes>(r: &mut R, parsed: Result<Packet, Unparsed>) -> Counter {
    let Some(config) = config() else {
        return Counter::PassNotConfigured;
    };
    match parsed {
        Ok(pkt) => {
            let counter = ingress_packet(r, &pkt, config);
            refuse_routed(r, counter, &pkt.key, config)
        }
        Err(unparsed) => {
            let key = CtTuple {
                src_addr: unparsed.src_addr,
                dst_addr: unparsed.dst_addr,
                ..CtTuple::default()
            };
            refuse_routed(r, unparsed.reason, &key, config)
        }
    }
}

#[inline(always)]
fn ingress_packet<R: Rewriter + Routes>(
    r: &mut R,
    pkt: &Packet,
    config: &DatapathConfig,
) -> Counter {
    if pkt.quote_off != 0 {
        return icmp::translate_error(r, pkt, Side::Ingress);
    }
    if pkt.fragment == FRAG_LATER {
        return later_fragment(r, pkt, Side::Ingress);
    }
    let hit = match conntrack::lookup_for(&pkt.key, pkt, Side::Ingress) {
        Ok(hit) => hit,
        Err(drop) => return drop,
    };
    if let Some(state) = hit {
        let outcome = if state.kind == KIND_ROUTED {
            // Switched off by a re-`up` since the flow began: routed access is closed
            // again, flows and all, as Docker's raw-table drop closes it (the same
            // test as `refuse_routed`'s).
            if config.allow_direct_routing == 0 && in_subnet(pkt.key.dst_addr, config) {
                return Counter::DropRoutedToContainer;
            }
            Counter::RoutedEstablished
        } else if state.direction == DIR_ORIGINAL {
            Counter::DnatEstablished
        } else {
            Counter::SnatReply
        };
        return done(pkt, translate(r, pkt, &state), outcome);
    }
    let backend = match published_backend(r, pkt, config) {
        Ok(Some(backend)) => backend,
        Ok(None) => return routed_in(r, pkt, config),
        Err(drop) => return drop,
    };
    let created = conntrack::create_dnat(pkt, &backend);
    done(
        pkt,
        created.and_then(|state| translate(r, pkt, &state)),
        Counter::DnatNew,
    )
}

/// Toward outside: replies from published backends, flows out of the masqueraded
/// subnet, their later fragments, and ICMP errors about them. Nothing from the subnet
/// leaves untranslated, but for the replies of routed flows (`allow_direct_routing`),
/// which nothing translated on the way in, and what the host sends from its own
/// addresses in the subnet (`from_host`).
#[inline(always)]
pub fn egress<R: Rewriter + HostSockets + Routes>(
    r: &mut R,
    parsed: Result<Packet, Unparsed>,
) -> Counter {
    let Some(config) = config() else {
        return Counter::PassNotConfigured;
    };
    match parsed {
        Ok(pkt) => {
            let counter = egress_packet(r, &pkt, config);
            refuse_private_leak(r, counter, &pkt.key, config)
        }
        Err(unparsed) => {
            let key = CtTuple {
                src_addr: unparsed.src_addr,
                dst_addr: unparsed.dst_addr,
                ..CtTuple::default()
            };
            refuse_private_leak(r, unparsed.reason, &key, config)
        }
    }
}

#[inline(always)]
fn egress_packet<R: Rewriter + HostSockets + Routes>(
    r: &mut R,
    pkt: &Packet,
    config: &DatapathConfig,
) -> Counter {
    if pkt.quote_off != 0 {
        return icmp::translate_error(r, pkt, Side::Egress);
    }
    if pkt.fragment == FRAG_LATER {
        return later_fragment(r, pkt, Side::Egress);
    }
    let hit = match conntrack::lookup_for(&pkt.key, pkt, Side::Egress) {
        Ok(hit) => hit,
        Err(drop) => return drop,
    };
    if let Some(state) = hit {
        // A routed flow's original half applies on ingress only: a hit here on one is
        // the container's reply.
        let outcome = if state.kind == KIND_ROUTED {
            Counter::RoutedReply
        } else if state.direction == DIR_ORIGINAL {
            Counter::SnatEstablished
        } else {
            Counter::DnatReply
        };
        return done(pkt, translate(r, pkt, &state), outcome);
    }
    if !in_subnet(pkt.key.src_addr, config) {
        return Counter::PassNoMatch;
    }
    if from_host(r, &pkt.key) {
        return Counter::PassFromHost;
    }
    if !pkt.opens_flow {
        return Counter::DropUntranslatableFromSubnet;
    }
    let uplink_addr = route::masquerade_source(r, pkt).unwrap_or(config.uplink_addr);
    let created = conntrack::create_snat::<_, SNAT_MAX_TRIES>(r, pkt, config, uplink_addr);
    done(
        pkt,
        created.and_then(|state| translate(r, pkt, &state)),
        Counter::SnatNew,
    )
}

/// A later fragment takes its first fragment's translation: its addresses only, as
/// the ports and the L4 checksum travel in the first fragment.
#[inline(always)]
fn later_fragment<R: Rewriter>(r: &mut R, pkt: &Packet, side: Side) -> Counter {
    let Some(key) = fragment::later_tuple(pkt) else {
        return Counter::PassFragmentUntracked;
    };
    // A later fragment carries no TCP header, so its lookup never drops.
    let Ok(Some(state)) = conntrack::lookup_for(&key, pkt, side) else {
        return Counter::PassFragmentUntracked;
    };
    match translate(r, pkt, &state) {
        Ok(()) => Counter::FragmentTranslated,
        Err(drop) => drop,
    }
}

/// The outcome of a translation; a translated first fragment leaves its ports for the
/// later ones.
#[inline(always)]
fn done(pkt: &Packet, result: Result<(), Counter>, outcome: Counter) -> Counter {
    match result {
        Ok(()) => {
            if pkt.fragment == FRAG_FIRST {
                fragment::record_first(pkt);
            }
            outcome
        }
        Err(drop) => drop,
    }
}

/// The backend of the publish `pkt` is addressed to. An exact host address wins over
/// "any". Either kind answers only where its address lives, which is the same
/// question for both, asked only after an entry matched, so a miss costs no more
/// than the two hash lookups:
/// - a loopback destination (127.0.0.0/8) never: loopback addresses live on `lo`, so
///   a packet from the uplink to a published port there is dropped
///   (`DropLoopbackPublish`), whether the port is published on `127.0.0.1` or on
///   every address;
/// - the address of `up` always, taken as is;
/// - any other destination when the kernel says it is an address of the host now
///   (`route::is_local`, from the uplink): an address of the uplink or of another
///   interface (the kernel's weak host model, as Docker's DNAT rules match it), not
///   one that was removed after the publish was made.
#[inline(always)]
pub fn published_backend<R: Rewriter + Routes>(
    r: &R,
    pkt: &Packet,
    config: &DatapathConfig,
) -> Result<Option<Backend>, Counter> {
    if pkt.key.proto != proto::TCP && pkt.key.proto != proto::UDP {
        return Ok(None);
    }
    let mut key = PublishKey {
        host_addr: pkt.key.dst_addr,
        host_port: pkt.key.dst_port,
        proto: pkt.key.proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    let exact = unsafe { PUBLISHED_PORTS.get(&key) }.copied();
    let backend = match exact {
        Some(backend) => backend,
        None => {
            key.host_addr = 0;
            // SAFETY: the value is copied out at once.
            match unsafe { PUBLISHED_PORTS.get(&key) }.copied() {
                Some(backend) => backend,
                None => return Ok(None),
            }
        }
    };
    if route::is_loopback(pkt.key.dst_addr) {
        return Err(Counter::DropLoopbackPublish);
    }
    if pkt.key.dst_addr != config.uplink_addr && !route::is_local(r, &pkt.key) {
        return Ok(None);
    }
    Ok(Some(backend))
}

/// With `allow_direct_routing`, a miss from the uplink that opens a flow (TCP, UDP, an
/// ICMP echo request) to an address of the masqueraded subnet that is not the host's
/// own starts a routed flow, tracked and untranslated (`conntrack::create_routed`), so
/// that the container's replies match it on egress and leave as they are: without it
/// they would be taken for new masqueraded flows (a SYN-ACK from the uplink's address,
/// a UDP answer from a port of the SNAT range). nf_conntrack tracks such a connection
/// with no NAT; Cilium's masquerade skips a local endpoint's reply to a connection the
/// outside opened (`ct_is_reply4` in `snat_v4_needs_masquerade`). Anything else stays
/// a miss for `refuse_routed`. The route is asked only here, on the way to a new flow.
#[inline(always)]
fn routed_in<R: Routes>(r: &R, pkt: &Packet, config: &DatapathConfig) -> Counter {
    if config.allow_direct_routing == 0
        || !pkt.opens_flow
        || !in_subnet(pkt.key.dst_addr, config)
        || route::is_local(r, &pkt.key)
    {
        return Counter::PassNoMatch;
    }
    done(
        pkt,
        conntrack::create_routed(pkt).map(|_| ()),
        Counter::RoutedNew,
    )
}

/// A packet from the uplink that the kernel would route into the masqueraded subnet
/// is dropped when netfast passed it for want of a flow or a publish
/// (`DropRoutedToContainer`), as Docker drops direct access to containers in its
/// default NAT gateway mode: an unpublished container port is not reachable from
/// outside, even by a peer that routes the subnet via the host. What passes:
/// - every translated packet: replies to the containers' masqueraded flows, the
///   flows of published ports (also one published on an address inside the subnet,
///   such as the bridge's), their later fragments and the ICMP errors about them;
/// - a destination that is the host's own (the bridge's address, a point-to-point
///   host address) or a broadcast, as `route::is_local` answers: traffic to the host
///   itself is the host firewall's business;
/// - everything, with `allow_direct_routing` (routed setups), and everything without
///   `[masquerade]`, where no subnet is configured and the containers' own flows are
///   not tracked.
///
/// Only decisions that pass untranslated become the drop; the route is asked only
/// for those, so translated packets never pay for it.
#[inline(always)]
fn refuse_routed<R: Routes>(
    r: &R,
    counter: Counter,
    key: &CtTuple,
    config: &DatapathConfig,
) -> Counter {
    if config.allow_direct_routing != 0 || !in_subnet(key.dst_addr, config) {
        return counter;
    }
    match counter {
        Counter::PassNoMatch
        | Counter::PassFragmentUntracked
        | Counter::PassOtherProtocol
        | Counter::PassIcmpOther
        | Counter::PassIcmpErrorUntracked => {
            if route::is_local(r, key) {
                counter
            } else {
                Counter::DropRoutedToContainer
            }
        }
        counter => counter,
    }
}

#[inline(always)]
fn in_subnet(addr: u32, config: &DatapathConfig) -> bool {
    config.masquerade != 0 && addr & config.subnet_mask == config.subnet_addr
}

/// What cannot be translated must not reach the wire with a private source address:
/// every pass-through decision about a packet from the subnet becomes a drop, unless
/// the host sent it from an address of its own (`from_host`), which is no container's.
#[inline(always)]
fn refuse_private_leak<R: Routes>(
    r: &R,
    counter: Counter,
    key: &CtTuple,
    config: &DatapathConfig,
) -> Counter {
    if !in_subnet(key.src_addr, config) {
        return counter;
    }
    let leak = match counter {
        Counter::PassFragmentUntracked => Counter::DropFragmentFromSubnet,
        Counter::PassOtherProtocol | Counter::PassIcmpOther | Counter::PassIcmpErrorUntracked => {
            Counter::DropUntranslatableFromSubnet
        }
        counter => return counter,
    };
    if from_host(r, key) {
        Counter::PassFromHost
    } else {
        leak
    }
}

/// Whether the host itself sent this packet (leaving by the uplink, its tuple `key`)
/// from one of its own addresses: the masquerade is for the containers, and the
/// host's own traffic is never masqueraded (`up` refuses a subnet that holds an
/// uplink address for that reason), nor dropped as a private source. A host service
/// on the bridge's address answering a LAN peer that routes the subnet via the host
/// is the case that matters; Cilium does not masquerade the host's own endpoint
/// either (`ENDPOINT_F_HOST` in `snat_v4_needs_masquerade`).
///
/// Two questions, the cheap one first:
/// - the packet was not forwarded: on egress `Routes::ifindexes().0` is the
///   interface a forwarded packet came in on, 0 for what the host's stack sends
///   (replies it builds from scratch, SYN-ACKs, RSTs and ICMP included). A container's
///   packet always has one, so the containers' new flows pay nothing more; and a
///   forwarded packet never carries a host address as its source (the kernel drops
///   it on input as a martian);
/// - the kernel calls the source an address of the host now (`route::is_local` of the
///   packet coming back from the uplink): so a host process that sends with some
///   other subnet source (a raw socket, `IP_TRANSPARENT`) is masqueraded as before,
///   and an address added after `up` counts at once. `HOST_ADDRS` would know only
///   the addresses of the last `up`.
///
/// Asked only for packets of no flow from the subnet, so translated traffic never
/// pays for it.
#[inline(always)]
fn from_host<R: Routes>(r: &R, key: &CtTuple) -> bool {
    r.ifindexes().0 == 0 && route::is_local(r, &key.reversed())
}
