//! Command-line parsing and dispatch: one `Commands` enum, one file per subcommand.
//!
//! `--netns NAME` is entered here with setns (network namespace only) before any thread
//! or runtime starts, so everything netfast does afterwards sees NAME as the host while
//! keeping the machine's mount namespace (bpffs pins, /run/netns).

mod ct;
mod down;
mod lab;
mod nat;
mod netns_advice;
mod publish;
mod render;
mod run;
mod stats;
mod status;
mod target;
mod up;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use netfast::{config::IngressMode, instance::InstanceError};

/// Docker-style bridge networking with the NAT done in eBPF instead of iptables.
#[derive(Debug, Parser)]
#[command(name = "netfast", version)]
pub struct Cli {
    /// Use this named network namespace (/run/netns/NAME) as the host.
    /// netfast enters it itself; without it, the current namespace is the host.
    #[arg(long, global = true, value_name = "NAME")]
    pub netns: Option<String>,

    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Build the topology from a config file and attach the eBPF datapath.
    /// Idempotent; a failure half-way removes what this run created.
    Up {
        /// The instance's TOML config.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Remove exactly what `up` created for the instance in the config file, or for
    /// the instance NAME (also one a CNI network brought up: its containers' programs
    /// are detached too).
    Down {
        #[command(flatten)]
        target: target::Target,
    },
    /// The foreground daemon: `up`, then garbage-collect conntrack, drain the
    /// datapath's log and print a counter summary until Ctrl-C or SIGTERM, then `down`.
    /// A kill -9 leaves the datapath pinned and forwarding. With --instance instead of
    /// --config: the same for an instance that is up already (a CNI network's), with
    /// the timeouts of the file that brought it up (else nf_conntrack's defaults), and
    /// no `up` or `down`.
    Run {
        /// The instance's TOML config.
        #[arg(
            long,
            short,
            value_name = "FILE",
            required_unless_present = "instance",
            conflicts_with = "instance"
        )]
        config: Option<PathBuf>,
        /// Watch the instance NAME, up already; it stays up when the daemon stops.
        #[arg(long, short = 'i', value_name = "NAME")]
        instance: Option<String>,
        /// Leave the instance up when the daemon stops.
        #[arg(long, conflicts_with = "instance")]
        keep: bool,
        /// Seconds between two counter summaries (1 to 3600).
        #[arg(long, value_name = "SECONDS", default_value_t = 5,
              allow_negative_numbers = true, value_parser = number::<u64>(1, 3600))]
        interval: u64,
        /// Serve the counters, map fill and GC totals for Prometheus at
        /// http://ADDR/metrics (OpenMetrics text), e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR", value_parser = metrics_addr)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Build the seed topology in a sandbox of namespaces, run the seed checks, then show
    /// live counters until Ctrl-C. Everything is torn down on exit.
    Lab {
        /// Prefix of every namespace and the instance name, unique per sandbox.
        #[arg(long, default_value = "nflab")]
        prefix: String,
        /// Where the uplink's ingress program attaches.
        #[arg(long, value_enum, default_value_t = Ingress::Tc)]
        ingress: Ingress,
        /// Exit after the checks (non-zero if any failed) instead of showing counters.
        #[arg(long)]
        once: bool,
    },
    /// Publish, unpublish and list ports on a running instance (PUBLISHED_PORTS, live).
    /// `forward` is its old name and still works.
    #[command(subcommand, visible_alias = "forward")]
    Publish(publish::PublishCmd),
    /// List or flush conntrack flows of a running instance.
    #[command(subcommand)]
    Ct(ct::CtCmd),
    /// Show masquerade bindings and SNAT port use.
    #[command(subcommand)]
    Nat(nat::NatCmd),
    /// Show every counter, each map's fill and SNAT retries; rates with --watch.
    Stats(stats::StatsArgs),
    /// Show which programs are attached where, the pin directory and the config in force.
    Status(status::StatusArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ingress {
    /// tcx on the uplink's ingress.
    Tc,
    /// XDP on the uplink (native mode, falling back to skb mode).
    Xdp,
}

impl From<Ingress> for IngressMode {
    fn from(i: Ingress) -> Self {
        match i {
            Ingress::Tc => IngressMode::Tc,
            Ingress::Xdp => IngressMode::Xdp,
        }
    }
}

/// The value parser of every numeric option: whole numbers from `lo` to `hi`. With
/// `allow_negative_numbers` on the option, `-1` is read as its value and refused as
/// out of range, naming the option and the range ("-1 is not in 1..=3600"), instead
/// of being taken for an unknown flag.
fn number<T: TryFrom<i64> + Clone + Send + Sync + 'static>(
    lo: i64,
    hi: i64,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::value_parser!(i64)
        .range(lo..=hi)
        // In range, so it fits T: callers pass bounds within T's.
        .try_map(|n| T::try_from(n).map_err(|_| format!("{n} does not fit")))
}

/// The value parser of `run --metrics`: an IP address and a port. Clap prefixes the
/// option and the value: "invalid value 'x' for '--metrics <ADDR>': ...".
fn metrics_addr(value: &str) -> Result<std::net::SocketAddr, String> {
    value.parse().map_err(|_| {
        "not an IP:PORT to listen on; write e.g. 127.0.0.1:9464 (or [::1]:9464)".to_owned()
    })
}

/// Exit code for refused input (bad config, not root): nothing was changed.
pub const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "netfast must run as root (it creates network namespaces and loads eBPF programs); \
             run it again with sudo."
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Under `ip netns exec`, /sys/fs/bpf is not the machine's: every instance would
    // look absent, and `up` would pin into a bpffs that goes with this process.
    if let Some(problem) = netns_advice::mount_ns_problem(&args) {
        eprintln!("netfast: {problem}");
        return ExitCode::from(EXIT_USAGE);
    }
    // Before any thread starts: threads inherit the namespace of the thread that starts them.
    if let Some(ns) = &cli.netns
        && let Err(e) = netfast::host::netns::enter_current_thread(ns)
    {
        let advice = match e {
            netfast::host::netns::NetnsError::NotFound { .. } => {
                format!(
                    "; {}",
                    netns_advice::netns_not_found(&cli.command, ns, &args)
                )
            }
            _ => String::new(),
        };
        eprintln!("netfast: --netns {ns}: {e}{advice}");
        return ExitCode::from(EXIT_USAGE);
    }
    let result = match cli.command {
        Commands::Up { config } => up::run(&config),
        Commands::Down { target } => down::run(&target),
        Commands::Run {
            config,
            instance,
            keep,
            interval,
            metrics,
        } => {
            let interval = std::time::Duration::from_secs(interval);
            match (config, instance) {
                (Some(config), _) => run::run(&config, keep, interval, metrics),
                (None, Some(name)) => run::run_instance(&name, interval, metrics),
                // clap requires one of the two.
                (None, None) => Err(anyhow::anyhow!("give --config FILE or --instance NAME")),
            }
        }
        Commands::Lab {
            prefix,
            ingress,
            once,
        } => lab::run(&prefix, ingress.into(), once),
        Commands::Publish(cmd) => publish::run(&cmd),
        Commands::Ct(cmd) => ct::run(&cmd),
        Commands::Nat(cmd) => nat::run(&cmd),
        Commands::Stats(args) => stats::run(&args),
        Commands::Status(args) => status::run(&args),
    };
    match result {
        Ok(code) => code,
        // `netfast ct list | head -1`: the reader has all it wants.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netfast: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 when the input was refused before anything changed, 1 otherwise.
fn exit_code(e: &anyhow::Error) -> u8 {
    let refused = e.chain().any(|cause| {
        cause.is::<netfast::config::ConfigError>()
            || cause.is::<netfast::publish::PublishSpecError>()
            || cause
                .downcast_ref::<netfast::bpf::pinned::PinnedError>()
                .is_some_and(netfast::bpf::pinned::PinnedError::is_invalid_input)
            || cause
                .downcast_ref::<InstanceError>()
                .is_some_and(InstanceError::is_invalid_input)
            || cause
                .downcast_ref::<netfast::lab::LabError>()
                .is_some_and(netfast::lab::LabError::is_invalid_input)
            || cause
                .downcast_ref::<netfast::lock::LockError>()
                .is_some_and(netfast::lock::LockError::is_invalid_input)
    });
    if refused { EXIT_USAGE } else { 1 }
}

/// `e` for the operator: a refusal as it is (its sentence already names the instance,
/// the value and the fix), any other error after `context` (what was being done).
fn in_context<E>(
    e: E,
    refused: impl Fn(&E) -> bool,
    context: impl FnOnce() -> String,
) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    if refused(&e) {
        anyhow::Error::new(e)
    } else {
        anyhow::Error::new(e).context(context())
    }
}

/// True when `e` comes from writing to a stdout whose reader went away (EPIPE; Rust
/// ignores SIGPIPE, so the write fails instead of killing the process).
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `text` to stdout and flushes it. Unlike `print!`, a closed pipe is an error
/// (which [`main`] turns into a quiet exit 0), not a panic.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// [`emit`] with a newline.
fn emit_line(line: &str) -> anyhow::Result<()> {
    emit(&format!("{line}\n"))
}

/// Prints a view as JSON (`json`) or as its aligned text.
fn print<T: serde::Serialize + std::fmt::Display>(view: &T, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(view)
    } else {
        emit(&view.to_string())
    }
}

fn print_json<T: serde::Serialize + ?Sized>(view: &T) -> anyhow::Result<()> {
    use anyhow::Context;
    emit_line(&serde_json::to_string_pretty(view).context("while encoding JSON")?)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    /// Every numeric option refuses a negative or too large value as out of range,
    /// naming the option and the range, with clap's usage exit code 2.
    #[test]
    fn a_bad_metrics_address_names_the_value_and_the_form() {
        let err = Cli::try_parse_from(["netfast", "run", "-c", "x.toml", "--metrics", "9464"])
            .expect_err("a port alone is refused");
        let text = err.to_string();
        assert!(
            text.contains("'9464'")
                && text.contains("--metrics")
                && text.contains("127.0.0.1:9464"),
            "{text}"
        );
        let ok =
            Cli::try_parse_from(["netfast", "run", "-c", "x.toml", "--metrics", "127.0.0.1:0"])
                .expect("IP:PORT parses");
        assert!(matches!(
            ok.command,
            super::Commands::Run { metrics: Some(addr), .. } if addr.to_string() == "127.0.0.1:0"
        ));
    }

    #[test]
    fn numbers_out_of_range_name_the_option_and_range() {
        #[rustfmt::skip]
        let cases: &[(&[&str], &[&str])] = &[
            (&["stats", "-i", "x", "--watch", "-1"], &["'-1'", "--watch <SECONDS>", "1..=3600"]),
            (&["stats", "-i", "x", "--watch", "0"], &["'0'", "--watch", "1..=3600"]),
            (&["stats", "-i", "x", "--watch", "3601"], &["3601", "1..=3600"]),
            (&["stats", "-i", "x", "--watch", "1", "--count", "-1"], &["'-1'", "--count <N>", "1..=1000000000"]),
            (&["ct", "list", "-i", "x", "--port", "-1"], &["'-1'", "--port <N>", "0..=65535"]),
            (&["ct", "list", "-i", "x", "--port", "70000"], &["70000", "--port", "0..=65535"]),
            (&["ct", "flush", "-i", "x", "--port", "-5"], &["'-5'", "--port", "0..=65535"]),
            (&["run", "-c", "x.toml", "--interval", "-1"], &["'-1'", "--interval <SECONDS>", "1..=3600"]),
        ];
        for (args, needles) in cases {
            let err = Cli::try_parse_from(std::iter::once("netfast").chain(args.iter().copied()))
                .expect_err(&format!("{args:?} must be refused"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let text = err.to_string();
            assert!(!text.contains("unexpected argument"), "{args:?}: {text}");
            for n in *needles {
                assert!(text.contains(n), "{args:?}: {text:?} lacks {n:?}");
            }
        }
        let ok = Cli::try_parse_from(["netfast", "ct", "list", "-i", "x", "--port", "0"]);
        assert!(ok.is_ok(), "{ok:?}");
    }

    /// `down` takes an instance name (a CNI network's instance has no config file) or
    /// a config file, one of the two.
    #[test]
    fn down_takes_instance_or_config() {
        assert!(Cli::try_parse_from(["netfast", "down", "--instance", "mynet"]).is_ok());
        assert!(Cli::try_parse_from(["netfast", "down", "--config", "x.toml"]).is_ok());
        assert!(Cli::try_parse_from(["netfast", "down"]).is_err());
        assert!(Cli::try_parse_from(["netfast", "down", "-i", "a", "-c", "x.toml"]).is_err());
    }

    /// `forward` is the old name of `publish`: every form parses to the same command.
    #[test]
    fn forward_is_an_alias_of_publish() {
        for args in [
            &["add", "--instance", "demo", "8088:172.16.0.102:80/tcp"][..],
            &[
                "del",
                "--instance",
                "demo",
                "tcp",
                "*:8088",
                "172.16.0.102:80",
            ],
            &[
                "del",
                "--instance",
                "demo",
                "8088:172.16.0.102:80",
                "--kill-flows",
            ],
            &["list", "--instance", "demo", "--json"],
        ] {
            let parse = |verb: &'static str| {
                let cli =
                    Cli::try_parse_from(["netfast", verb].into_iter().chain(args.iter().copied()))
                        .unwrap_or_else(|e| panic!("{verb} {args:?}: {e}"));
                format!("{:?}", cli.command)
            };
            let new = parse("publish");
            assert!(new.starts_with("Publish("), "{new}");
            assert_eq!(parse("forward"), new, "{args:?}");
        }
    }
}
