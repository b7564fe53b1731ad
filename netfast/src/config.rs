//! The operator's TOML configuration, parsed into checked types.
//!
//! TODO(config helper): parsing (`Config::from_file`, `Config::from_toml_str`), defaults,
//! static validation and its unit tests. The types below are the contract the rest of
//! the crate codes against; extend them, don't rename them.

use std::{net::Ipv4Addr, ops::RangeInclusive, path::PathBuf};

use ipnet::Ipv4Net;

use crate::publish::PublishSpec;

/// Everything `netfast up` builds and attaches for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Names the pin directory `/sys/fs/bpf/netfast/<instance>` and the state file.
    pub instance: String,
    /// An existing interface of the host namespace; the datapath attaches here.
    pub uplink: String,
    pub ingress: IngressMode,
    pub bridge: BridgeConfig,
    pub containers: Vec<ContainerConfig>,
    pub masquerade: Option<MasqueradeConfig>,
    pub publish: Vec<PublishSpec>,
    /// Where the file came from, for error messages; None when parsed from a string.
    pub source: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IngressMode {
    /// tcx on the uplink's ingress.
    #[default]
    Tc,
    /// XDP on the uplink (native mode, falling back to skb mode with a message).
    Xdp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    /// The bridge's own address; bridged containers use it as their default gateway.
    pub address: Ipv4Net,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Named network namespace (`/run/netns/<netns>`); created if missing.
    pub netns: String,
    /// The container's address, with its prefix length.
    pub address: Ipv4Net,
    /// Host end of the veth pair.
    pub veth: String,
    /// Container end of the veth pair, inside `netns`.
    pub peer: String,
    /// When set, the container is joined point to point: the host end gets this
    /// address, both ends get /32 peer routes, and the veth is not on the bridge.
    pub host_address: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasqueradeConfig {
    /// Sources in this subnet leaving through the uplink take the uplink's address.
    pub subnet: Ipv4Net,
    /// SNAT source ports; must not overlap the host's `net.ipv4.ip_local_port_range`.
    pub ports: RangeInclusive<u16>,
}
