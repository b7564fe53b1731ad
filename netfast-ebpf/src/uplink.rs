//! What happens to a packet on the uplink, in each direction. Shared by the TC and
//! XDP entry points; every path ends in exactly one `Counter`, which also decides
//! pass or drop (`Counter::is_drop`).

use netfast_common::{
    Counter, DatapathConfig, PublishKey, ct::DIR_ORIGINAL, names::SNAT_MAX_TRIES, proto,
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
/// ports, their later fragments, and ICMP errors about them.
#[inline(always)]
pub fn ingress<R: Rewriter + Routes>(r: &mut R, parsed: Result<Packet, Unparsed>) -> Counter {
    let Some(config) = config() else {
        return Counter::PassNotConfigured;
    };
    let pkt = match parsed {
        Ok(pkt) => pkt,
        Err(unparsed) => return unparsed.reason,
    };
    if pkt.quote_off != 0 {
        return icmp::translate_error(r, &pkt, Side::Ingress);
    }
    if pkt.fragment == FRAG_LATER {
        return later_fragment(r, &pkt, Side::Ingress);
    }
    let hit = match conntrack::lookup_for(&pkt.key, &pkt, Side::Ingress) {
        Ok(hit) => hit,
        Err(drop) => return drop,
    };
    if let Some(state) = hit {
        let outcome = if state.direction == DIR_ORIGINAL {
            Counter::DnatEstablished
        } else {
            Counter::SnatReply
        };
        return done(&pkt, translate(r, &pkt, &state), outcome);
    }
    let Some(backend) = published_backend(r, &pkt, config) else {
        return Counter::PassNoMatch;
    };
    let created = conntrack::create_dnat(&pkt, &backend);
    done(
        &pkt,
        created.and_then(|state| translate(r, &pkt, &state)),
        Counter::DnatNew,
    )
}

/// Toward outside: replies from published backends, flows out of the masqueraded
/// subnet, their later fragments, and ICMP errors about them. Nothing from the subnet
/// leaves untranslated.
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
            refuse_private_leak(counter, pkt.key.src_addr, config)
        }
        Err(unparsed) => refuse_private_leak(unparsed.reason, unparsed.src_addr, config),
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
        let outcome = if state.direction == DIR_ORIGINAL {
            Counter::SnatEstablished
        } else {
            Counter::DnatReply
        };
        return done(pkt, translate(r, pkt, &state), outcome);
    }
    if !in_subnet(pkt.key.src_addr, config) {
        return Counter::PassNoMatch;
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

/// An exact host address wins over "any". "Any" means every address of the host,
/// as it is when the flow starts: the address of `up` is taken as is, any other
/// destination is asked of the kernel (`route::is_local`), only after an "any" entry
/// matched, so a miss costs no more than the two hash lookups.
#[inline(always)]
pub fn published_backend<R: Rewriter + Routes>(
    r: &R,
    pkt: &Packet,
    config: &DatapathConfig,
) -> Option<netfast_common::Backend> {
    if pkt.key.proto != proto::TCP && pkt.key.proto != proto::UDP {
        return None;
    }
    let mut key = PublishKey {
        host_addr: pkt.key.dst_addr,
        host_port: pkt.key.dst_port,
        proto: pkt.key.proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    if let Some(backend) = unsafe { PUBLISHED_PORTS.get(&key) } {
        return Some(*backend);
    }
    key.host_addr = 0;
    // SAFETY: the value is copied out at once.
    let backend = unsafe { PUBLISHED_PORTS.get(&key) }.copied()?;
    if pkt.key.dst_addr != config.uplink_addr && !route::is_local(r, pkt) {
        return None;
    }
    Some(backend)
}

#[inline(always)]
fn in_subnet(addr: u32, config: &DatapathConfig) -> bool {
    config.masquerade != 0 && addr & config.subnet_mask == config.subnet_addr
}

/// What cannot be translated must not reach the wire with a private source address:
/// every pass-through decision about a packet from the subnet becomes a drop.
#[inline(always)]
fn refuse_private_leak(counter: Counter, src_addr: u32, config: &DatapathConfig) -> Counter {
    if !in_subnet(src_addr, config) {
        return counter;
    }
    match counter {
        Counter::PassFragmentUntracked => Counter::DropFragmentFromSubnet,
        Counter::PassOtherProtocol | Counter::PassIcmpOther | Counter::PassIcmpErrorUntracked => {
            Counter::DropUntranslatableFromSubnet
        }
        counter => counter,
    }
}
