//! Container endpoints: the `ENDPOINTS` hash map, keyed by a container's IPv4 address
//! (a `u32` in network byte order, as it sits in the packet). `netfast up` fills it
//! from the config's `[[container]]` entries; later additions (a CNI plugin) will too.
//! The container-side program redirects translated frames to a container through it.

use bytemuck::{Pod, Zeroable};

/// Where a container lives on the host, and the link-layer addresses its frames carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Endpoint {
    /// The ifindex of the container's host-side veth, in the host namespace. Host
    /// byte order (it is a number, not packet bytes).
    pub ifindex: u32,
    /// The container's gateway: the bridge's address for a bridged container, the
    /// host-side address of a point-to-point one. Hairpin flows to this container
    /// come from it (Docker masquerades hairpin traffic to the gateway). Network
    /// byte order.
    pub gateway: u32,
    /// The MAC address of the container's own interface (the veth's peer): the
    /// destination of frames sent to it. In wire order.
    pub mac: [u8; 6],
    /// The host's MAC address on the container's link, which the container's ARP
    /// entry for its gateway holds: the bridge's for a bridged container, the
    /// host-side veth's for a point-to-point one. The source of frames sent to it.
    /// In wire order.
    pub host_mac: [u8; 6],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, no padding (4 + 4 + 6 + 6 bytes, 4-aligned), and checked
    // by bytemuck's `Pod` derive.
    unsafe impl aya::Pod for super::Endpoint {}
}

const _: () = assert!(core::mem::size_of::<Endpoint>() == 20);
