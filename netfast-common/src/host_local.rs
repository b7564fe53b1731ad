//! Host-local access to published ports: the maps of the cgroup socket programs
//! (`connect4`, `sendmsg4`, `recvmsg4`, `getpeername4`).
//!
//! A process of the host namespace that connects (or sends) to a published port on an
//! address of the host has its destination rewritten to the backend before the
//! socket's route is looked up, as Cilium's socket-level load balancer does
//! (`bpf_sock.c`). [`SockRevKey`] → [`SockRevEntry`] (`HOST_LOCAL_REVERSE`, an LRU
//! hash keyed by the socket's cookie, like Cilium's `lb4_reverse_sk`) remembers the
//! address the client used, so `recvmsg` and `getpeername` give it back.

use bytemuck::{Pod, Zeroable};

/// `HOST_LOCAL_REVERSE` key: one socket and the backend the host-local programs sent it
/// to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockRevKey {
    /// The socket's cookie (`bpf_get_socket_cookie`): unique for the machine's uptime.
    /// Native byte order.
    pub cookie: u64,
    /// The backend's address, network byte order.
    pub backend_addr: u32,
    /// The backend's port, network byte order.
    pub backend_port: u16,
    /// `netfast_common::proto::TCP` or `UDP`.
    pub proto: u8,
    pub _pad: u8,
}

/// `HOST_LOCAL_REVERSE` value: what the client asked for, which `recvmsg` and
/// `getpeername` report in place of the backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockRevEntry {
    /// The published address the client used, network byte order.
    pub addr: u32,
    /// The published port, network byte order.
    pub port: u16,
    pub _pad: [u8; 2],
}

/// `HOST_ADDRS` value: where an address of the host came from, for `status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HostAddr {
    /// The interface that held the address at `up` (host byte order); 0 for an address
    /// `up` was about to add (the bridge's, a point-to-point host address).
    pub ifindex: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, explicitly padded, and checked by bytemuck's `Pod` derive.
    unsafe impl aya::Pod for super::SockRevKey {}
    unsafe impl aya::Pod for super::SockRevEntry {}
    unsafe impl aya::Pod for super::HostAddr {}
}

const _: () = assert!(core::mem::size_of::<SockRevKey>() == 16);
const _: () = assert!(core::mem::size_of::<SockRevEntry>() == 8);
const _: () = assert!(core::mem::size_of::<HostAddr>() == 4);
