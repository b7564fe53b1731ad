//! Names the loader and the CLI look things up by. They must match `netfast-ebpf`.

/// bpffs directory that holds one directory per instance.
pub const PIN_ROOT: &str = "/sys/fs/bpf/netfast";

pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_PUBLISHED_PORTS: &str = "PUBLISHED_PORTS";
pub const MAP_CONNTRACK: &str = "CONNTRACK";
/// Flows not yet assured (TCP before its handshake completes, UDP and ICMP before a
/// reply): kept apart so that a flood of them cannot evict an assured flow.
pub const MAP_CONNTRACK_UNASSURED: &str = "CONNTRACK_UNASSURED";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_FRAGMENTS: &str = "FRAGMENTS";
/// Addresses of the host (network byte order) → [`crate::HostAddr`]: where a
/// host-local connect to a port published without a host address counts as "to the
/// host" (with 127.0.0.0/8, which the programs know). `up` fills it.
pub const MAP_HOST_ADDRS: &str = "HOST_ADDRS";
/// [`crate::SockRevKey`] → [`crate::SockRevEntry`]: the address each host-local socket
/// asked for, for `recvmsg4` and `getpeername4`.
pub const MAP_HOST_LOCAL_REVERSE: &str = "HOST_LOCAL_REVERSE";
/// Container endpoints (`crate::Endpoint`), keyed by the container's address.
pub const MAP_ENDPOINTS: &str = "ENDPOINTS";
/// A program array (`BPF_MAP_TYPE_PROG_ARRAY`) of the container side's tail calls:
/// `container_ingress_tc` (the fast path toward the uplink) hands every other packet
/// to `container_hairpin_tc` at [`CALL_CONTAINER_HAIRPIN`]. Two programs, because the
/// verifier walks each on its own budget.
pub const MAP_CONTAINER_CALLS: &str = "CONTAINER_CALLS";
/// The slot of `container_hairpin_tc` in [`MAP_CONTAINER_CALLS`].
pub const CALL_CONTAINER_HAIRPIN: u32 = 0;
/// One `u64`: the [`crate::layout::LAYOUT_VERSION`] of the build that created the
/// instance's maps. Its own layout never changes.
pub const MAP_META: &str = "META";

pub const PROG_UPLINK_INGRESS_TC: &str = "uplink_ingress_tc";
pub const PROG_UPLINK_INGRESS_XDP: &str = "uplink_ingress_xdp";
pub const PROG_UPLINK_EGRESS_TC: &str = "uplink_egress_tc";
/// The host-local cgroup programs (`[host_local]`), one per socket hook.
pub const PROG_HOST_CONNECT4: &str = "host_connect4";
pub const PROG_HOST_SENDMSG4: &str = "host_sendmsg4";
pub const PROG_HOST_RECVMSG4: &str = "host_recvmsg4";
pub const PROG_HOST_GETPEERNAME4: &str = "host_getpeername4";
/// On tcx ingress of each container's host-side veth: everything a container sends.
/// It takes the fast path toward the uplink, and tail-calls
/// [`PROG_CONTAINER_HAIRPIN_TC`] for everything else.
pub const PROG_CONTAINER_INGRESS_TC: &str = "container_ingress_tc";
/// Hairpin, reached only by a tail call from [`PROG_CONTAINER_INGRESS_TC`] through
/// [`MAP_CONTAINER_CALLS`]; attached nowhere.
pub const PROG_CONTAINER_HAIRPIN_TC: &str = "container_hairpin_tc";

/// Pinned link names inside the instance directory.
pub const LINK_UPLINK_INGRESS: &str = "link_uplink_ingress";
pub const LINK_UPLINK_EGRESS: &str = "link_uplink_egress";
/// In XDP mode only: `uplink_ingress_tc` on tcx ingress, behind the XDP program. It
/// translates the frames XDP leaves to it (`pass_xdp_csum_partial`); every other frame
/// XDP already translated or decided on, and it finds no flow for them.
pub const LINK_UPLINK_INGRESS_FALLBACK: &str = "link_uplink_ingress_fallback";
/// The host-local programs' cgroup links (`[host_local] cgroup`), one per hook.
pub const LINK_HOST_CONNECT4: &str = "link_host_connect4";
pub const LINK_HOST_SENDMSG4: &str = "link_host_sendmsg4";
pub const LINK_HOST_RECVMSG4: &str = "link_host_recvmsg4";
pub const LINK_HOST_GETPEERNAME4: &str = "link_host_getpeername4";

/// The pin of `container_ingress_tc`'s link on a container's host-side veth is this
/// prefix followed by the veth's name (at most 15 bytes, no `/`).
pub const LINK_CONTAINER_INGRESS_PREFIX: &str = "link_container_";

/// The default size of `CONNTRACK`, in entries (two per flow): room for 131072 flows.
/// The config's `[conntrack] capacity` overrides it at load time.
pub const CONNTRACK_CAPACITY: u32 = 262_144;
/// The default size of `CONNTRACK_UNASSURED`: [`unassured_capacity`] of the default.
pub const CONNTRACK_UNASSURED_CAPACITY: u32 = unassured_capacity(CONNTRACK_CAPACITY);

/// The size of `CONNTRACK_UNASSURED` for a `CONNTRACK` of `capacity` entries: half
/// of it. Flows wait there only for a handshake or a first reply.
pub const fn unassured_capacity(capacity: u32) -> u32 {
    capacity / 2
}
pub const PUBLISHED_PORTS_CAPACITY: u32 = 16_384;

/// `HOST_ADDRS` entries: addresses of the host namespace that count as the host.
pub const HOST_ADDRS_CAPACITY: u32 = 256;
/// `HOST_LOCAL_REVERSE` entries: host-local sockets remembered at once. An LRU: an
/// entry outlives its socket until newer ones push it out (socket cookies are never
/// reused while the machine runs, so a stale entry matches nothing).
pub const HOST_LOCAL_REVERSE_CAPACITY: u32 = 65_536;

/// How many ports a SNAT port search tries before a new flow is refused: a random
/// start, then the next ports in turn (at most the range's size). nf_nat bounds its
/// search at 128 (`nf_nat_l4proto_unique_tuple`), Cilium at `SNAT_COLLISION_RETRIES`
/// (128). The verifier walks every try, each with a host-socket lookup, and its work
/// grows faster than the tries: 16 take it about 282k instructions, 32 about 726k, 64
/// more than its limit of a million (`tests/tests/verifier_budget.rs` holds the line).
pub const SNAT_MAX_TRIES: u32 = 16;

/// How many ports a hairpin's SNAT port search tries (`container_ingress_tc`), after
/// the container's own port when that may be kept. Far fewer than the uplink's: the
/// container program also holds three conntrack lookups, the new DNAT flow and the
/// publish lookup, and the verifier walks each try once per way there (about 35k
/// instructions a try; 4 tries verified in 550k, over the budget of
/// `tests/tests/verifier_budget.rs`). A hairpin's port only has to be free toward one
/// backend address and port (the reply tuple is `backend:port -> gateway:snat_port`),
/// so 2 tries from a random start fail only when much of the SNAT range is in use
/// toward that one backend; the failure is counted (`drop_snat_ports_exhausted`).
pub const HAIRPIN_SNAT_MAX_TRIES: u32 = 2;

/// `FRAGMENTS` entries: datagrams in flight in fragments at once. Cilium's default
/// (`CILIUM_IPV4_FRAG_MAP_MAX_ENTRIES`); an LRU, so a flood evicts the oldest.
pub const FRAGMENTS_CAPACITY: u32 = 8_192;

/// How long a first fragment's record applies: the kernel's default
/// `net.ipv4.ipfrag_time`, 30 s, after which it drops an incomplete datagram anyway.
pub const FRAGMENT_TIMEOUT_NS: u64 = 30_000_000_000;

/// The 4 bytes of XDP metadata (`bpf_xdp_adjust_meta`) with which the XDP ingress
/// program tells the tc ingress program behind it that a frame's decision is made and
/// counted, so tc passes it without a second lookup or a second count. Frames XDP
/// leaves to tc (`pass_xdp_csum_partial`) carry no mark. Read natively ("nfxd").
pub const XDP_DECIDED_MARK: u32 = u32::from_ne_bytes(*b"nfxd");

/// The `skb->mark` with which the container-side fast path sends a translated frame
/// to the uplink (`bpf_redirect`), so that the uplink's egress program, which runs on
/// it there, passes it without a second lookup (and clears the mark). Cilium marks
/// its own SNAT-done frames the same way (`MARK_MAGIC_SNAT_DONE`). Mark bits the
/// container set never get here: a veth clears `skb->mark` when a frame changes
/// namespace. Read natively ("nffp").
pub const FAST_PATH_MARK: u32 = u32::from_ne_bytes(*b"nffp");

/// XDP's decided mark for a frame it translated toward a container (a DNAT to a
/// backend, or a reply to a masqueraded flow): the tc ingress program behind XDP
/// passes it like [`XDP_DECIDED_MARK`], or sends it into the container on the fast
/// path. Read natively ("nfxc").
pub const XDP_DECIDED_TO_CONTAINER_MARK: u32 = u32::from_ne_bytes(*b"nfxc");

/// `ENDPOINTS` entries: containers one instance can reach by redirect.
pub const ENDPOINTS_CAPACITY: u32 = 16_384;
