//! The verifier's budget: every program must verify well inside the kernel's limit of
//! a million processed instructions (`BPF_COMPLEXITY_LIMIT_INSNS`), so that a change
//! that grows a loop or a branch fans out here first, with a number, and not as a load
//! failure on a kernel whose verifier prunes less. Cilium keeps complexity tests for
//! the same reason.

use netfast_tests::harness::{Datapath, Prog};

/// Half the kernel's limit: room for other kernels' verifiers, which prune
/// differently, and a clear signal when a change doubles the work.
const CEILING: u32 = 500_000;

#[test]
fn every_program_verifies_well_inside_the_kernel_limit() {
    let datapath = Datapath::load();
    let mut report = Vec::new();
    for prog in [
        Prog::IngressTc,
        Prog::IngressXdp,
        Prog::EgressTc,
        Prog::ContainerTc,
    ] {
        let verified = datapath.verified_instructions(prog);
        report.push(format!("{}: {verified}", prog.name()));
        assert!(
            verified < CEILING,
            "{} took the verifier {verified} instructions, more than the {CEILING} \
             this test allows (the kernel stops at 1,000,000)",
            prog.name()
        );
    }
    eprintln!("verified instructions: {}", report.join(", "));
}
