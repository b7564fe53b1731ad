//! Per-CPU counters: one per outcome, and one per reason a packet was passed
//! untouched or dropped. The datapath bumps exactly one decision counter per packet.

/// Index into the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// No flow, no published port, not from the subnet: passed untouched.
    PassNoMatch,
    /// userspace has not written `CONFIG` yet: passed untouched.
    PassNotConfigured,
    /// Not IPv4 (ARP, IPv6, ...): passed untouched.
    PassNotIpv4,
    /// A fragment: no ports to match on, passed untouched.
    PassFragment,
    /// A protocol netfast does not translate, not from the subnet: passed untouched.
    PassOtherProtocol,
    /// ICMP other than echo, not from the subnet: passed untouched.
    PassIcmpOther,
    /// Headers shorter than they claim to be: dropped.
    DropTruncated,
    /// A fragment from the subnet: dropped, as passing it would leak a private address.
    DropFragmentFromSubnet,
    /// A protocol netfast cannot translate, from the subnet: dropped for the same reason.
    DropUntranslatableFromSubnet,
    /// All SNAT port tries collided: the new flow is dropped.
    DropSnatPortsExhausted,
    /// A conntrack entry could not be written: the new flow is dropped.
    DropConntrackInsert,
    /// A checksum or store helper failed: dropped rather than sent half-rewritten.
    DropRewriteFailed,
    /// Not a decision: every extra SNAT port try after the first.
    SnatPortRetries,
    /// Not a decision: a flow's other half, evicted by the LRU, rebuilt from this one.
    ConntrackHalfRestored,
    /// Not a decision: rebuilding an evicted half failed (the map refused the insert).
    ConntrackRestoreFailed,
}

impl Counter {
    pub const COUNT: u32 = Counter::ConntrackRestoreFailed as u32 + 1;

    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::DnatNew,
        Counter::DnatEstablished,
        Counter::DnatReply,
        Counter::SnatNew,
        Counter::SnatEstablished,
        Counter::SnatReply,
        Counter::PassNoMatch,
        Counter::PassNotConfigured,
        Counter::PassNotIpv4,
        Counter::PassFragment,
        Counter::PassOtherProtocol,
        Counter::PassIcmpOther,
        Counter::DropTruncated,
        Counter::DropFragmentFromSubnet,
        Counter::DropUntranslatableFromSubnet,
        Counter::DropSnatPortsExhausted,
        Counter::DropConntrackInsert,
        Counter::DropRewriteFailed,
        Counter::SnatPortRetries,
        Counter::ConntrackHalfRestored,
        Counter::ConntrackRestoreFailed,
    ];

    /// Whether this counter is a packet's one decision; the others count events on the
    /// way (SNAT port retries, conntrack halves rebuilt).
    pub const fn is_decision(self) -> bool {
        !matches!(
            self,
            Counter::SnatPortRetries
                | Counter::ConntrackHalfRestored
                | Counter::ConntrackRestoreFailed
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
                | Counter::DropRewriteFailed
        )
    }

    /// The name operators see, in `snake_case`.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::DnatNew => "dnat_new",
            Counter::DnatEstablished => "dnat_established",
            Counter::DnatReply => "dnat_reply",
            Counter::SnatNew => "snat_new",
            Counter::SnatEstablished => "snat_established",
            Counter::SnatReply => "snat_reply",
            Counter::PassNoMatch => "pass_no_match",
            Counter::PassNotConfigured => "pass_not_configured",
            Counter::PassNotIpv4 => "pass_not_ipv4",
            Counter::PassFragment => "pass_fragment",
            Counter::PassOtherProtocol => "pass_other_protocol",
            Counter::PassIcmpOther => "pass_icmp_other",
            Counter::DropTruncated => "drop_truncated",
            Counter::DropFragmentFromSubnet => "drop_fragment_from_subnet",
            Counter::DropUntranslatableFromSubnet => "drop_untranslatable_from_subnet",
            Counter::DropSnatPortsExhausted => "drop_snat_ports_exhausted",
            Counter::DropConntrackInsert => "drop_conntrack_insert",
            Counter::DropRewriteFailed => "drop_rewrite_failed",
            Counter::SnatPortRetries => "snat_port_retries",
            Counter::ConntrackHalfRestored => "conntrack_half_restored",
            Counter::ConntrackRestoreFailed => "conntrack_restore_failed",
        }
    }
}
