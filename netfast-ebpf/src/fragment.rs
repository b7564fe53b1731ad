//! Later fragments carry no ports: a translated first fragment leaves its ports in
//! `FRAGMENTS`, and the later fragments of its datagram find their flow through them.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use netfast_common::{Counter, CtTuple, FragEntry, FragKey, names::FRAGMENT_TIMEOUT_NS};

use crate::{
    maps::{FRAGMENTS, count},
    parse::Packet,
};

#[inline(always)]
fn frag_key(pkt: &Packet) -> FragKey {
    FragKey {
        src_addr: pkt.key.src_addr,
        dst_addr: pkt.key.dst_addr,
        ip_id: pkt.ip_id,
        proto: pkt.key.proto,
        _pad: 0,
    }
}

/// Records a first fragment's ports, keyed by its datagram as it arrived. BPF_ANY:
/// a reused IP id starts a new datagram, whose first fragment overwrites the record.
#[inline(always)]
pub fn record_first(pkt: &Packet) {
    let entry = FragEntry {
        src_port: pkt.key.src_port,
        dst_port: pkt.key.dst_port,
        _pad: 0,
        // SAFETY: no preconditions.
        seen_ns: unsafe { bpf_ktime_get_coarse_ns() },
    };
    if FRAGMENTS.insert(&frag_key(pkt), &entry, 0).is_err() {
        count(Counter::FragmentRecordFailed);
    }
}

/// The tuple of a later fragment's datagram, from its first fragment's record, or
/// None when no fresh record exists (the first fragment was not translated, has not
/// arrived yet, or is older than the kernel's reassembly timeout).
#[inline(always)]
pub fn later_tuple(pkt: &Packet) -> Option<CtTuple> {
    // SAFETY: the value is copied out at once.
    let entry = unsafe { FRAGMENTS.get(&frag_key(pkt)) }?;
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.wrapping_sub(entry.seen_ns) > FRAGMENT_TIMEOUT_NS {
        return None;
    }
    Some(CtTuple {
        src_port: entry.src_port,
        dst_port: entry.dst_port,
        ..pkt.key
    })
}
