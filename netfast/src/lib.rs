//! netfast: Docker-style bridge networking with the NAT done in eBPF instead of iptables.
//!
//! - [`config`] and [`publish`] parse and validate what the operator asks for.
//! - [`netns`] and [`topology`] build namespaces, veths, the bridge and routes over rtnetlink.
//! - [`datapath`] loads, attaches and pins the eBPF programs and fills their maps.
//! - [`instance`] ties them together: `up` and `down`, with rollback and a manifest.
//! - [`pinned`] reads and changes a running instance's pinned maps; [`conntrack`] joins
//!   its entries into flows.
//! - [`conntrack::gc`] expires idle flows, after their [`conntrack::Timeouts`], for
//!   `netfast run` and the lab.
//! - [`lab`] builds the seed's sandbox: a "host" and a "LAN peer" namespace.

pub mod config;
pub mod conntrack;
pub mod datapath;
pub mod instance;
pub mod lab;
pub mod lock;
pub mod netns;
pub mod pinned;
pub mod publish;
pub mod topology;

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
