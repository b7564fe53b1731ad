//! The single entry of the `CONFIG` array: what the datapath needs to know about the host.

use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DatapathConfig {
    /// The uplink's address: the masquerade source and the "any" of published ports.
    /// Network byte order.
    pub uplink_addr: u32,
    /// The masqueraded subnet, network byte order: a packet's source is in it when
    /// `src & subnet_mask == subnet_addr`.
    pub subnet_addr: u32,
    pub subnet_mask: u32,
    /// Inclusive SNAT source-port range, host byte order.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// 0 until userspace has written the entry; the datapath passes everything until then.
    pub enabled: u8,
    /// 0 when no `[masquerade]` is configured: nothing is SNAT-ed, whatever the subnet.
    pub masquerade: u8,
    /// The host's own ephemeral ports (`net.ipv4.ip_local_port_range` of the host
    /// namespace at `up`), host byte order, inclusive. A container's source port is
    /// kept only outside them: inside, the host may pick the same port for a
    /// connection of its own later, which nothing in the datapath would see coming.
    pub ephemeral_min: u16,
    pub ephemeral_max: u16,
    /// 1 when the config's `[masquerade] allow_direct_routing` is true: packets from
    /// the uplink routed straight to an address of the masqueraded subnet pass as the
    /// kernel routes them. 0 (the default): such a packet that belongs to no flow and
    /// no published port is dropped (`Counter::DropRoutedToContainer`), as Docker's
    /// default NAT gateway mode drops direct access to containers.
    pub allow_direct_routing: u8,
    /// 1 (the default, `[datapath] fast_path = true`): translated packets go straight
    /// between the uplink and a container's veth, past the bridge and the host's
    /// routing (`bpf_redirect_peer` into the container, `bpf_fib_lookup` plus
    /// `bpf_redirect` to the uplink). 0: they take the bridge and the host's routing,
    /// as before the fast path.
    pub fast_path: u8,
    /// The host namespace's cookie (`SO_NETNS_COOKIE`, `bpf_get_netns_cookie`), native
    /// byte order. The host-local programs act only on sockets of this namespace, so a
    /// container's own `127.0.0.1` is never touched. 0 until userspace writes it: the
    /// host-local programs then leave every socket alone.
    pub host_netns_cookie: u64,
    /// The uplink's ifindex in the host namespace, host byte order: the container-side
    /// fast path sends a packet out of it only when the kernel's route for the packet
    /// leads there too.
    pub uplink_ifindex: u32,
    pub _pad: [u8; 4],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, explicitly padded, and checked by bytemuck's `Pod` derive.
    unsafe impl aya::Pod for super::DatapathConfig {}
}

const _: () = assert!(core::mem::size_of::<DatapathConfig>() == 40);
