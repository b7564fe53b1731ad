//! Docker's `-p` syntax: `[HOST_IP:]HOST_PORT[-END]:CONTAINER_IP:PORT[-END][/tcp|udp]`.
//!
//! TODO(config helper): `FromStr`, `Display`, expansion to map entries, unit tests.

use std::{net::Ipv4Addr, ops::RangeInclusive};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One published port or port range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishSpec {
    /// None publishes on the uplink's address.
    pub host_addr: Option<Ipv4Addr>,
    pub host_ports: RangeInclusive<u16>,
    pub backend_addr: Ipv4Addr,
    pub backend_ports: RangeInclusive<u16>,
    pub protocol: Protocol,
}
