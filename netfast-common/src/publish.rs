//! Published ports (Docker's `-p`): the `PUBLISHED_PORTS` hash map.

use bytemuck::{Pod, Zeroable};

/// A published host port. `host_addr` 0 means any address of the uplink.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct PublishKey {
    /// Network byte order; 0 for "any".
    pub host_addr: u32,
    /// Network byte order.
    pub host_port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Where a published port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    /// Network byte order.
    pub addr: u32,
    /// Network byte order.
    pub port: u16,
    pub _pad: [u8; 2],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, explicitly padded, and checked by bytemuck's `Pod` derive.
    unsafe impl aya::Pod for super::PublishKey {}
    unsafe impl aya::Pod for super::Backend {}
}

const _: () = assert!(core::mem::size_of::<PublishKey>() == 8);
const _: () = assert!(core::mem::size_of::<Backend>() == 8);
