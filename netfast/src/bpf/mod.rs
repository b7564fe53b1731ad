//! The eBPF side of an instance, as userspace sees it.
//!
//! - [`object`]: the datapath object embedded in this binary and the map shapes it defines;
//! - [`pins`]: where an instance's maps and links live on bpffs;
//! - [`layout`]: the check that refuses maps another build wrote;
//! - [`prog_load`]: `BPF_PROG_LOAD`, tried again when a signal interrupted the verifier;
//! - [`loader`]: load, attach and pin; fill CONFIG and PUBLISHED_PORTS;
//! - [`maps`]: the one way to open a pinned map, and a typed handle per map;
//! - [`pinned`]: a running instance's maps and links, for the operator commands;
//! - [`link_info`]: what a pinned link attaches, from the kernel;
//! - [`features`]: what the kernel offers (tcx, the fast path's helpers, the cgroup
//!   hooks), probed at start;
//! - [`tc_netlink`]: the netlink TC filters that stand in for tcx links, and their record.
//!
//! Imports point down this list; nothing here imports the CLI layer. From the host
//! layer only the rtnetlink helper, namespace identity and cgroup ids are used (the
//! cgroup links, the netlink TC filters, `SO_NETNS_COOKIE`, XDP's mode).

mod error;
pub mod features;
pub mod layout;
pub mod link_info;
pub mod loader;
pub mod maps;
pub mod object;
pub mod pinned;
pub mod pins;
pub mod prog_load;
pub mod tc_netlink;

pub use error::DatapathError;
pub use loader::{
    AttachReport, DatapathSpec, EndpointSpec, IngressMode, TcAttach, TcAttachMode, attach, detach,
};
pub use pinned::{PinnedError, PinnedInstance};
