//! Links, addresses and routes over rtnetlink, plus the per-namespace IPv4 sysctls.
//!
//! Every function takes the rtnetlink [`Handle`] whose socket lives in the namespace to
//! act on (see [`crate::host::netlink::netlink_in`]). The `/proc/sys` helpers act on the calling
//! thread's namespace: `/proc/sys/net` shows the namespace of the thread that opens it.

use std::{
    fs,
    io::{self, Write},
    net::{IpAddr, Ipv4Addr},
    ops::RangeInclusive,
    os::fd::AsRawFd,
};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::{
    Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressHeaderFlags, AddressMessage},
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
        route::RouteAttribute,
    },
};

pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
pub const IP_LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
/// Linux's limit on interface names, without the trailing NUL.
pub const IFNAMSIZ_MAX: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("could not {action}: {error}")]
    Netlink {
        action: String,
        error: rtnetlink::Error,
    },
    #[error("interface {name:?} does not exist in this network namespace")]
    NoSuchLink { name: String },
    #[error("could not {action} {path}: {error}")]
    Proc {
        action: &'static str,
        path: &'static str,
        error: io::Error,
    },
    #[error("{path} holds {content:?}, which is not what the kernel writes there")]
    ProcFormat { path: &'static str, content: String },
}

type Result<T> = std::result::Result<T, TopologyError>;

/// The errno of a netlink error reply, if `e` is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn nl(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> TopologyError {
    let action = action.into();
    move |error| TopologyError::Netlink { action, error }
}

/// Checks a Linux interface name: 1..=15 bytes, no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > IFNAMSIZ_MAX {
        return Err("it is longer than 15 bytes (Linux's IFNAMSIZ limit)");
    }
    if name == "." || name == ".." {
        return Err("it is a path component");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic())
    {
        return Err("it contains '/', ':', whitespace or a non-printable character");
    }
    Ok(())
}

/// What netfast needs to know about an existing link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `InfoKind` as the kernel names it ("bridge", "veth", ...); None for physical links
    /// and loopback.
    pub kind: Option<String>,
    /// Index of the bridge (or other controller) the link is plugged into.
    pub master: Option<u32>,
    pub up: bool,
    /// The link-layer address, for an Ethernet-like link.
    pub mac: Option<[u8; 6]>,
}

fn link_from_message(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        mac: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Controller(m) if *m != 0 => link.master = Some(*m),
            LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// The link called `name`, or None when there is none.
pub async fn link(h: &Handle, name: &str) -> Result<Option<Link>> {
    let mut stream = h.link().get().match_name(name).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(link_from_message(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up interface {name:?}"))(e)),
    }
}

/// The index of link `name`, or None when there is none.
pub async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>> {
    Ok(link(h, name).await?.map(|l| l.index))
}

/// The index of link `name`, or [`TopologyError::NoSuchLink`].
pub async fn require_link(h: &Handle, name: &str) -> Result<u32> {
    link_index(h, name)
        .await?
        .ok_or_else(|| TopologyError::NoSuchLink {
            name: name.to_string(),
        })
}

/// Every link of the namespace.
pub async fn links(h: &Handle) -> Result<Vec<Link>> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list interfaces"))?;
    Ok(msgs.iter().map(link_from_message).collect())
}

/// Creates a bridge (down, no address). Returns its index.
///
/// Its MAC address is set explicitly to the one it was created with, as Docker does:
/// a bridge whose address was never set takes the lowest MAC of its ports
/// (`br_stp_recalculate_bridge_id`), so it would change as containers come and go,
/// behind the containers' ARP entries for their gateway and the `ENDPOINTS` entries
/// that hold it.
pub async fn create_bridge(h: &Handle, name: &str) -> Result<u32> {
    let msg = LinkMessageBuilder::<rtnetlink::LinkBridge>::new(name).build();
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(nl(format!("create bridge {name:?}")))?;
    let index = require_link(h, name).await?;
    if let Some(mac) = link(h, name).await?.and_then(|l| l.mac) {
        h.link()
            .change(
                LinkUnspec::new_with_index(index)
                    .address(mac.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("pin the MAC address of bridge {name:?}")))?;
    }
    Ok(index)
}

/// A static forwarding entry for `mac` on the bridge port `port` (`bridge fdb replace
/// MAC dev PORT master static`): it never ages out. The fast path carries a
/// container's traffic past the bridge, so the bridge would otherwise stop seeing the
/// container's frames, forget its MAC after `ageing_time` (300 s) and flood what it
/// still forwards to it (the host's own traffic) to every port. The entry goes with
/// the port.
pub async fn add_static_fdb(h: &Handle, port: u32, mac: [u8; 6]) -> Result<()> {
    h.neighbours()
        .add_bridge(port, &mac)
        .state(NeighbourState::Noarp)
        .flags(NeighbourFlags::Controller)
        .replace()
        .execute()
        .await
        .map_err(nl(format!(
            "add a static bridge entry for interface #{port}"
        )))
}

/// Deletes the static forwarding entry [`add_static_fdb`] made for `mac` on bridge port
/// `port` (`bridge fdb del MAC dev PORT master`); false when there was none (ENOENT),
/// or the port is gone (ENODEV: the entry went with it).
pub async fn delete_static_fdb(h: &Handle, port: u32, mac: [u8; 6]) -> Result<bool> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = port;
    msg.header.flags = NeighbourFlags::Controller;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    match h.neighbours().del(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ENODEV)) => Ok(false),
        Err(e) => Err(nl(format!(
            "delete the static bridge entry on interface #{port}"
        ))(e)),
    }
}

/// Creates a veth pair `name` ↔ `peer`, with `peer` created directly inside the
/// namespace `peer_netns` (an open namespace file), so the peer name never has to be
/// free in this namespace. Returns the index of `name`.
pub async fn create_veth(
    h: &Handle,
    name: &str,
    peer: &str,
    peer_netns: &impl AsRawFd,
) -> Result<u32> {
    let peer_msg = LinkUnspec::new_with_name(peer)
        .setns_by_fd(peer_netns.as_raw_fd())
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(nl(format!("create veth pair {name:?} <-> {peer:?}")))?;
    require_link(h, name).await
}

/// Plugs link `index` into the bridge `master`.
pub async fn set_master(h: &Handle, index: u32, master: u32) -> Result<()> {
    h.link()
        .change(LinkUnspec::new_with_index(index).controller(master).build())
        .execute()
        .await
        .map_err(nl(format!("plug interface #{index} into bridge #{master}")))
}

/// Sets link `index` administratively up.
pub async fn set_up(h: &Handle, index: u32) -> Result<()> {
    h.link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("set interface #{index} up")))
}

/// Sets the link called `name` up (for `lo` inside a fresh namespace, say).
pub async fn set_up_by_name(h: &Handle, name: &str) -> Result<()> {
    let index = require_link(h, name).await?;
    set_up(h, index).await
}

/// Deletes link `index`. Deleting one end of a veth pair deletes both.
/// Returns false when it was already gone.
pub async fn delete_link(h: &Handle, index: u32) -> Result<bool> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(nl(format!("delete interface #{index}"))(e)),
    }
}

/// Deletes the link called `name`; false when there is none.
pub async fn delete_link_by_name(h: &Handle, name: &str) -> Result<bool> {
    match link_index(h, name).await? {
        Some(index) => delete_link(h, index).await,
        None => Ok(false),
    }
}

/// An IPv4 address of a link: `local` with its prefix, and for point-to-point
/// addresses the peer (IFA_ADDRESS when it differs from IFA_LOCAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Address {
    pub local: Ipv4Net,
    pub peer: Option<Ipv4Addr>,
}

/// IPv4 addresses of link `index`, in the kernel's order (primary first).
pub async fn ipv4_addresses(h: &Handle, index: u32) -> Result<Vec<Ipv4Address>> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("list addresses of interface #{index}")))?;
    let mut out = Vec::new();
    for msg in msgs {
        if msg.header.family != AddressFamily::Inet || msg.header.index != index {
            continue;
        }
        let (mut local, mut address) = (None, None);
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
                AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
                _ => {}
            }
        }
        let Some(addr) = local.or(address) else {
            continue;
        };
        let Ok(net) = Ipv4Net::new(addr, msg.header.prefix_len) else {
            continue;
        };
        out.push(Ipv4Address {
            local: net,
            peer: address.filter(|a| *a != addr),
        });
    }
    Ok(out)
}

/// An IPv4 address of the namespace, with what the kernel's choice of a source
/// address depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostAddress {
    /// The interface's index.
    pub index: u32,
    pub local: Ipv4Net,
    /// IFA_F_SECONDARY: a further address in a subnet that has a primary one;
    /// `inet_select_addr` (the source MASQUERADE and unset route sources take) skips
    /// it.
    pub secondary: bool,
}

/// Every IPv4 address of every interface of the calling thread's namespace, in the
/// kernel's order (per interface, primaries first).
pub async fn host_ipv4_addresses(h: &Handle) -> Result<Vec<HostAddress>> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list the namespace's addresses".to_string()))?;
    let mut out = Vec::new();
    for msg in msgs {
        if msg.header.family != AddressFamily::Inet {
            continue;
        }
        let local = msg.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => Some(*a),
            _ => None,
        });
        let address = msg.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(IpAddr::V4(a)) => Some(*a),
            _ => None,
        });
        let Some(addr) = local.or(address) else {
            continue;
        };
        let Ok(net) = Ipv4Net::new(addr, msg.header.prefix_len) else {
            continue;
        };
        out.push(HostAddress {
            index: msg.header.index,
            local: net,
            secondary: msg.header.flags.contains(AddressHeaderFlags::Secondary),
        });
    }
    Ok(out)
}

/// Adds `address` (with its prefix, which also adds the subnet route) to link `index`.
/// Returns false when the link already had it.
pub async fn add_address(h: &Handle, index: u32, address: Ipv4Net) -> Result<bool> {
    match h
        .address()
        .add(index, IpAddr::V4(address.addr()), address.prefix_len())
        .execute()
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(nl(format!("add address {address} to interface #{index}"))(
            e,
        )),
    }
}

/// Adds a point-to-point address: `local` peer `peer`/32 (`ip addr add L peer P/32`),
/// which also adds the /32 route to `peer` through this link.
/// Returns false when the link already had it.
pub async fn add_p2p_address(
    h: &Handle,
    index: u32,
    local: Ipv4Addr,
    peer: Ipv4Addr,
) -> Result<bool> {
    let mut req = h.address().add(index, IpAddr::V4(local), 32);
    let msg = req.message_mut();
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(local)),
        AddressAttribute::Address(IpAddr::V4(peer)),
    ];
    match req.execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(nl(format!(
            "add address {local} peer {peer}/32 to interface #{index}"
        ))(e)),
    }
}

/// Removes an address added by [`add_address`] or [`add_p2p_address`].
/// Returns false when it was not there.
pub async fn delete_address(h: &Handle, index: u32, address: &Ipv4Address) -> Result<bool> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.index = index;
    msg.header.prefix_len = address.local.prefix_len();
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(address.local.addr())),
        AddressAttribute::Address(IpAddr::V4(address.peer.unwrap_or(address.local.addr()))),
    ];
    match h.address().del(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL) | Some(libc::ENODEV)) => Ok(false),
        Err(e) => Err(nl(format!(
            "delete address {} from interface #{index}",
            address.local
        ))(e)),
    }
}

/// Adds `default via gateway dev oif`. Returns false when a default route existed
/// already (it is kept as it is).
pub async fn add_default_route(h: &Handle, gateway: Ipv4Addr, oif: u32) -> Result<bool> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(oif)
        .build();
    match h.route().add(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(nl(format!(
            "add default route via {gateway} on interface #{oif}"
        ))(e)),
    }
}

/// The gateway of the main table's IPv4 default route, if there is one.
pub async fn default_gateway(h: &Handle) -> Result<Option<Ipv4Addr>> {
    let msgs: Vec<_> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl("list IPv4 routes"))?;
    for msg in msgs {
        if msg.header.destination_prefix_length != 0
            || msg.header.table != rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN
        {
            continue;
        }
        for attr in &msg.attributes {
            if let RouteAttribute::Gateway(rtnetlink::packet_route::route::RouteAddress::Inet(g)) =
                attr
            {
                return Ok(Some(*g));
            }
        }
    }
    Ok(None)
}

fn read_proc(path: &'static str) -> Result<String> {
    fs::read_to_string(path).map_err(|error| TopologyError::Proc {
        action: "read",
        path,
        error,
    })
}

/// `net.ipv4.ip_forward` of the calling thread's namespace.
pub fn ip_forward() -> Result<bool> {
    let content = read_proc(IP_FORWARD)?;
    match content.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(TopologyError::ProcFormat {
            path: IP_FORWARD,
            content,
        }),
    }
}

/// Sets `net.ipv4.ip_forward` in the calling thread's namespace.
pub fn set_ip_forward(on: bool) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(IP_FORWARD)
        .map_err(|error| TopologyError::Proc {
            action: "open",
            path: IP_FORWARD,
            error,
        })?;
    f.write_all(if on { b"1\n" } else { b"0\n" })
        .map_err(|error| TopologyError::Proc {
            action: "write",
            path: IP_FORWARD,
            error,
        })
}

/// Parses `ip_local_port_range` ("32768\t60999").
pub fn parse_port_range(content: &str) -> Option<RangeInclusive<u16>> {
    let mut it = content.split_whitespace();
    let lo = it.next()?.parse().ok()?;
    let hi = it.next()?.parse().ok()?;
    if it.next().is_some() || lo > hi {
        return None;
    }
    Some(lo..=hi)
}

/// `net.ipv4.ip_local_port_range` of the calling thread's namespace.
pub fn ip_local_port_range() -> Result<RangeInclusive<u16>> {
    let content = read_proc(IP_LOCAL_PORT_RANGE)?;
    parse_port_range(&content).ok_or(TopologyError::ProcFormat {
        path: IP_LOCAL_PORT_RANGE,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("1024 65535"), Some(1024..=65535));
        assert_eq!(parse_port_range("5 4"), None);
        assert_eq!(parse_port_range("5"), None);
        assert_eq!(parse_port_range("a b"), None);
    }

    #[test]
    fn ifnames() {
        assert!(validate_ifname("veth1-peer").is_ok());
        assert!(validate_ifname("123456789012345").is_ok());
        assert!(validate_ifname("1234567890123456").is_err());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("a b").is_err());
        assert!(validate_ifname("a:1").is_err());
    }
}
