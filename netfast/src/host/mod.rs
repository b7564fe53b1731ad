//! The host side of an instance: network namespaces, links, addresses, routes and
//! sysctls, all over rtnetlink or /proc. Nothing here knows about eBPF.
//!
//! - [`cgroup`]: the cgroup2 mount and directories, the namespace's cookie;
//! - [`netns`]: named namespaces, entering one on a scoped thread;
//! - [`netlink`]: the one rtnetlink helper ([`netlink::netlink_blocking`]);
//! - [`topology`]: veths, the bridge, addresses, routes, ip_forward.

pub mod cgroup;
pub mod netlink;
pub mod netns;
pub mod topology;
