//! The host's own sockets, as the egress program can see them: a masqueraded flow must
//! not claim a source port that a host socket uses toward the same remote, or the
//! remote's replies to the host would be steered to a container. nf_nat avoids this
//! because the host's connections share its conntrack table; netfast's does not hold
//! them, so it asks the socket tables (`bpf_skc_lookup_tcp`, `bpf_sk_lookup_udp`).

/// Looks up the host's sockets in the network namespace of the packet's device.
pub trait HostSockets {
    /// Whether a host socket would take a packet from `remote` to `local` (addresses
    /// and ports in network byte order): a connected socket with that 4-tuple, or a
    /// listening or bound one on `local`.
    fn holds(&self, proto: u8, remote: (u32, u16), local: (u32, u16)) -> bool;
}
