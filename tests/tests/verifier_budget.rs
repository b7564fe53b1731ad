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
        Prog::HairpinTc,
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

/// The host-local socket programs are small and loop-free: a few map lookups per
/// call. A tight ceiling (about five times what they took when written: 195 for connect4 and sendmsg4, 95 for recvmsg4 and getpeername4) flags any growth, since
/// they run on every connect, sendto and recvfrom of every process in their cgroup.
const HOST_LOCAL_CEILING: u32 = 1_000;

#[test]
fn the_host_local_programs_verify_small() {
    netfast_tests::harness::require_root();
    let object = netfast::bpf::object::object()
        .expect("netfast was built without its eBPF object; rebuild without AYA_BUILD_SKIP");
    let mut ebpf = aya::EbpfLoader::new()
        .load(object)
        .unwrap_or_else(|err| panic!("loading the datapath object failed: {err}"));
    let mut report = Vec::new();
    for (name, _, _) in netfast::bpf::loader::HOST_LOCAL_PROGRAMS {
        let program: &mut aya::programs::CgroupSockAddr = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("the object has no program {name}"))
            .try_into()
            .unwrap_or_else(|err| panic!("{name} is not a CgroupSockAddr: {err}"));
        program
            .load()
            .unwrap_or_else(|err| panic!("the verifier rejected {name}: {err:?}"));
        let verified = program
            .info()
            .unwrap_or_else(|err| panic!("BPF_OBJ_GET_INFO_BY_FD of {name}: {err}"))
            .verified_instruction_count()
            .unwrap_or_else(|| {
                panic!("this kernel does not report verified instructions for {name}")
            });
        report.push(format!("{name}: {verified}"));
        assert!(
            verified < HOST_LOCAL_CEILING,
            "{name} took the verifier {verified} instructions, more than the \
             {HOST_LOCAL_CEILING} this test allows for a per-socket-call program"
        );
    }
    eprintln!("verified instructions: {}", report.join(", "));
}
