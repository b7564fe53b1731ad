//! Per-CPU counters: one per outcome, and one per reason a packet was passed
//! untouched or dropped. The datapath bumps exactly one decision counter per packet;
//! the host-local socket programs bump exactly one of theirs per socket call.

/// Index into the `COUNTERS` per-CPU array. The operators' name of each counter is
/// its variant's name in `snake_case` (`Counter::name`), derived by strum.
#[repr(u32)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::EnumCount, strum::VariantArray, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Counter {
    /// A new published-port flow: destination rewritten to the backend.
    DnatNew,
    /// An established published-port flow, client to backend.
    DnatEstablished,
    /// A backend's reply: source rewritten back to the published address.
    DnatReply,
    /// A new masqueraded flow: source rewritten to the uplink address.
    SnatNew,
    /// An established masqueraded flow, container to outside.
    SnatEstablished,
    /// A reply to a masqueraded flow: destination rewritten back to the container.
    SnatReply,
    /// An ICMP error from outside about a tracked flow (RFC 5508 section 4): the outer
    /// destination and the quoted packet's source rewritten, as nf_nat does for RELATED.
    IcmpErrorIn,
    /// An ICMP error leaving about a tracked flow: the outer source and the quoted
    /// packet's destination rewritten, so no private address is quoted to the outside.
    IcmpErrorOut,
    /// A later fragment (offset > 0) translated like its datagram's first fragment:
    /// addresses only, since it carries no ports.
    FragmentTranslated,
    /// From a container (`container_ingress_tc`): a new flow to a published port on an
    /// address of the host (hairpin). Two flows are created, a DNAT flow to the
    /// backend and a SNAT flow from the backend's gateway address, and the frame goes
    /// straight to the backend's host-side veth (`bpf_redirect`).
    HairpinNew,
    /// From a container: an established hairpin flow, client to backend (DNAT, then
    /// SNAT to the gateway), redirected to the backend's veth.
    HairpinEstablished,
    /// From a container: a backend's reply on a hairpin flow (the SNAT undone, then
    /// the DNAT: source back to the published address and port), redirected to the
    /// client's veth.
    HairpinReply,
    /// With `allow_direct_routing`: a new routed flow, from a peer that routes the
    /// masqueraded subnet via the host to a container's own address (TCP, UDP, ICMP
    /// echo; not to an address of the host). Passed untouched, and tracked, so that
    /// the container's replies leave untranslated (`RoutedReply`) instead of being
    /// taken for new masqueraded flows.
    RoutedNew,
    /// An established routed flow, outside to container: passed untouched.
    RoutedEstablished,
    /// A container's reply on a routed flow: passed untouched, never masqueraded, so
    /// the peer sees the address it connected to.
    RoutedReply,
    /// No flow, no published port, not from the subnet: passed untouched.
    PassNoMatch,
    /// userspace has not written `CONFIG` yet: passed untouched.
    PassNotConfigured,
    /// Not IPv4 (ARP, IPv6, ...): passed untouched.
    PassNotIpv4,
    /// A later fragment with no record of a translated first fragment (the datagram
    /// was not translated, or its first fragment has not arrived yet): passed untouched.
    PassFragmentUntracked,
    /// A protocol netfast does not translate, not from the subnet: passed untouched.
    PassOtherProtocol,
    /// ICMP other than echo and the errors, not from the subnet: passed untouched.
    PassIcmpOther,
    /// An ICMP error whose quoted packet belongs to no flow translated on this side of
    /// the uplink, or cannot be parsed; not from the subnet: passed untouched.
    PassIcmpErrorUntracked,
    /// Leaving: a packet of no flow that the host itself sent from one of its own
    /// addresses inside the masqueraded subnet (the bridge's, a point-to-point host
    /// address), such as a host service's answer to a LAN peer that routes the subnet
    /// via the host. The host's own traffic: passed untouched, never masqueraded and
    /// never dropped as a private source.
    PassFromHost,
    /// From a container: IPv4 TCP or UDP that belongs to no hairpin flow and is not
    /// addressed to a published port on an address of the host (traffic between
    /// containers, to the host, out through the masquerade, replies of published
    /// backends): passed to the bridge and the host's routing untouched.
    PassContainerNotPublished,
    /// From a container: not IPv4 (ARP, IPv6, ...): passed untouched.
    PassContainerNotIpv4,
    /// From a container: IPv4 that hairpin does not handle (ICMP, ICMP errors, other
    /// protocols, fragments, headers shorter than they claim): passed untouched; the
    /// host's stack and the uplink programs decide on it as before.
    PassContainerOther,
    /// From a container: a hairpin packet whose destination container (the backend,
    /// or for a reply the client) has no `ENDPOINTS` entry: passed untouched, to the
    /// host's stack (which refuses a new connection, as without hairpin).
    PassHairpinNoEndpoint,
    /// From a container: a backend's reply that matches a hairpin's SNAT flow whose
    /// DNAT flow is gone (expired or evicted with both halves): passed untouched.
    PassHairpinNoDnatFlow,
    /// Not a decision: XDP left the frame untouched to the tc ingress program behind
    /// it, because its L4 checksum field holds only the pseudo-header sum (a local
    /// sender's CHECKSUM_PARTIAL), which XDP cannot tell from a full checksum it can
    /// update. tc translates the frame and counts its decision.
    PassXdpCsumPartial,
    /// Headers shorter than they claim to be: dropped.
    DropTruncated,
    /// A later fragment from the subnet with no record of its first fragment: dropped,
    /// as passing it would leak a private address.
    DropFragmentFromSubnet,
    /// A protocol netfast cannot translate, from the subnet: dropped for the same reason.
    DropUntranslatableFromSubnet,
    /// All SNAT port tries collided: the new flow is dropped.
    DropSnatPortsExhausted,
    /// A conntrack entry could not be written: the new flow is dropped.
    DropConntrackInsert,
    /// A new flow's entry would have overwritten another flow's (its reply tuple is
    /// taken, or another CPU created the same flow a moment earlier): the packet is
    /// dropped and the other flow kept. The sender's retransmission finds the flow or
    /// opens a clean one.
    DropConntrackClash,
    /// A checksum or store helper failed: dropped rather than sent half-rewritten.
    DropRewriteFailed,
    /// A TCP RST outside the receiving side's window (`netfast_common::tcp::rst_in_window`):
    /// dropped without touching the flow, so a blind RST cannot end it.
    DropTcpRstOutOfWindow,
    /// A packet from the uplink to a published port on a loopback address (127.0.0.0/8,
    /// whether published on `127.0.0.1` or on every address): dropped. Loopback
    /// addresses live on `lo`; from the wire they are martians, and a loopback publish
    /// is for the host only. Docker drops the same packets in raw PREROUTING (`-d
    /// 127.0.0.1 ! -i lo -j DROP`), so that `route_localnet` cannot open them either.
    DropLoopbackPublish,
    /// A packet from the uplink routed to an address of the masqueraded subnet that is
    /// not the host's own, and that belongs to no flow and no published port (an
    /// unpublished container port reached by a peer that routes the subnet via the
    /// host): dropped, unless `allow_direct_routing` is set.
    DropRoutedToContainer,
    /// Not a decision: every extra SNAT port try after the first.
    SnatPortRetries,
    /// Not a decision: a SNAT port passed over because a host socket uses it toward
    /// the flow's remote (the host's connection keeps its replies).
    SnatPortHostSocket,
    /// Not a decision: a flow's other half, evicted by the LRU, rebuilt from this one.
    ConntrackHalfRestored,
    /// Not a decision: rebuilding an evicted half failed (the map refused the insert).
    ConntrackRestoreFailed,
    /// Not a decision: a translated first fragment could not be recorded in FRAGMENTS,
    /// so its later fragments will be counted untracked.
    FragmentRecordFailed,
    /// Not a decision: XDP found no room for its decided mark in the frame's metadata
    /// (a driver without XDP metadata), so it left the frame untouched, undecided, to
    /// the tc program behind it, which decides on it and counts that.
    XdpMarkFailed,
    /// Not a decision: a SYN from the original side found its flow closed (TIME_WAIT
    /// or CLOSE) and started a fresh one, with a new publish lookup or port choice.
    ConntrackReopened,
    /// Not a decision: a flow became assured (TCP handshake completed, or a UDP or
    /// ICMP reply seen) and moved from `CONNTRACK_UNASSURED` to `CONNTRACK`.
    ConntrackAssured,
    /// Not a decision: an assured flow could not move to `CONNTRACK` (its tuple was
    /// taken there, or the insert failed); it stays in `CONNTRACK_UNASSURED`.
    ConntrackAssureFailed,
    /// Host-local (`connect4`, `sendmsg4`): a host socket's destination was a published
    /// port on an address of the host; rewritten to the backend.
    HostLocalRewritten,
    /// Host-local (`recvmsg4`, `getpeername4`): a backend's address given back to the
    /// socket as the published address and port it asked for.
    HostLocalReplyRewritten,
    /// Host-local (`connect4`, `sendmsg4`): no publish for that address and port, or the
    /// address is not the host's: untouched.
    HostLocalNotPublished,
    /// Host-local (`recvmsg4`, `getpeername4`): the socket was not sent to a backend
    /// (no `HOST_LOCAL_REVERSE` entry for it and that peer): untouched.
    HostLocalReverseMiss,
    /// Host-local: a socket of another network namespace (a container's, with its own
    /// loopback): untouched.
    HostLocalOtherNetns,
    /// Host-local: neither TCP nor UDP (an ICMP ping socket, say): untouched.
    HostLocalOtherProtocol,
    /// Host-local: `CONFIG` is not written, or carries no host namespace cookie: untouched.
    HostLocalNotConfigured,
    /// Host-local: the `HOST_LOCAL_REVERSE` entry could not be written, so the socket
    /// goes untranslated (as if nothing were published) rather than see a peer address
    /// it never asked for.
    HostLocalReverseFailed,
    /// Not a decision (the uplink's ingress counted the translation): a packet
    /// translated toward a container (`dnat_new`, `dnat_established`, `snat_reply`), or
    /// a routed flow's (`routed_new`, `routed_established`), sent straight into it with
    /// `bpf_redirect_peer`, past the host's routing and
    /// the bridge. The TTL goes down by one, as the host's forwarding would take it.
    FastPathToContainer,
    /// Not a decision (the translation is counted, `snat_established`, `dnat_reply` or
    /// `routed_reply`): a container's packet of an established flow, translated on its
    /// host-side veth and sent straight out of the uplink (`bpf_redirect`), with the
    /// MACs of the kernel's route and neighbour entry (`bpf_fib_lookup`).
    FastPathToUplink,
    /// Not a decision: a packet the fast path would have taken goes through the bridge
    /// and the host's routing instead, because the container it is translated to has
    /// no `ENDPOINTS` entry.
    FastPathFallbackNoEndpoint,
    /// Not a decision: the same, because its TTL would expire on the hop; the host's
    /// forwarding then answers with ICMP time exceeded, as without netfast.
    FastPathFallbackTtl,
    /// Not a decision: the same, because it is larger than the MTU of the interface it
    /// would leave by (`bpf_check_mtu`, each segment of a GSO packet) or, toward the
    /// uplink, of its route; the host fragments it or answers with ICMP fragmentation
    /// needed.
    FastPathFallbackMtu,
    /// Not a decision: the same, because the frame was not sent to the host's MAC
    /// (broadcast, multicast, another host's): the host's forwarding drops it, as
    /// without netfast.
    FastPathFallbackNotHost,
    /// Not a decision: the same, because the next hop's MAC is not known yet
    /// (`BPF_FIB_LKUP_RET_NO_NEIGH`); the host resolves it, and later packets take the
    /// fast path.
    FastPathFallbackNoNeigh,
    /// From a container: a packet whose route leads out of the uplink but that belongs
    /// to no flow yet (a masqueraded flow's first packet), or that the fast path falls
    /// back on: passed to the bridge and the host's routing, and the uplink's egress
    /// program translates it there.
    PassContainerToUplink,
    /// From a container: the tail call to `container_hairpin_tc` failed (its
    /// `CONTAINER_CALLS` slot is empty): passed untouched, without hairpin.
    PassHairpinUnavailable,
    /// Uplink egress: a frame the container-side fast path translated and redirected
    /// here (`FAST_PATH_MARK`): passed without a second lookup.
    PassFastPathTranslated,
}

impl Counter {
    /// How many counters there are: the `COUNTERS` array's size.
    pub const COUNT: u32 = <Counter as strum::EnumCount>::COUNT as u32;

    /// Every counter, in index order.
    pub const ALL: &'static [Counter] = <Counter as strum::VariantArray>::VARIANTS;

    /// Whether this counter is a packet's one decision; the others count events on the
    /// way (SNAT port retries, conntrack halves rebuilt) or socket calls
    /// ([`Counter::is_host_local`]).
    pub const fn is_decision(self) -> bool {
        !matches!(
            self,
            Counter::SnatPortRetries
                | Counter::SnatPortHostSocket
                | Counter::PassXdpCsumPartial
                | Counter::ConntrackHalfRestored
                | Counter::ConntrackRestoreFailed
                | Counter::FragmentRecordFailed
                | Counter::XdpMarkFailed
                | Counter::ConntrackReopened
                | Counter::ConntrackAssured
                | Counter::ConntrackAssureFailed
                | Counter::FastPathToContainer
                | Counter::FastPathToUplink
                | Counter::FastPathFallbackNoEndpoint
                | Counter::FastPathFallbackTtl
                | Counter::FastPathFallbackMtu
                | Counter::FastPathFallbackNoNeigh
                | Counter::FastPathFallbackNotHost
        ) && !self.is_host_local()
    }

    /// Whether a host-local cgroup program counted this: one per socket call it saw,
    /// never per packet.
    pub const fn is_host_local(self) -> bool {
        matches!(
            self,
            Counter::HostLocalRewritten
                | Counter::HostLocalReplyRewritten
                | Counter::HostLocalNotPublished
                | Counter::HostLocalReverseMiss
                | Counter::HostLocalOtherNetns
                | Counter::HostLocalOtherProtocol
                | Counter::HostLocalNotConfigured
                | Counter::HostLocalReverseFailed
        )
    }

    /// Whether the packet that bumped this counter is redirected to a container's
    /// host-side veth (`bpf_redirect`) instead of going on through the stack.
    pub const fn is_redirect(self) -> bool {
        matches!(
            self,
            Counter::HairpinNew | Counter::HairpinEstablished | Counter::HairpinReply
        )
    }

    /// Whether the uplink's ingress decided to send the packet on to a container: a
    /// DNAT to a backend, a reply to a masqueraded flow, or a routed flow's packet
    /// (untranslated). What the fast path sends straight into the container.
    pub const fn is_toward_container(self) -> bool {
        matches!(
            self,
            Counter::DnatNew
                | Counter::DnatEstablished
                | Counter::SnatReply
                | Counter::RoutedNew
                | Counter::RoutedEstablished
        )
    }

    /// Whether the packet that bumped this counter is dropped.
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Counter::DropTruncated
                | Counter::DropFragmentFromSubnet
                | Counter::DropUntranslatableFromSubnet
                | Counter::DropSnatPortsExhausted
                | Counter::DropConntrackInsert
                | Counter::DropConntrackClash
                | Counter::DropRewriteFailed
                | Counter::DropTcpRstOutOfWindow
                | Counter::DropLoopbackPublish
                | Counter::DropRoutedToContainer
        )
    }

    /// The name operators see: the variant's name in `snake_case`.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

// `ALL` is indexed by counter: each variant sits at its own discriminant.
const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(
            Counter::ALL[i] as usize == i,
            "Counter::ALL is out of order"
        );
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::Counter;

    /// The names are the operators' interface (`stats`, `--json`, the daemon's
    /// summary): a renamed variant must not rename a counter by accident.
    #[test]
    fn names_are_stable() {
        let names: [&str; Counter::COUNT as usize] = [
            "dnat_new",
            "dnat_established",
            "dnat_reply",
            "snat_new",
            "snat_established",
            "snat_reply",
            "icmp_error_in",
            "icmp_error_out",
            "fragment_translated",
            "hairpin_new",
            "hairpin_established",
            "hairpin_reply",
            "routed_new",
            "routed_established",
            "routed_reply",
            "pass_no_match",
            "pass_not_configured",
            "pass_not_ipv4",
            "pass_fragment_untracked",
            "pass_other_protocol",
            "pass_icmp_other",
            "pass_icmp_error_untracked",
            "pass_from_host",
            "pass_container_not_published",
            "pass_container_not_ipv4",
            "pass_container_other",
            "pass_hairpin_no_endpoint",
            "pass_hairpin_no_dnat_flow",
            "pass_xdp_csum_partial",
            "drop_truncated",
            "drop_fragment_from_subnet",
            "drop_untranslatable_from_subnet",
            "drop_snat_ports_exhausted",
            "drop_conntrack_insert",
            "drop_conntrack_clash",
            "drop_rewrite_failed",
            "drop_tcp_rst_out_of_window",
            "drop_loopback_publish",
            "drop_routed_to_container",
            "snat_port_retries",
            "snat_port_host_socket",
            "conntrack_half_restored",
            "conntrack_restore_failed",
            "fragment_record_failed",
            "xdp_mark_failed",
            "conntrack_reopened",
            "conntrack_assured",
            "conntrack_assure_failed",
            "host_local_rewritten",
            "host_local_reply_rewritten",
            "host_local_not_published",
            "host_local_reverse_miss",
            "host_local_other_netns",
            "host_local_other_protocol",
            "host_local_not_configured",
            "host_local_reverse_failed",
            "fast_path_to_container",
            "fast_path_to_uplink",
            "fast_path_fallback_no_endpoint",
            "fast_path_fallback_ttl",
            "fast_path_fallback_mtu",
            "fast_path_fallback_not_host",
            "fast_path_fallback_no_neigh",
            "pass_container_to_uplink",
            "pass_hairpin_unavailable",
            "pass_fast_path_translated",
        ];
        for (counter, name) in Counter::ALL.iter().zip(names) {
            assert_eq!(counter.name(), name);
        }
    }
}
