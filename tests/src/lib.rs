//! Test support for netfast: a packet builder whose checksums are computed from
//! scratch, and a harness that runs the datapath on those packets through
//! BPF_PROG_TEST_RUN.

pub mod cases;
pub mod diff;
pub mod fuzz;
pub mod harness;
pub mod packet;
pub mod percpu;
pub mod private_netns;
pub mod snapshot;
pub mod tcp;
