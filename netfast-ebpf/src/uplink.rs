//! What happens to a packet on the uplink, in each direction. Shared by the TC and
//! XDP entry points; every path ends in exactly one `Counter`, which also decides
//! pass or drop (`Counter::is_drop`).

use netfast_common::{Counter, DatapathConfig, ForwardKey, flow::DIR_ORIGINAL, proto};

use crate::{
    conntrack::{self, Side},
    maps::{CONFIG, FORWARDS},
    nat::{Rewriter, translate},
    parse::{Packet, Unparsed},
};

#[inline(always)]
pub fn config() -> Option<&'static DatapathConfig> {
    CONFIG.get(0).filter(|config| config.enabled != 0)
}

/// From outside: replies to masqueraded flows, and new or established flows to
/// published ports.
#[inline(always)]
pub fn ingress<R: Rewriter>(r: &mut R, parsed: Result<Packet, Unparsed>) -> Counter {
    let Some(config) = config() else {
        return Counter::PassNotConfigured;
    };
    let pkt = match parsed {
        Ok(pkt) => pkt,
        Err(unparsed) => return unparsed.reason,
    };
    if let Some(state) = conntrack::lookup_for(&pkt, Side::Ingress) {
        let outcome = if state.direction == DIR_ORIGINAL {
            Counter::DnatEstablished
        } else {
            Counter::SnatReply
        };
        return done(translate(r, &pkt, &state), outcome);
    }
    let Some(backend) = published_backend(&pkt, config) else {
        return Counter::PassNoMatch;
    };
    let created = conntrack::create_dnat(&pkt, &backend);
    done(
        created.and_then(|state| translate(r, &pkt, &state)),
        Counter::DnatNew,
    )
}

/// Toward outside: replies from published backends, and flows out of the
/// masqueraded subnet.
#[inline(always)]
pub fn egress<R: Rewriter>(r: &mut R, parsed: Result<Packet, Unparsed>) -> Counter {
    let Some(config) = config() else {
        return Counter::PassNotConfigured;
    };
    let pkt = match parsed {
        Ok(pkt) => pkt,
        Err(unparsed) => return refuse_private_leak(unparsed, config),
    };
    if let Some(state) = conntrack::lookup_for(&pkt, Side::Egress) {
        let outcome = if state.direction == DIR_ORIGINAL {
            Counter::SnatEstablished
        } else {
            Counter::DnatReply
        };
        return done(translate(r, &pkt, &state), outcome);
    }
    if !in_subnet(pkt.key.src_addr, config) {
        return Counter::PassNoMatch;
    }
    let created = conntrack::create_snat(&pkt, config);
    done(
        created.and_then(|state| translate(r, &pkt, &state)),
        Counter::SnatNew,
    )
}

#[inline(always)]
fn done(result: Result<(), Counter>, outcome: Counter) -> Counter {
    match result {
        Ok(()) => outcome,
        Err(drop) => drop,
    }
}

/// An exact host address wins over "any"; "any" means the uplink's own address.
#[inline(always)]
fn published_backend(pkt: &Packet, config: &DatapathConfig) -> Option<netfast_common::Backend> {
    if pkt.key.proto != proto::TCP && pkt.key.proto != proto::UDP {
        return None;
    }
    let mut key = ForwardKey {
        host_addr: pkt.key.dst_addr,
        host_port: pkt.key.dst_port,
        proto: pkt.key.proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    if let Some(backend) = unsafe { FORWARDS.get(&key) } {
        return Some(*backend);
    }
    if pkt.key.dst_addr != config.uplink_addr {
        return None;
    }
    key.host_addr = 0;
    unsafe { FORWARDS.get(&key) }.copied()
}

#[inline(always)]
fn in_subnet(addr: u32, config: &DatapathConfig) -> bool {
    config.masquerade != 0 && addr & config.subnet_mask == config.subnet_addr
}

/// What cannot be translated must not reach the wire with a private source address.
#[inline(always)]
fn refuse_private_leak(unparsed: Unparsed, config: &DatapathConfig) -> Counter {
    if !in_subnet(unparsed.src_addr, config) {
        return unparsed.reason;
    }
    match unparsed.reason {
        Counter::PassFragment => Counter::DropFragmentFromSubnet,
        Counter::PassOtherProtocol | Counter::PassIcmpOther => {
            Counter::DropUntranslatableFromSubnet
        }
        reason => reason,
    }
}
