//! The fuzz run of issue 7: random and damaged frames through every datapath program
//! with BPF_PROG_TEST_RUN, against a CONNTRACK filled with real flows, every frame
//! checked against the invariants in `netfast_tests::fuzz::check`.
//!
//! The test suite runs a short, fixed-seed version; `cargo xtask fuzz` runs the full
//! million (`NETFAST_FUZZ_FRAMES` frames per program, `NETFAST_FUZZ_SEED`). Needs
//! root and a BPF-capable kernel, and fails, saying so, without them.

use netfast_tests::fuzz::{self, Settings};

/// Frames per program in the test suite: about 20 s on the 2-core test machine.
const SHORT_RUN_FRAMES_PER_PROGRAM: u64 = 150_000;

#[test]
fn every_program_keeps_the_invariants_on_fuzzed_frames() {
    let settings = Settings::from_env(SHORT_RUN_FRAMES_PER_PROGRAM)
        .unwrap_or_else(|err| panic!("bad fuzz settings: {err}"));
    let report = fuzz::run(settings);
    println!("{}", report.summary());
    println!("{}", report.histogram());
    assert!(
        report.violations == 0,
        "{}\n{}",
        report.summary(),
        report.violations_text()
    );
}
