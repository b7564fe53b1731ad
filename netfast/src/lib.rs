//! netfast: Docker-style bridge networking with the NAT done in eBPF instead of iptables.
//!
//! The modules, from the operator's intent down to the kernel (imports point down):
//! - [`config`] and [`publish`]: what the operator asks for, and the one set of rules a
//!   published port must pass, for `up` and `publish add` alike;
//! - [`cni_instance`]: a CNI network as an instance, for the `netfast-cni` plugin
//!   (ADD, DEL, CHECK, GC) and the CLI (who owns each port mapping);
//! - [`instance`]: `up` and `down`, with ownership, rollback and a manifest; [`lab`]
//!   builds the seed's sandbox on top of it; [`lock`] makes changes take turns;
//! - [`conntrack`]: ct entries joined into flows, their [`conntrack::Timeouts`] and the
//!   GC ([`conntrack::gc`]);
//! - [`bpf`]: the embedded object, its pins and layout check, the loader, a typed
//!   handle per map and [`bpf::PinnedInstance`] for the operator commands;
//! - [`host`]: namespaces, links, addresses and routes over rtnetlink;
//! - [`metrics`]: the daemon's counters, map fill and GC totals for Prometheus.

pub mod bpf;
pub mod cni_instance;
pub mod config;
pub mod conntrack;
pub mod host;
pub mod instance;
pub mod lab;
pub mod lock;
pub mod metrics;
pub mod publish;

/// The GC, where it always was for callers: it lives in the conntrack layer.
pub use conntrack::gc;

/// `n` and the noun in the right number, for messages: "1 flow", "2 flows",
/// "1 entry", "0 entries".
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    #[test]
    fn count_picks_the_number() {
        assert_eq!(super::count(1u32, "flow", "flows"), "1 flow");
        assert_eq!(super::count(0u32, "flow", "flows"), "0 flows");
        assert_eq!(super::count(2u64, "entry", "entries"), "2 entries");
    }
}
