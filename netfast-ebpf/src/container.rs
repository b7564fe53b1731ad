//! What happens to a packet a container sends, seen on tcx ingress of its host-side
//! veth (`container_ingress_tc`), before the bridge and the host's routing. Today it
//! handles hairpin: a container reaching a published port through an address of the
//! host, whether the backend is another container or itself. Everything else passes
//! untouched, counted by reason.
//!
//! A hairpin connection is two ordinary conntrack flows, chained, so lookups, TCP
//! states, assurance, the GC and `ct list` treat them like any other:
//! - a DNAT flow, as the uplink's ingress would create it:
//!   `client:port -> host:published` becomes `client:port -> backend:port`;
//! - a SNAT flow, as the uplink's egress would create it for that translated packet,
//!   with the backend's gateway as the address:
//!   `client:port -> backend:port` becomes `gateway:snat_port -> backend:port`.
//!
//! So the backend sees a source it answers through netfast (Docker masquerades
//! hairpin traffic to the bridge's address). Its reply, `backend:port ->
//! gateway:snat_port`, arrives on the backend's veth: the SNAT flow's reply half
//! gives `backend:port -> client:port`, the DNAT flow's reply half `host:published ->
//! client:port`. The lookups use the uplink's sides: the first one takes only
//! entries that rewrite the destination (`Side::Ingress`), the second only those that
//! rewrite the source (`Side::Egress`), so a container's ordinary traffic (a published
//! backend's reply to the outside, a masqueraded flow) never matches here.
//!
//! A translated frame's source is an address of the host, which the host's stack
//! would drop on ingress as a martian, and its destination is a container: it goes
//! straight to that container's host-side veth (`bpf_redirect` to the `ENDPOINTS`
//! entry's ifindex), with the container's MAC as destination and its gateway's MAC
//! as source. The TTL is left alone: the client addressed the host, and the host
//! answers in its place, as Docker's userland proxy would; no router hop is seen.

use netfast_common::{
    Backend, Counter, CtTuple, DatapathConfig, Endpoint,
    ct::{KIND_DNAT, KIND_SNAT},
    names::HAIRPIN_SNAT_MAX_TRIES,
    proto,
};

use crate::{
    conntrack::{self, Rewrite, Side},
    maps::{ENDPOINTS, endpoint},
    nat::{Rewriter, translate},
    parse::{FRAG_NONE, Packet},
    route::Routes,
    sockets::HostSockets,
    uplink,
};

/// The program's one decision about a packet: its counter (which also says pass,
/// drop or redirect: `Counter::is_drop`, `Counter::is_redirect`), and for a redirect
/// the host-side veth to send the frame out of.
pub struct Decision {
    pub counter: Counter,
    /// An `Endpoint::ifindex`; 0 unless the counter is a redirect.
    pub ifindex: u32,
}

impl Decision {
    #[inline(always)]
    fn only(counter: Counter) -> Self {
        Self {
            counter,
            ifindex: 0,
        }
    }
}

/// What parsing made of a frame. Fieldless: it crosses a subprogram's return.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// An IPv4 packet netfast can read, written to the caller's `Packet`.
    Ipv4,
    /// Not IPv4.
    NotIpv4,
    /// IPv4 netfast cannot translate, or headers shorter than they claim.
    Other,
}

/// Everything the program keeps between its subprograms, in one place: LLVM gives
/// each local of the inlined paths a stack slot of its own, and these slots are
/// live across the subprogram calls, whose frames add up to the 512 bytes the
/// verifier allows.
struct Scratch {
    /// Where a subprogram writes what it found.
    outcome: Outcome,
    /// The flow the first lookup found: a DNAT flow's original half (client to
    /// backend) or a SNAT flow's reply half (backend's reply).
    first: Rewrite,
    /// The other flow of the chain, looked up with the first one applied.
    second: Rewrite,
    /// The container the frame goes to.
    to: Endpoint,
    /// The packet's destination as it arrived (address, port; network byte order):
    /// the lookups of the chain's second flow change only the destination of
    /// `Packet::key`, and translation needs it back as it was.
    dst_addr: u32,
    dst_port: u16,
}

/// A packet from a container: a hairpin flow's packets are translated and redirected
/// to the other container; everything else passes.
#[inline(always)]
pub fn ingress<R: Rewriter + HostSockets + Routes>(
    r: &mut R,
    parsed: Parsed,
    pkt: &mut Packet,
) -> Decision {
    let Some(config) = uplink::config() else {
        return Decision::only(Counter::PassNotConfigured);
    };
    match parsed {
        Parsed::Ipv4 => {}
        Parsed::NotIpv4 => return Decision::only(Counter::PassContainerNotIpv4),
        Parsed::Other => return Decision::only(Counter::PassContainerOther),
    }
    // Publishes are TCP and UDP; fragments and ICMP errors about hairpin flows are
    // left to the stack (they are counted, not translated).
    if (pkt.key.proto != proto::TCP && pkt.key.proto != proto::UDP)
        || pkt.fragment != FRAG_NONE
        || pkt.quote_off != 0
    {
        return Decision::only(Counter::PassContainerOther);
    }
    let mut s = Scratch {
        outcome: Outcome::new(),
        first: Rewrite::NONE,
        second: Rewrite::NONE,
        to: Endpoint::default(),
        dst_addr: pkt.key.dst_addr,
        dst_port: pkt.key.dst_port,
    };
    let code = lookup_sub(&pkt.key, pkt, Side::Ingress, &mut s.outcome);
    match s.outcome.read(code) {
        Found::Yes if s.outcome.rewrite.kind == KIND_SNAT => {
            s.first = s.outcome.rewrite;
            backend_reply(r, pkt, &mut s)
        }
        Found::Yes => {
            s.first = s.outcome.rewrite;
            to_backend(r, pkt, config, &mut s, false)
        }
        Found::No => to_backend(r, pkt, config, &mut s, true),
        Found::Drop(drop) => Decision::only(drop),
    }
}

/// Client to backend: the DNAT flow found (`s.first`), or when `new` a new one if the
/// packet goes to a published port on an address of the host; then the SNAT flow of
/// the translated packet, found or new.
#[inline(always)]
fn to_backend<R: Rewriter + HostSockets + Routes>(
    r: &mut R,
    pkt: &mut Packet,
    config: &DatapathConfig,
    s: &mut Scratch,
    new: bool,
) -> Decision {
    // A new flow's backend goes where the DNAT flow's translation will be.
    if new && !published_backend(r, pkt, config, &mut s.first) {
        return Decision::only(Counter::PassContainerNotPublished);
    }
    match endpoint(s.first.nat_addr) {
        Some(to) => s.to = to,
        None => return Decision::only(Counter::PassHairpinNoEndpoint),
    }
    if new {
        // A new flow whose replies could not be delivered is not started.
        if !has_endpoint(pkt.key.src_addr) {
            return Decision::only(Counter::PassHairpinNoEndpoint);
        }
        let code = create_dnat_sub(pkt, &s.first, &mut s.outcome);
        if let Found::Drop(drop) = s.outcome.read(code) {
            return Decision::only(drop);
        }
        s.first = s.outcome.rewrite;
    }
    // The SNAT flow is keyed by the packet as the DNAT leaves it.
    pkt.key.dst_addr = s.first.nat_addr;
    pkt.key.dst_port = s.first.nat_port;
    let code = lookup_sub(&pkt.key, pkt, Side::Egress, &mut s.outcome);
    match s.outcome.read(code) {
        Found::Yes if s.outcome.rewrite.kind == KIND_SNAT => {}
        // The translated tuple is another flow's: a hairpin's reply half in the
        // other direction. Never translate with the wrong flow.
        Found::Yes => return Decision::only(Counter::DropConntrackClash),
        // New, or the SNAT flow expired while its DNAT flow lived: (re)created.
        Found::No => {
            let code = create_snat_sub(r, pkt, config, s.to.gateway, &mut s.outcome);
            if let Found::Drop(drop) = s.outcome.read(code) {
                return Decision::only(drop);
            }
        }
        Found::Drop(drop) => return Decision::only(drop),
    }
    s.second = s.outcome.rewrite;
    pkt.key.dst_addr = s.dst_addr;
    pkt.key.dst_port = s.dst_port;
    let outcome = if new {
        Counter::HairpinNew
    } else {
        Counter::HairpinEstablished
    };
    deliver(r, pkt, s, outcome)
}

/// Backend to client: the SNAT flow's reply half (`s.first`) found; the DNAT flow's
/// reply half must be there too.
#[inline(always)]
fn backend_reply<R: Rewriter>(r: &mut R, pkt: &mut Packet, s: &mut Scratch) -> Decision {
    pkt.key.dst_addr = s.first.nat_addr;
    pkt.key.dst_port = s.first.nat_port;
    match endpoint(pkt.key.dst_addr) {
        Some(to) => s.to = to,
        None => return Decision::only(Counter::PassHairpinNoEndpoint),
    }
    let code = lookup_sub(&pkt.key, pkt, Side::Egress, &mut s.outcome);
    match s.outcome.read(code) {
        Found::Yes if s.outcome.rewrite.kind == KIND_DNAT => {}
        Found::Yes | Found::No => return Decision::only(Counter::PassHairpinNoDnatFlow),
        Found::Drop(drop) => return Decision::only(drop),
    }
    s.second = s.outcome.rewrite;
    pkt.key.dst_addr = s.dst_addr;
    pkt.key.dst_port = s.dst_port;
    deliver(r, pkt, s, Counter::HairpinReply)
}

/// Applies `s.first`, then `s.second` (each to the packet as the one before left it),
/// writes the MACs of a frame to `s.to`, and redirects it there. A failed write drops
/// the frame rather than send it half translated.
#[inline(always)]
fn deliver<R: Rewriter>(r: &mut R, pkt: &mut Packet, s: &Scratch, outcome: Counter) -> Decision {
    if let Err(drop) = translate(r, pkt, &s.first) {
        return Decision::only(drop);
    }
    if s.first.rewrites_destination() {
        pkt.key.dst_addr = s.first.nat_addr;
        pkt.key.dst_port = s.first.nat_port;
    } else {
        pkt.key.src_addr = s.first.nat_addr;
        pkt.key.src_port = s.first.nat_port;
    }
    if let Err(drop) = translate(r, pkt, &s.second) {
        return Decision::only(drop);
    }
    if write_macs(r, &s.to).is_err() {
        return Decision::only(Counter::DropRewriteFailed);
    }
    Decision {
        counter: outcome,
        ifindex: s.to.ifindex,
    }
}

/// Destination: the container's MAC; source: its gateway's. Ethernet's 12 address
/// bytes as three native words (no checksum covers them).
#[inline(always)]
fn write_macs<R: Rewriter>(r: &mut R, to: &Endpoint) -> Result<(), ()> {
    let (d, s) = (to.mac, to.host_mac);
    r.store_u32(0, u32::from_ne_bytes([d[0], d[1], d[2], d[3]]))?;
    r.store_u32(4, u32::from_ne_bytes([d[4], d[5], s[0], s[1]]))?;
    r.store_u32(8, u32::from_ne_bytes([s[2], s[3], s[4], s[5]]))
}

#[inline(always)]
fn has_endpoint(addr: u32) -> bool {
    ENDPOINTS.get_ptr(&addr).is_some()
}

// The conntrack work is done in BPF subprograms of their own (`inline(never)`): each
// has a stack frame of its own, and the verifier adds frames up along a call chain
// only, so these leaves, called one after the other, share the 512 bytes it allows.
// Inlined together (two lookups, two new flows, a publish lookup), the program's one
// frame outgrew them. They return at most 8 bytes by value and write the rest through
// a pointer: a larger return goes through a hidden pointer to the caller's stack,
// which LLVM also returns, and the verifier refuses a subprogram that returns a stack
// pointer.

/// What a subprogram found, as a scalar that is whole in every case (an enum with a
/// payload leaves bits undefined in the cases without one, and the verifier refuses
/// a read of a register that was never written): `FOUND` with the translation in
/// `Outcome::rewrite`, `MISSED`, or `DROPPED` with the counter in `Outcome::drop`.
const FOUND: u32 = 0;
const MISSED: u32 = 1;
const DROPPED: u32 = 2;

/// Where a subprogram writes what it found.
struct Outcome {
    rewrite: Rewrite,
    drop: Counter,
}

/// How the callers see a subprogram's answer.
#[derive(Clone, Copy)]
enum Found {
    Yes,
    No,
    Drop(Counter),
}

impl Outcome {
    #[inline(always)]
    fn new() -> Self {
        Self {
            rewrite: Rewrite::NONE,
            drop: Counter::DropRewriteFailed,
        }
    }

    /// Records `result`; returns `FOUND`, `MISSED` or `DROPPED`.
    #[inline(always)]
    fn record(&mut self, result: Result<Option<Rewrite>, Counter>) -> u32 {
        match result {
            Ok(Some(rewrite)) => {
                self.rewrite = rewrite;
                FOUND
            }
            Ok(None) => MISSED,
            Err(drop) => {
                self.drop = drop;
                DROPPED
            }
        }
    }

    /// What `code` (a subprogram's return) says; a translation found is in `rewrite`.
    #[inline(always)]
    fn read(&self, code: u32) -> Found {
        match code {
            FOUND => Found::Yes,
            MISSED => Found::No,
            _ => Found::Drop(self.drop),
        }
    }
}

#[inline(never)]
fn lookup_sub(key: &CtTuple, pkt: &Packet, side: Side, out: &mut Outcome) -> u32 {
    out.record(conntrack::lookup_for(key, pkt, side))
}

/// `backend`: the published backend, as `published_backend` wrote it.
#[inline(never)]
fn create_dnat_sub(pkt: &Packet, backend: &Rewrite, out: &mut Outcome) -> u32 {
    let backend = Backend {
        addr: backend.nat_addr,
        port: backend.nat_port,
        _pad: [0; 2],
    };
    out.record(conntrack::create_dnat(pkt, &backend).map(Some))
}

#[inline(never)]
fn create_snat_sub<H: HostSockets>(
    host: &H,
    pkt: &Packet,
    config: &DatapathConfig,
    gateway: u32,
    out: &mut Outcome,
) -> u32 {
    out.record(
        conntrack::create_snat::<_, HAIRPIN_SNAT_MAX_TRIES>(host, pkt, config, gateway).map(Some),
    )
}
#[inline(never)]
fn published_backend<R: Rewriter + Routes>(
    r: &R,
    pkt: &Packet,
    config: &DatapathConfig,
    out: &mut Rewrite,
) -> bool {
    match uplink::published_backend(r, pkt, config) {
        Ok(Some(backend)) => {
            out.nat_addr = backend.addr;
            out.nat_port = backend.port;
            true
        }
        // A container's 127.0.0.0/8 is its own `lo`: such a packet never reaches this
        // veth, so the loopback refusal cannot happen here; it is not a publish.
        Ok(None) | Err(_) => false,
    }
}
