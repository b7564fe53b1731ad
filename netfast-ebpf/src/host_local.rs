//! Host-local access to published ports: cgroup socket programs that rewrite a host
//! socket's destination to the backend before the kernel routes it, and give the
//! published address back to `recvmsg` and `getpeername`. Cilium's `bpf_sock.c` is
//! the model: no packet is ever translated, so the uplink's programs (which never see
//! this traffic: it leaves through the bridge or a container's veth) need no case for
//! it.
//!
//! Only sockets of the instance's host namespace are touched (`bpf_get_netns_cookie`
//! against `CONFIG.host_netns_cookie`): the cgroup programs run for every namespace,
//! and a container's own `127.0.0.1:P` must stay its own.
//!
//! Every call ends in exactly one host-local `Counter`; the programs always let the
//! call proceed (a cgroup sock_addr program that returns 0 fails the syscall with
//! EPERM, which no decision here calls for).

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
};
use netfast_common::{Backend, Counter, PublishKey, SockRevEntry, SockRevKey, proto};

use crate::{
    maps::{HOST_ADDRS, HOST_LOCAL_REVERSE, PUBLISHED_PORTS},
    uplink::config,
};

/// 127.0.0.0/8 in network byte order, as `user_ip4` holds it.
const LOOPBACK_NET: u32 = u32::from_ne_bytes([127, 0, 0, 0]);
const LOOPBACK_MASK: u32 = u32::from_ne_bytes([255, 0, 0, 0]);

/// The socket call's address: the destination for connect and sendmsg, the peer for
/// recvmsg and getpeername.
struct SockAddr {
    ctx: *mut bpf_sock_addr,
}

impl SockAddr {
    /// Both fields are 4-byte context fields; the verifier refuses narrower writes,
    /// and volatile keeps LLVM from narrowing the reads of `user_port`.
    #[inline(always)]
    fn addr(&self) -> u32 {
        // SAFETY: `ctx` is the program's context; user_ip4 is readable in every
        // sock_addr hook this file serves.
        unsafe { core::ptr::read_volatile(&(*self.ctx).user_ip4) }
    }

    /// Network byte order, as in the sockaddr (the context keeps it in the low 16
    /// bits of a u32).
    #[inline(always)]
    fn port(&self) -> u16 {
        // SAFETY: as for `addr`.
        unsafe { core::ptr::read_volatile(&(*self.ctx).user_port) as u16 }
    }

    #[inline(always)]
    fn set(&mut self, addr: u32, port: u16) {
        // SAFETY: user_ip4 and user_port are writable in connect4, sendmsg4, recvmsg4
        // and getpeername4, as whole u32s.
        unsafe {
            core::ptr::write_volatile(&mut (*self.ctx).user_ip4, addr);
            core::ptr::write_volatile(&mut (*self.ctx).user_port, u32::from(port));
        }
    }

    #[inline(always)]
    fn protocol(&self) -> u8 {
        // SAFETY: protocol is readable in every sock_addr hook.
        unsafe { (*self.ctx).protocol as u8 }
    }

    /// The socket's cookie, for `HOST_LOCAL_REVERSE`.
    #[inline(always)]
    fn cookie(&self) -> u64 {
        // SAFETY: the helper takes the program's own context.
        unsafe { bpf_get_socket_cookie(self.ctx.cast()) }
    }
}

/// Whether the call is one these programs act on: `CONFIG` written with a cookie, a
/// socket of the host namespace, TCP or UDP. Err is the counter that says why not.
#[inline(always)]
fn in_scope(sa: &SockAddr) -> Result<u8, Counter> {
    let Some(config) = config() else {
        return Err(Counter::HostLocalNotConfigured);
    };
    if config.host_netns_cookie == 0 {
        return Err(Counter::HostLocalNotConfigured);
    }
    // SAFETY: the helper takes the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(sa.ctx.cast()) };
    if netns != config.host_netns_cookie {
        return Err(Counter::HostLocalOtherNetns);
    }
    match sa.protocol() {
        p @ (proto::TCP | proto::UDP) => Ok(p),
        _ => Err(Counter::HostLocalOtherProtocol),
    }
}

/// Whether `addr` (network byte order) is the host for a publish without a host
/// address: loopback, or an address `up` put in `HOST_ADDRS`.
#[inline(always)]
fn is_host_addr(addr: u32) -> bool {
    addr & LOOPBACK_MASK == LOOPBACK_NET || HOST_ADDRS.get_ptr(&addr).is_some()
}

/// The backend for a call to `addr:port`: a publish on exactly that address first,
/// then one on every address when `addr` is the host's.
#[inline(always)]
fn published(addr: u32, port: u16, proto: u8) -> Option<Backend> {
    let mut key = PublishKey {
        host_addr: addr,
        host_port: port,
        proto,
        _pad: 0,
    };
    if addr != 0
        && let Some(backend) = lookup(&key)
    {
        return Some(backend);
    }
    if !is_host_addr(addr) {
        return None;
    }
    key.host_addr = 0;
    lookup(&key)
}

#[inline(always)]
fn lookup(key: &PublishKey) -> Option<Backend> {
    // SAFETY: the value is copied out at once.
    unsafe { PUBLISHED_PORTS.get(key).copied() }
}

/// connect4 and sendmsg4: a published port on an address of the host becomes its
/// backend; the address asked for is remembered first, so replies can be given back.
#[inline(always)]
pub fn forward(ctx: *mut bpf_sock_addr) -> Counter {
    let mut sa = SockAddr { ctx };
    let proto = match in_scope(&sa) {
        Ok(p) => p,
        Err(counter) => return counter,
    };
    let (addr, port) = (sa.addr(), sa.port());
    let Some(backend) = published(addr, port, proto) else {
        return Counter::HostLocalNotPublished;
    };
    let key = SockRevKey {
        cookie: sa.cookie(),
        backend_addr: backend.addr,
        backend_port: backend.port,
        proto,
        _pad: 0,
    };
    let asked = SockRevEntry {
        addr,
        port,
        _pad: [0; 2],
    };
    // Without the entry, recvmsg and getpeername would show the backend: leave the
    // call as it was instead (it fails as it did before host-local access).
    if HOST_LOCAL_REVERSE.insert(&key, &asked, 0).is_err() {
        return Counter::HostLocalReverseFailed;
    }
    sa.set(backend.addr, backend.port);
    Counter::HostLocalRewritten
}

/// recvmsg4 and getpeername4: a backend this socket was sent to is reported as the
/// published address and port the socket asked for.
#[inline(always)]
pub fn reverse(ctx: *mut bpf_sock_addr) -> Counter {
    let mut sa = SockAddr { ctx };
    let proto = match in_scope(&sa) {
        Ok(p) => p,
        Err(counter) => return counter,
    };
    let key = SockRevKey {
        cookie: sa.cookie(),
        backend_addr: sa.addr(),
        backend_port: sa.port(),
        proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    match unsafe { HOST_LOCAL_REVERSE.get(&key).copied() } {
        Some(asked) => {
            sa.set(asked.addr, asked.port);
            Counter::HostLocalReplyRewritten
        }
        None => Counter::HostLocalReverseMiss,
    }
}
