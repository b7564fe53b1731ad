//! Map layout versioning: the loader refuses pinned maps written by another layout
//! rather than misread them.
//!
//! `LAYOUT_VERSION` is bumped by hand whenever a map's key or value changes meaning
//! or size. [`LAYOUT_FINGERPRINT`] makes the compiler catch a size change that forgot
//! the bump: update both together. A change that keeps every size (reordered fields,
//! a flag whose meaning changes) is not caught; bump the version by hand for it.

use crate::{
    Backend, Counter, CtEntry, CtTuple, DatapathConfig, Endpoint, FragEntry, FragKey, HostAddr,
    PublishKey, SockRevEntry, SockRevKey,
};

/// Layout of the pinned maps this build reads and writes. 1 was the issue-2 layout,
/// which had no `META` map; 2 adds `META` and the 262144-entry `CONNTRACK` default;
/// 3 adds the conntrack half-restore counters; 4 adds `FRAGMENTS` and the ICMP-error,
/// fragment and XDP-partial-checksum counters; 5 adds `xdp_mark_failed` and
/// `drop_conntrack_clash` (main held layout 4 with fewer counters for a while); 6 puts
/// the host's ephemeral port range in `CONFIG` and adds `snat_port_host_socket`; 7
/// adds TCP sequence tracking to `CtEntry`, `CONNTRACK_UNASSURED` and the TCP-state
/// and assurance counters; 8 renames the `FORWARDS` map to `PUBLISHED_PORTS` (a map is
/// found by its name, so an instance pinned under the old name must be brought down
/// with the build that made it, or with this one, and up again); 9 adds the exposure
/// counters (`drop_loopback_publish`, `drop_routed_to_container`) and
/// `allow_direct_routing` in `CONFIG` (taken from its padding), puts the host
/// namespace's cookie in `CONFIG`, and adds `HOST_ADDRS`, `HOST_LOCAL_REVERSE` and the
/// host-local counters, and adds `ENDPOINTS` and the hairpin and container-side
/// counters; 10 adds the fast path (`fast_path`, taken from `CONFIG`'s padding, and
/// `uplink_ifindex` in `CONFIG`, the `CONTAINER_CALLS` program array, the fast-path
/// counters), and routed flows (`ct::KIND_ROUTED`, the `routed_*` counters) and
/// `pass_from_host`.
pub const LAYOUT_VERSION: u64 = 10;

/// The sizes `LAYOUT_VERSION` was set for, packed one byte each (the counter count
/// in the last one). A u128 since layout 9: eleven sizes no longer fit a u64.
pub const LAYOUT_FINGERPRINT: u128 = fingerprint();

const fn fingerprint() -> u128 {
    let sizes = [
        core::mem::size_of::<CtTuple>(),
        core::mem::size_of::<CtEntry>(),
        core::mem::size_of::<PublishKey>(),
        core::mem::size_of::<Backend>(),
        core::mem::size_of::<DatapathConfig>(),
        core::mem::size_of::<FragKey>(),
        core::mem::size_of::<FragEntry>(),
        core::mem::size_of::<SockRevKey>(),
        core::mem::size_of::<SockRevEntry>(),
        core::mem::size_of::<HostAddr>(),
        core::mem::size_of::<Endpoint>(),
        Counter::COUNT as usize,
    ];
    let mut packed = 0u128;
    let mut i = 0;
    while i < sizes.len() {
        packed = (packed << 8) | (sizes[i] as u128 & 0xff);
        i += 1;
    }
    packed
}

// CtTuple 16, CtEntry 56, PublishKey 8, Backend 8, DatapathConfig 40, FragKey 12,
// FragEntry 16, SockRevKey 16, SockRevEntry 8, HostAddr 4, Endpoint 20, 66 counters.
// If this fails, a map layout changed: bump LAYOUT_VERSION and update this value.
const _: () = assert!(
    LAYOUT_FINGERPRINT == 0x10_38_08_08_28_0c_10_10_08_04_14_42,
    "a map layout changed: bump LAYOUT_VERSION and update the fingerprint"
);
