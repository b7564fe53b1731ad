//! The verifier's budget: every program must verify well inside the kernel's limit of
//! a million processed instructions (`BPF_COMPLEXITY_LIMIT_INSNS`), so that a change
//! that grows a loop or a branch fans out here first, with a number, and not as a load
//! failure on a kernel whose verifier prunes less. Cilium keeps complexity tests for
//! the same reason.

use netfast::bpf::prog_load::load_retrying;
use netfast_common::names::PROG_CONTAINER_HAIRPIN_TC;
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
        load_retrying(|| program.load())
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

/// A signal for the loading thread stops the verifier with `EAGAIN` (kernel
/// `do_check`), mid-program; the load is tried again, as libbpf does, so a signal
/// never fails `up`. This is how CI once failed: a SIGCHLD from another test's child,
/// queued for the process while the forking thread blocked signals, woke the thread
/// that was verifying `container_hairpin_tc` (seconds of verification with a log).
///
/// Signals arrive every 20 ms for as long as the first load runs, so it fails whatever
/// the kernel's speed (aya's own retry with a verifier log is interrupted too); then
/// they stop, and the next attempt must load the program.
#[test]
fn a_signal_during_verification_does_not_fail_the_load() {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        thread,
        time::Duration,
    };

    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

    extern "C" fn do_nothing(_: libc::c_int) {}
    netfast_tests::harness::require_root();
    // A handler, so that the signal is delivered rather than discarded when sent.
    let action = SigAction::new(
        SigHandler::Handler(do_nothing),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.expect("installing a SIGUSR1 handler");

    let object = netfast::bpf::object::object()
        .expect("netfast was built without its eBPF object; rebuild without AYA_BUILD_SKIP");
    let mut ebpf = aya::EbpfLoader::new()
        .load(object)
        .unwrap_or_else(|err| panic!("loading the datapath object failed: {err}"));
    let name = PROG_CONTAINER_HAIRPIN_TC;
    let program: &mut aya::programs::SchedClassifier = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("the object has no program {name}"))
        .try_into()
        .unwrap_or_else(|err| panic!("{name} is not a SchedClassifier: {err}"));

    let attempts = Arc::new(AtomicUsize::new(0));
    // SAFETY: pthread_self has no preconditions. The thread it names outlives the
    // sender, which is joined before this function returns.
    let loading_thread = unsafe { libc::pthread_self() };
    let sender = thread::spawn({
        let attempts = Arc::clone(&attempts);
        move || {
            let mut sent = 0;
            while attempts.load(Ordering::SeqCst) <= 1 {
                if attempts.load(Ordering::SeqCst) == 1 {
                    // SAFETY: the loading thread is alive (see above).
                    let rc = unsafe { libc::pthread_kill(loading_thread, libc::SIGUSR1) };
                    assert_eq!(rc, 0, "pthread_kill");
                    sent += 1;
                }
                thread::sleep(Duration::from_millis(20));
            }
            sent
        }
    });
    let loaded = load_retrying(|| {
        attempts.fetch_add(1, Ordering::SeqCst);
        program.load()
    });
    attempts.fetch_add(1, Ordering::SeqCst);
    let sent = sender.join().expect("the signal sender");
    loaded.unwrap_or_else(|err| {
        panic!("{name} did not load with {sent} signals during the first attempt: {err:?}")
    });
    // The last count is the one after the load.
    let attempts = attempts.load(Ordering::SeqCst) - 1;
    assert!(
        attempts >= 2 && sent > 0,
        "{sent} signals during the first load of {name} should have failed it; \
         it took {attempts} attempt(s)"
    );
}
