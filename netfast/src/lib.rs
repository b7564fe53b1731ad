//! netfast: Docker-style bridge networking with the NAT done in eBPF instead of iptables.
//!
//! - [`config`] and [`publish`] parse and validate what the operator asks for.
//! - [`netns`] and [`topology`] build namespaces, veths, the bridge and routes over rtnetlink.
//! - [`datapath`] loads, attaches and pins the eBPF programs and fills their maps.
//! - [`instance`] ties them together: `up` and `down`, with rollback and a manifest.
//! - [`lab`] builds the seed's sandbox: a "host" and a "LAN peer" namespace.

pub mod config;
pub mod datapath;
pub mod instance;
pub mod lab;
pub mod netns;
pub mod publish;
pub mod topology;
