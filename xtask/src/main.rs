//! Project tasks: `cargo xtask setup|run|test|fuzz|bench`. All but `setup` start with
//! the idempotent set-up, so a fresh machine needs only the README's two commands.

mod bench;
mod setup;

use std::{
    env, fmt,
    io::{BufRead as _, BufReader},
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    process::{Command, ExitCode, ExitStatus, Stdio},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(about = "netfast's build, run and test tasks")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Install what the machine lacks (packages, nightly rust-src, bpf-linker, bpffs).
    Setup,
    /// Set up, build in release, and run the seed lab: sandbox, datapath, checks, live
    /// counters.
    Run {
        /// Uplink ingress program: tcx or XDP.
        #[arg(long, value_enum)]
        ingress: Option<Ingress>,
        /// Exit after the checks, non-zero if any failed.
        #[arg(long)]
        once: bool,
    },
    /// Set up, build in release, and benchmark netfast against iptables and nftables
    /// NAT; writes target/bench/report.md, report.json and SVG charts.
    Bench {
        /// Every scenario once, briefly, at small sizes.
        #[arg(long)]
        quick: bool,
    },
    /// Set up, build, and run the datapath fuzz test at full size: random and damaged
    /// frames through every program with BPF_PROG_TEST_RUN, invariants checked on each.
    Fuzz {
        /// Frames per program; there are three programs.
        #[arg(long, default_value_t = 350_000)]
        frames: u64,
        /// PRNG seed, decimal or 0x-hex; a new one from the clock when not given.
        #[arg(long, value_parser = parse_seed)]
        seed: Option<u64>,
    },
    /// Set up, build the binaries, and run every test of the workspace.
    Test {
        /// Passed to `cargo test`, e.g. a test name `FILTER`, or `FILTER -- --nocapture`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Ingress {
    Tc,
    Xdp,
}

/// The machine can't run netfast at all (not root, no BPF); exit code 2.
#[derive(Debug)]
pub struct Precondition(pub String);

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Precondition {}

fn main() -> ExitCode {
    // Tools from `cargo install` and rustup must be found even under sudo, whose
    // PATH lacks ~/.cargo/bin. Children inherit this.
    // SAFETY: no other thread exists yet.
    unsafe { env::set_var("PATH", setup::prepend_path(&[])) };
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<Precondition>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn dispatch(command: Commands) -> anyhow::Result<ExitCode> {
    match command {
        Commands::Setup => {
            setup::setup()?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Run { ingress, once } => {
            setup::setup()?;
            lab(ingress, once)
        }
        Commands::Test { args } => {
            setup::setup()?;
            test(&args)
        }
        Commands::Fuzz { frames, seed } => {
            setup::setup()?;
            fuzz(frames, seed.unwrap_or_else(clock_seed))
        }
        Commands::Bench { quick } => {
            setup::setup()?;
            bench::bench(quick)
        }
    }
}

fn lab(ingress: Option<Ingress>, once: bool) -> anyhow::Result<ExitCode> {
    // Release: the lab shows the datapath as it is meant to run.
    step(
        "building netfast in release, with its eBPF programs (bpf-linker; about a minute the first time)",
    );
    run(Command::new(cargo()).args(["build", "--release", "-p", "netfast", "--bins"]))
        .context("while building netfast")?;
    let bin = target_dir().join("release").join("netfast");
    let mut cmd = Command::new(&bin);
    cmd.arg("lab");
    if let Some(i) = ingress {
        cmd.args([
            "--ingress",
            match i {
                Ingress::Tc => "tc",
                Ingress::Xdp => "xdp",
            },
        ]);
    }
    if once {
        cmd.arg("--once");
    }
    println!("+ {}", show(&cmd));
    // exec: Ctrl-C reaches netfast alone, so it tears down; its exit code is ours.
    let err = cmd.exec();
    bail!("cannot run {}: {err}", bin.display())
}

fn test(args: &[String]) -> anyhow::Result<ExitCode> {
    // Integration tests exec target/debug/netfast, which `cargo test` doesn't build.
    // netfast-ebpf is built for the BPF target by netfast's build.rs, never for the host.
    step(
        "building the workspace binaries and the eBPF programs (bpf-linker; a few minutes the first time)",
    );
    run(Command::new(cargo()).args([
        "build",
        "--workspace",
        "--exclude",
        "netfast-ebpf",
        "--bins",
    ]))
    .context("while building the workspace binaries")?;

    let mut cmd = Command::new(cargo());
    // --no-fail-fast: a failing test binary must not hide the others' results, nor
    // shrink the total below.
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        "netfast-ebpf",
        "--no-fail-fast",
    ])
    .args(args);
    println!("+ {}", show(&cmd));
    // Echo the output as it comes, and add up each binary's "test result:" line, so
    // the log ends with one count.
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("while starting cargo test")?;
    let mut totals = Totals::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("while reading cargo test's output")?;
            println!("{line}");
            totals.add(&line);
        }
    }
    let status = child.wait().context("while waiting for cargo test")?;
    println!(
        "[test] total: {} passed, {} failed, {} ignored, in {} test binaries; cargo test {}",
        totals.passed,
        totals.failed,
        totals.ignored,
        totals.binaries,
        describe(status)
    );
    Ok(exit_code(status))
}

/// Runs tests/tests/datapath_fuzz.rs, the test the suite runs short, at `frames` per
/// program. The test prints its summary and per-decision histogram.
fn fuzz(frames: u64, seed: u64) -> anyhow::Result<ExitCode> {
    let mut cmd = Command::new(cargo());
    cmd.env("NETFAST_FUZZ_FRAMES", frames.to_string())
        .env("NETFAST_FUZZ_SEED", format!("{seed:#x}"))
        .args([
            "test",
            "-p",
            "netfast-tests",
            "--test",
            "datapath_fuzz",
            "--",
            "--nocapture",
        ]);
    println!("+ {}", show(&cmd));
    let status = cmd.status().context("while starting cargo test")?;
    println!("[fuzz] cargo test {}", describe(status));
    Ok(exit_code(status))
}

/// A decimal or 0x-hex u64.
fn parse_seed(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|err| format!("{text:?} is not a decimal or 0x-hex u64: {err}"))
}

/// A seed from the clock, so each full run without --seed covers new frames; the
/// test prints the seed it used, which replays the run.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    binaries: u64,
}

impl Totals {
    /// Reads libtest's "test result: ok. 3 passed; 0 failed; 1 ignored; ..." lines.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        self.binaries += 1;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Says what the next step does and how long it takes, before it starts.
pub fn step(what: &str) {
    println!("xtask: {what}");
}

/// Runs a command in the foreground, printed first; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    println!("+ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", cmd.get_program().display()))?;
    if !status.success() {
        bail!("`{}` {}", show(cmd), describe(status));
    }
    Ok(())
}

/// Runs a command quietly and returns its stdout; fails on a non-zero exit.
pub fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {}", cmd.get_program().display()))?;
    if !out.status.success() {
        bail!("`{}` {}", show(cmd), describe(out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn show(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| Some(format!("{}={}", k.display(), v?.display())))
        .collect();
    parts.push(cmd.get_program().display().to_string());
    parts.extend(cmd.get_args().map(|a| a.display().to_string()));
    parts.join(" ")
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "succeeded".into(),
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "ended abnormally".into(),
    }
}

/// The child's code; a signal maps to 128+N, as a shell reports it.
fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        (None, Some(s)) => ExitCode::from(u8::try_from(128 + s).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

fn cargo() -> std::ffi::OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_libtest_summaries() {
        let mut t = Totals::default();
        t.add("test result: ok. 15 passed; 0 failed; 0 ignored; 0 measured; 3 filtered out; finished in 0.00s");
        t.add("test result: FAILED. 2 passed; 1 failed; 4 ignored; 0 measured; 0 filtered out");
        t.add("running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored, t.binaries), (17, 1, 4, 2));
    }
}

#[cfg(test)]
mod cli_tests {
    use super::*;

    fn test_args(argv: &[&str]) -> Vec<String> {
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Commands::Test { args }) => args,
            _ => panic!("{argv:?} did not parse as test"),
        }
    }

    #[test]
    fn fuzz_takes_frames_and_a_seed() {
        match Cli::try_parse_from(["xtask", "fuzz", "--frames", "10", "--seed", "0x1f"])
            .map(|c| c.command)
        {
            Ok(Commands::Fuzz { frames, seed }) => assert_eq!((frames, seed), (10, Some(31))),
            _ => panic!("fuzz did not parse"),
        }
        match Cli::try_parse_from(["xtask", "fuzz"]).map(|c| c.command) {
            Ok(Commands::Fuzz { frames, seed }) => assert_eq!((frames, seed), (350_000, None)),
            _ => panic!("fuzz did not parse"),
        }
        assert!(Cli::try_parse_from(["xtask", "fuzz", "--seed", "x"]).is_err());
    }

    #[test]
    fn test_args_reach_cargo_test() {
        assert_eq!(test_args(&["xtask", "test"]), Vec::<String>::new());
        assert_eq!(test_args(&["xtask", "test", "config"]), ["config"]);
        assert_eq!(
            test_args(&["xtask", "test", "config", "--", "--nocapture"]),
            ["config", "--", "--nocapture"]
        );
        assert_eq!(test_args(&["xtask", "test", "--", "x"]), ["x"]);
    }
}
