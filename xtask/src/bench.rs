//! `cargo xtask bench [--quick]`: set up, build netfast and the bench in release, and
//! run the benchmark; the report and charts land in `target/bench/`.

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, bail};

use crate::{cargo, run, target_dir};

pub fn bench(quick: bool) -> anyhow::Result<std::process::ExitCode> {
    // Release: the datapath object is the same either way, but the Rust clients and
    // servers that generate the load must not be the bottleneck.
    run(Command::new(cargo()).args([
        "build",
        "--release",
        "-p",
        "netfast",
        "-p",
        "netfast-bench",
        "--bins",
    ]))
    .context("while building netfast and netfast-bench")?;
    let release = target_dir().join("release");
    let out = target_dir().join("bench");
    let mut cmd = Command::new(release.join("netfast-bench"));
    cmd.arg("--netfast")
        .arg(release.join("netfast"))
        .arg("--out")
        .arg(&out)
        .args([
            "--command",
            if quick {
                "cargo xtask bench --quick"
            } else {
                "cargo xtask bench"
            },
        ]);
    if quick {
        cmd.arg("--quick");
    }
    println!("+ {}", crate::show(&cmd));
    // exec: Ctrl-C reaches the bench alone, which stops between trials and tears its
    // lanes down; its exit code is ours.
    let err = cmd.exec();
    bail!("cannot run netfast-bench: {err}")
}
