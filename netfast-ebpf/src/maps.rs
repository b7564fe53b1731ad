//! The datapath's state. BTF map definitions, so `bpftool map dump` pretty-prints them.

use aya_ebpf::{
    bindings::BPF_F_NO_COMMON_LRU,
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray},
    macros::btf_map,
};
use netfast_common::{
    Backend, Counter, CtEntry, CtTuple, DatapathConfig, Endpoint, FragEntry, FragKey, HostAddr,
    PublishKey, SockRevEntry, SockRevKey,
    names::{
        CONNTRACK_CAPACITY, CONNTRACK_UNASSURED_CAPACITY, ENDPOINTS_CAPACITY, FRAGMENTS_CAPACITY,
        HOST_ADDRS_CAPACITY, HOST_LOCAL_REVERSE_CAPACITY, PUBLISHED_PORTS_CAPACITY,
    },
};

#[btf_map]
pub static CONFIG: Array<DatapathConfig, 1> = Array::new();

#[btf_map]
pub static PUBLISHED_PORTS: HashMap<PublishKey, Backend, { PUBLISHED_PORTS_CAPACITY as usize }> =
    HashMap::new();

/// Assured flows (`netfast_common::tcp::TcpState::is_assured`, or a UDP or ICMP
/// reply seen). LRU so that a full table evicts the coldest flow instead of refusing
/// new ones; only assured flows are ever inserted, so only they can push one out.
///
/// `BPF_F_NO_COMMON_LRU`: an LRU list per CPU, as Cilium's CT maps have. With the one
/// common list, every CPU's refill of its local free nodes (each 128 inserts) takes
/// the global lock and rotates the shared lists, a stall on the connection that pays
/// for it: the benchmark's connect p99 fell from ×1.60 to ×0.86 of iptables-nft (one
/// CPU) with this flag. The kernel rounds `max_entries` to a multiple of the possible
/// CPUs (`netfast::bpf::maps::conntrack_map_entries`).
#[btf_map]
pub static CONNTRACK: LruHashMap<
    CtTuple,
    CtEntry,
    { CONNTRACK_CAPACITY as usize },
    { BPF_F_NO_COMMON_LRU as usize },
> = LruHashMap::new();

/// New flows until they are assured, then they move to `CONNTRACK`. A flood of flows
/// that never get there (SYNs from spoofed sources, say) evicts only its own kind,
/// the way nf_conntrack's `early_drop` takes only unassured entries.
#[btf_map]
pub static CONNTRACK_UNASSURED: LruHashMap<
    CtTuple,
    CtEntry,
    { CONNTRACK_UNASSURED_CAPACITY as usize },
> = LruHashMap::new();

/// First fragments' ports, for their datagrams' later fragments (`fragment.rs`).
#[btf_map]
pub static FRAGMENTS: LruHashMap<FragKey, FragEntry, { FRAGMENTS_CAPACITY as usize }> =
    LruHashMap::new();

/// Addresses of the host namespace (network byte order) that a host-local connect to
/// a port published without a host address counts as the host (`host_local.rs`).
#[btf_map]
pub static HOST_ADDRS: HashMap<u32, HostAddr, { HOST_ADDRS_CAPACITY as usize }> = HashMap::new();

/// What each host-local socket asked for, by socket cookie and backend, as Cilium's
/// `lb4_reverse_sk`. LRU: entries of closed sockets age out.
#[btf_map]
pub static HOST_LOCAL_REVERSE: LruHashMap<
    SockRevKey,
    SockRevEntry,
    { HOST_LOCAL_REVERSE_CAPACITY as usize },
> = LruHashMap::new();

/// Container endpoints by address (network byte order): where `container_ingress_tc`
/// redirects a translated frame, and with which MACs. `netfast up` fills it.
#[btf_map]
pub static ENDPOINTS: HashMap<u32, Endpoint, { ENDPOINTS_CAPACITY as usize }> = HashMap::new();

/// The container side's tail calls: `container_hairpin_tc` at
/// `names::CALL_CONTAINER_HAIRPIN`. `netfast up` fills it.
#[btf_map]
pub static CONTAINER_CALLS: ProgramArray<1> = ProgramArray::new();

/// The layout version of the pinned maps (`netfast_common::layout`). Userspace
/// writes and checks it; no program reads it.
#[btf_map]
pub static META: Array<u64, 1> = Array::new();

#[btf_map]
pub static COUNTERS: PerCpuArray<u64, { Counter::COUNT as usize }> = PerCpuArray::new();

/// The `ENDPOINTS` entry of the container at `addr` (network byte order), copied out.
#[inline(always)]
pub fn endpoint(addr: u32) -> Option<Endpoint> {
    // SAFETY: the value is copied out at once.
    unsafe { ENDPOINTS.get(&addr) }.copied()
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot is only ever touched by the CPU running this program.
        unsafe { *slot += 1 };
    }
}
