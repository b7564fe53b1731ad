//! The one way netlink work runs: an rtnetlink handle bound to a namespace, driven on
//! a thread and runtime of its own when the caller has none.

use super::netns::{NetnsError, panic_message, run_in};

/// Runs `f` with an rtnetlink handle of namespace `ns` (None: the calling thread's)
/// on a thread of its own, with its own current-thread runtime, so it works from sync
/// code, from `Drop`, and from inside another runtime alike: the one way netlink work
/// runs outside a runtime. The outer error is the thread's, the runtime's or the
/// socket's; the inner one is `f`'s.
pub fn netlink_blocking<F, Fut, T, E>(ns: Option<&str>, f: F) -> Result<Result<T, E>, NetnsError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, E>>,
    T: Send,
    E: Send,
{
    let work = move || -> Result<Result<T, E>, NetnsError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NetnsError::Runtime)?;
        let h = netlink_here(rt.handle())?;
        Ok(rt.block_on(f(h)))
    };
    match ns {
        Some(ns) => run_in(ns, work)?,
        // A new thread inherits the network namespace of the thread that starts it.
        None => std::thread::scope(|s| s.spawn(work).join()).map_err(|panic| {
            NetnsError::ThreadPanicked {
                name: "(current)".to_string(),
                message: panic_message(panic.as_ref()),
            }
        })?,
    }
}

/// An rtnetlink handle whose socket lives in the calling thread's network namespace.
/// The connection task is spawned on `rt`; requests complete while `rt` is driven.
pub fn netlink_here(rt: &tokio::runtime::Handle) -> Result<rtnetlink::Handle, NetnsError> {
    let _entered = rt.enter();
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|error| NetnsError::Netlink {
            name: "(current)".to_string(),
            error,
        })?;
    rt.spawn(connection);
    Ok(handle)
}

/// An rtnetlink handle whose socket lives in namespace `name`: the socket is created on a
/// thread that entered `name`, and a netlink socket stays bound to the namespace it was
/// created in. The connection task is spawned on `rt`.
pub fn netlink_in(
    name: &str,
    rt: &tokio::runtime::Handle,
) -> Result<rtnetlink::Handle, NetnsError> {
    run_in(name, || netlink_here(rt))?.map_err(|e| match e {
        NetnsError::Netlink { error, .. } => NetnsError::Netlink {
            name: name.to_string(),
            error,
        },
        other => other,
    })
}

/// XDP's attach mode of program `prog_id` on `ifindex`, from netlink (IFLA_XDP):
/// "native", "skb" or "hw", or None if it cannot be told.
pub fn xdp_mode(ifindex: u32, prog_id: u32) -> Option<&'static str> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp, XdpAttached};
    let msg = netlink_blocking(None, |handle| async move {
        handle
            .link()
            .get()
            .match_index(ifindex)
            .execute()
            .try_next()
            .await
    })
    .ok()?
    .ok()??;
    let xdp = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(x) => Some(x),
        _ => None,
    })?;
    let attached = xdp.iter().find_map(|x| match x {
        LinkXdp::Attached(a) => Some(a),
        _ => None,
    })?;
    match attached {
        XdpAttached::Driver => Some("native"),
        XdpAttached::SocketBuffer => Some("skb"),
        XdpAttached::Hardware => Some("hw"),
        XdpAttached::Multiple => xdp.iter().find_map(|x| match x {
            LinkXdp::DrvProgId(id) if *id == prog_id => Some("native"),
            LinkXdp::SkbProgId(id) if *id == prog_id => Some("skb"),
            LinkXdp::HwProgId(id) if *id == prog_id => Some("hw"),
            _ => None,
        }),
        _ => None,
    }
}
