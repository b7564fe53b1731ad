//! The netlink TC (clsact) attachments of an instance, where tcx is missing (before
//! Linux 6.6) or `tc_attach = "netlink"` asks for them.
//!
//! A netlink TC filter is no bpf_link: it cannot be pinned, and it keeps its program
//! loaded by itself, so the datapath outlives `up` as it does with pinned tcx links.
//! What `down` and `status` need to find them again is recorded in
//! `/run/netfast/<instance>/tc_filters.json`: for each link pin name of the tcx mode
//! (`link_uplink_ingress`, `link_container_<veth>`, ...), the interface, the direction,
//! and the filter's priority and handle the kernel gave; and each interface whose
//! clsact qdisc netfast added, so `down` removes that qdisc and no other.
//!
//! Nothing here trusts the record alone: before a filter is replaced or deleted, the
//! kernel's dump must show a bpf filter at that priority and handle carrying the
//! program name netfast gave it, on the recorded interface of the recorded network
//! namespace. Anything else is left alone.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::{Link as _, TcAttachType, tc::SchedClassifierLink, tc::TcHandle};
use futures::TryStreamExt;
use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcHandle as NlHandle, TcOption};
use serde::{Deserialize, Serialize};

use crate::host::{netlink::netlink_blocking, netns};

/// Where per-instance state lives (`instance::STATE_ROOT` is this).
pub const STATE_ROOT: &str = "/run/netfast";

/// `/run/netfast/<instance>/tc_filters.json`.
pub fn record_path(instance: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(instance).join("tc_filters.json")
}

/// What `tc_filters.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcFilters {
    /// The network namespace the filters were attached in (device and inode of its
    /// nsfs file); None before the first filter.
    pub netns: Option<(u64, u64)>,
    pub filters: Vec<TcFilter>,
    /// Interfaces whose clsact qdisc netfast added.
    pub clsact_added: Vec<Clsact>,
}

/// One filter netfast attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcFilter {
    /// The link pin name tcx mode would use: `link_uplink_ingress`, ...
    pub pin: String,
    pub interface: String,
    pub ifindex: u32,
    /// "ingress" or "egress".
    pub direction: String,
    /// The filter's priority (`tc filter show` calls it pref).
    pub priority: u16,
    /// The filter's handle, `major << 16 | minor`.
    pub handle: u32,
    /// The program's name as given to the filter (TCA_BPF_NAME).
    pub program: String,
}

/// An interface whose clsact qdisc netfast added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clsact {
    pub interface: String,
    pub ifindex: u32,
}

/// A bpf filter as the kernel's dump shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveFilter {
    pub priority: u16,
    pub handle: u32,
    pub prog_id: Option<u32>,
    pub name: Option<String>,
}

impl TcFilter {
    pub fn attach_type(&self) -> TcAttachType {
        if self.direction == "egress" {
            TcAttachType::Egress
        } else {
            TcAttachType::Ingress
        }
    }

    /// "uplink_ingress_tc on eth0: netlink tc ingress, pref 49152 handle 0x1".
    pub fn describe(&self) -> String {
        format!(
            "{} on {}: netlink tc {}, pref {} handle {:#x}",
            self.program, self.interface, self.direction, self.priority, self.handle
        )
    }

    /// The filter in the kernel now, if it is still the one netfast attached: same
    /// interface (by name and index), priority, handle and program name.
    pub fn live(&self) -> io::Result<Option<LiveFilter>> {
        if !interface_is(&self.interface, self.ifindex) {
            return Ok(None);
        }
        Ok(live_filters(self.ifindex, self.attach_type())?
            .into_iter()
            .find(|f| {
                f.priority == self.priority
                    && f.handle == self.handle
                    && f.name.as_deref() == Some(self.program.as_str())
            }))
    }
}

/// Whether `name` is the interface with index `ifindex` in this namespace.
fn interface_is(name: &str, ifindex: u32) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok_and(|i| i == ifindex)
}

/// The direction's word, for the record and messages.
pub fn direction(attach_type: TcAttachType) -> &'static str {
    match attach_type {
        TcAttachType::Egress => "egress",
        _ => "ingress",
    }
}

impl TcFilters {
    /// The record of `instance`; empty when there is none.
    pub fn load(instance: &str) -> io::Result<TcFilters> {
        let path = record_path(instance);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} cannot be read: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TcFilters::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the record (atomically), or removes it when it records nothing.
    pub fn store(&self, instance: &str) -> io::Result<()> {
        let path = record_path(instance);
        if self.filters.is_empty() && self.clsact_added.is_empty() {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            // The state directory goes too when nothing else (the manifest) is in it,
            // so a rolled-back first `up` leaves nothing behind.
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, &path)
    }

    pub fn get(&self, pin: &str) -> Option<&TcFilter> {
        self.filters.iter().find(|f| f.pin == pin)
    }

    /// Records `filter` in place of any filter recorded under its pin.
    pub fn put(&mut self, filter: TcFilter) -> io::Result<()> {
        self.netns.get_or_insert(current_netns()?);
        self.filters.retain(|f| f.pin != filter.pin);
        self.filters.push(filter);
        Ok(())
    }

    /// Whether the record's namespace is the calling thread's (or none is recorded).
    pub fn here(&self) -> io::Result<bool> {
        Ok(match self.netns {
            None => true,
            Some(ns) => ns == current_netns()?,
        })
    }

    /// Deletes the filter recorded under `pin`, if it is still netfast's, and drops
    /// it from the record. Returns it when it was recorded, with whether the kernel
    /// still had it.
    pub fn remove(&mut self, pin: &str) -> io::Result<Option<(TcFilter, bool)>> {
        let Some(filter) = self.get(pin).cloned() else {
            return Ok(None);
        };
        // In another namespace the filter lives or died with it: never touch this one's.
        let live = self.here()? && filter.live()?.is_some();
        if live {
            let link = SchedClassifierLink::attached(
                &filter.interface,
                filter.attach_type(),
                filter.priority,
                TcHandle::from(filter.handle),
                None,
            )?;
            link.detach().map_err(io::Error::other)?;
        }
        self.filters.retain(|f| f.pin != pin);
        Ok(Some((filter, live)))
    }

    /// Removes the clsact qdiscs netfast added on interfaces where no filter of this
    /// record is left, when no other filter sits on them (someone else's would go with
    /// the qdisc: then it stays, and the returned note says so). Returns a line per
    /// qdisc removed or kept.
    pub fn remove_unused_clsact(&mut self) -> io::Result<Vec<String>> {
        let mut notes = Vec::new();
        if !self.here()? {
            self.clsact_added.clear();
            return Ok(notes);
        }
        let mut keep = Vec::new();
        for q in std::mem::take(&mut self.clsact_added) {
            if self.filters.iter().any(|f| f.ifindex == q.ifindex) {
                keep.push(q);
                continue;
            }
            if !interface_is(&q.interface, q.ifindex) || !clsact_present(q.ifindex)? {
                continue;
            }
            // A filter is what `tc filter show` lists under one pref: a u32 filter
            // dumps its hash table nodes as more entries of the same pref.
            let mut prefs: Vec<(bool, u16)> = Vec::new();
            for (egress, hook) in [(false, TcAttachType::Ingress), (true, TcAttachType::Egress)] {
                prefs.extend(
                    live_filters(q.ifindex, hook)?
                        .iter()
                        .map(|f| (egress, f.priority)),
                );
            }
            prefs.sort_unstable();
            prefs.dedup();
            let others = prefs.len();
            if others > 0 {
                notes.push(format!(
                    "kept the clsact qdisc netfast added on {}: {others} filter(s) of \
                     someone else sit on it",
                    q.interface
                ));
                continue;
            }
            delete_clsact(q.ifindex)?;
            notes.push(format!("removed the clsact qdisc on {}", q.interface));
        }
        self.clsact_added = keep;
        Ok(notes)
    }
}

/// The calling thread's network namespace as (device, inode).
fn current_netns() -> io::Result<(u64, u64)> {
    netns::current()
        .map(|id| (id.dev, id.ino))
        .map_err(io::Error::other)
}

fn nl_error(e: rtnetlink::Error) -> io::Error {
    match crate::host::topology::errno(&e) {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::other(e),
    }
}

/// The bpf filters on `ifindex` at clsact's `attach_type` hook, from the kernel's
/// dump (the per-priority heads without a handle are left out).
pub fn live_filters(ifindex: u32, attach_type: TcAttachType) -> io::Result<Vec<LiveFilter>> {
    let index = i32::try_from(ifindex).map_err(io::Error::other)?;
    let egress = matches!(attach_type, TcAttachType::Egress);
    let msgs = netlink_blocking(None, |handle| async move {
        let req = handle.traffic_filter(index).get();
        let req = if egress { req.egress() } else { req.ingress() };
        req.execute().try_collect::<Vec<_>>().await
    })
    .map_err(io::Error::other)?;
    let msgs = match msgs {
        Ok(m) => m,
        // No clsact qdisc: no filters.
        Err(e)
            if matches!(
                crate::host::topology::errno(&e),
                Some(libc::EINVAL | libc::ENOENT)
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(nl_error(e)),
    };
    let mut out = Vec::new();
    for m in msgs {
        let handle = u32::from(m.header.handle.major) << 16 | u32::from(m.header.handle.minor);
        if handle == 0 {
            continue;
        }
        let is_bpf = m
            .attributes
            .iter()
            .any(|a| matches!(a, TcAttribute::Kind(k) if k == "bpf"));
        if !is_bpf {
            // Someone else's classifier (u32, flower, ...): counted as a filter.
            out.push(LiveFilter {
                priority: (m.header.info >> 16) as u16,
                handle,
                prog_id: None,
                name: None,
            });
            continue;
        }
        let mut prog_id = None;
        let mut name = None;
        for a in &m.attributes {
            if let TcAttribute::Options(opts) = a {
                for o in opts {
                    match o {
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => prog_id = Some(*id),
                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => name = Some(n.clone()),
                        _ => {}
                    }
                }
            }
        }
        out.push(LiveFilter {
            priority: (m.header.info >> 16) as u16,
            handle,
            prog_id,
            name,
        });
    }
    Ok(out)
}

/// Whether `ifindex` has a clsact qdisc.
pub fn clsact_present(ifindex: u32) -> io::Result<bool> {
    let index = i32::try_from(ifindex).map_err(io::Error::other)?;
    let msgs = netlink_blocking(None, |handle| async move {
        handle
            .qdisc()
            .get()
            .index(index)
            .execute()
            .try_collect::<Vec<_>>()
            .await
    })
    .map_err(io::Error::other)?
    .map_err(nl_error)?;
    Ok(msgs.iter().any(|m| {
        m.header.index == index
            && m.attributes
                .iter()
                .any(|a| matches!(a, TcAttribute::Kind(k) if k == "clsact"))
    }))
}

/// `tc qdisc del dev X clsact`.
fn delete_clsact(ifindex: u32) -> io::Result<()> {
    let index = i32::try_from(ifindex).map_err(io::Error::other)?;
    netlink_blocking(None, |handle| async move {
        let mut req = handle.qdisc().del(index);
        let msg = req.message_mut();
        msg.header.parent = NlHandle::CLSACT;
        msg.header.handle = NlHandle {
            major: NlHandle::CLSACT.major,
            minor: 0,
        };
        req.execute().await
    })
    .map_err(io::Error::other)?
    .map_err(nl_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_reads_like_the_other_attach_lines() {
        let f = TcFilter {
            pin: "link_uplink_egress".into(),
            interface: "eth0".into(),
            ifindex: 2,
            direction: "egress".into(),
            priority: 49152,
            handle: 1,
            program: "uplink_egress_tc".into(),
        };
        assert_eq!(
            f.describe(),
            "uplink_egress_tc on eth0: netlink tc egress, pref 49152 handle 0x1"
        );
        assert_eq!(f.attach_type(), TcAttachType::Egress);
        let mut r = TcFilters::default();
        r.filters.push(f.clone());
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(serde_json::from_str::<TcFilters>(&text).expect("back"), r);
    }
}
