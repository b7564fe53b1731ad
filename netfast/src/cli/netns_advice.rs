//! What to do when the network namespace a command should run in is not usable:
//! `--netns NAME` that names no namespace, and netfast run under `ip netns exec`.
//!
//! The advice depends on the command. `up` and `run` make an instance in the host
//! namespace, which must exist; `down` can clean up after a namespace that is gone;
//! the operator commands (`status`, `ct`, `publish`, `nat`, `stats`) act on an
//! instance that exists, and its manifest says which namespace it lives in.

use std::path::Path;

use netfast::{bpf, config::Config, host::netns, instance};

use super::Commands;

/// The instance an operator command names (`--instance`, or the config's), if any.
fn instance_of(command: &Commands) -> Option<String> {
    let target = match command {
        Commands::Publish(super::publish::PublishCmd::Add { target, .. })
        | Commands::Publish(super::publish::PublishCmd::Del { target, .. })
        | Commands::Publish(super::publish::PublishCmd::List { target, .. })
        | Commands::Ct(super::ct::CtCmd::List { target, .. })
        | Commands::Ct(super::ct::CtCmd::Flush { target, .. })
        | Commands::Nat(super::nat::NatCmd::List { target, .. }) => target,
        Commands::Stats(args) => &args.target,
        Commands::Status(args) => &args.target,
        Commands::Up { .. }
        | Commands::Down { .. }
        | Commands::Run { .. }
        | Commands::Lab { .. } => return None,
    };
    match (&target.instance, &target.config) {
        (Some(name), _) => Some(name.clone()),
        (None, Some(path)) => Config::from_file(path).ok().map(|c| c.instance),
        (None, None) => None,
    }
}

/// Where an instance lives, as its manifest says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Home {
    /// A named namespace that exists now.
    Named(String),
    /// The root network namespace.
    Root,
    /// Not known: no manifest, no owner, or its namespace is gone.
    Unknown,
}

fn home_of(instance: &str) -> Home {
    let Ok(Some(owner)) = instance::load_manifest(instance).map(|m| m.and_then(|m| m.owner)) else {
        return Home::Unknown;
    };
    let now = netns::identify(owner.netns.dev, owner.netns.ino);
    match (now.root, now.name) {
        (true, _) => Home::Root,
        (false, Some(name)) => Home::Named(name),
        (false, None) => Home::Unknown,
    }
}

/// The advice after "network namespace NAME does not exist", for `command` given as
/// `args` (without the program name).
pub fn netns_not_found(command: &Commands, ns: &str, args: &[String]) -> String {
    let instance = instance_of(command);
    let home = instance.as_deref().map_or(Home::Unknown, home_of);
    let existing = netns::list().unwrap_or_default();
    not_found_advice(command, ns, args, instance.as_deref(), &home, &existing)
}

/// [`netns_not_found`] with what it looked up given.
fn not_found_advice(
    command: &Commands,
    ns: &str,
    args: &[String],
    instance: Option<&str>,
    home: &Home,
    existing: &[String],
) -> String {
    let list = if existing.is_empty() {
        "none".to_owned()
    } else {
        existing.join(", ")
    };
    match command {
        Commands::Up { .. } | Commands::Run { .. } => format!(
            "create it first (`ip netns add {ns}`; netfast makes the containers' namespaces, \
             never the host's), or drop --netns to make this namespace the host"
        ),
        Commands::Down { .. } => format!(
            "if the instance's host namespace was deleted, run down without --netns \
             (`{}`): it removes what outlived the namespace; the named namespaces there are: \
             {list}",
            command_line(args, None)
        ),
        Commands::Lab { .. } => {
            "drop --netns: the lab makes its own namespaces (their names start with --prefix)"
                .to_owned()
        }
        _ => match (instance, home) {
            (Some(i), Home::Named(name)) => format!(
                "instance \"{i}\" lives in network namespace {name}: `{}`",
                command_line(args, Some(name))
            ),
            (Some(i), Home::Root) => format!(
                "instance \"{i}\" lives in the root network namespace: drop --netns (`{}`)",
                command_line(args, None)
            ),
            _ => format!(
                "give the network namespace the instance was brought up in; the named \
                 namespaces there are: {list} (`ip netns list`)"
            ),
        },
    }
}

/// Why netfast cannot work in this mount namespace, or None: no bpffs at
/// `/sys/fs/bpf`, under `ip netns exec` (it remounts `/sys` for the namespace it
/// enters) or in another mount namespace than the machine's. There no pinned
/// instance can be seen, and one pinned there would go with this process. (Without
/// bpffs in the machine's own mount namespace, `up` says how to mount it.)
pub fn mount_ns_problem(args: &[String]) -> Option<String> {
    let bpffs = Path::new(netfast_common::names::PIN_ROOT)
        .parent()
        .unwrap_or(Path::new("/sys/fs/bpf"));
    if bpf::pins::is_bpffs(bpffs) {
        return None;
    }
    let shown = bpffs.display().to_string();
    if let Some(ns) = netns::ip_netns_exec_name() {
        return Some(mount_ns_advice(Some(&ns), &shown, args));
    }
    netns::private_mount_ns().then(|| mount_ns_advice(None, &shown, args))
}

fn mount_ns_advice(named: Option<&str>, bpffs: &str, args: &[String]) -> String {
    let why = format!(
        "{bpffs} there is not the machine's bpffs, so no instance's pins can be seen, and \
         pins made there would go away with this process"
    );
    match named {
        Some(ns) => format!(
            "this command runs under `ip netns exec {ns}`, which gives it a mount namespace of \
             its own and remounts /sys: {why}; run it without `ip netns exec`, it enters \
             the namespace itself: `{}`",
            command_line(args, Some(ns))
        ),
        None => format!(
            "this command runs in a mount namespace of its own (`unshare -m`, a container, ...): \
             {why}; run it in the machine's mount namespace, with `--netns NAME` to use a \
             named network namespace as the host"
        ),
    }
}

/// `netfast ARGS` as a shell line, with `--netns NAME` in front when `netns` is given
/// (any `--netns` of `args` is dropped, whichever way it was written), or without
/// `--netns` when it is None.
pub fn command_line(args: &[String], netns: Option<&str>) -> String {
    let mut out = vec!["netfast".to_owned()];
    if let Some(ns) = netns {
        out.extend(["--netns".to_owned(), quote(ns)]);
    }
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if a == "--netns" {
            skip = true;
            continue;
        }
        if a.starts_with("--netns=") {
            continue;
        }
        out.push(quote(a));
    }
    out.join(" ")
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn parse(line: &str) -> Commands {
        Cli::try_parse_from(std::iter::once("netfast".to_owned()).chain(words(line)))
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .command
    }

    #[test]
    fn command_lines_swap_the_netns() {
        let args = words("--netns bad status --instance demo");
        assert_eq!(
            command_line(&args, Some("lab-host")),
            "netfast --netns lab-host status --instance demo"
        );
        assert_eq!(command_line(&args, None), "netfast status --instance demo");
        let args = words("ct list --netns=bad --instance demo --addr 10.0.1.26");
        assert_eq!(
            command_line(&args, Some("h")),
            "netfast --netns h ct list --instance demo --addr 10.0.1.26"
        );
        let args = vec![
            "publish".into(),
            "del".into(),
            "tcp".into(),
            "*:8088".into(),
        ];
        assert_eq!(
            command_line(&args, None),
            "netfast publish del tcp '*:8088'"
        );
    }

    /// `--netns` naming no namespace: advice that fits the command. Never "let
    /// netfast create it" (it creates the containers' namespaces, not the host's).
    #[test]
    fn a_missing_netns_gets_advice_for_the_command() {
        let existing = ["lab-host".to_owned(), "lab-lan".to_owned()];
        let advice = |line: &str, instance: Option<&str>, home: &Home| {
            let advice =
                not_found_advice(&parse(line), "bad", &words(line), instance, home, &existing);
            assert!(!advice.contains("let netfast create"), "{line}: {advice}");
            advice
        };
        let named = Home::Named("lab-host".into());
        for line in [
            "--netns bad status --instance demo",
            "--netns bad ct list --instance demo",
            "--netns bad stats --instance demo",
            "--netns bad nat list --instance demo",
            "--netns bad publish list --instance demo",
            "--netns bad ct flush --instance demo",
        ] {
            let rest = line.trim_start_matches("--netns bad ");
            assert_eq!(
                advice(line, Some("demo"), &named),
                format!(
                    "instance \"demo\" lives in network namespace lab-host: `netfast --netns \
                     lab-host {rest}`"
                )
            );
        }
        assert_eq!(
            advice(
                "--netns bad status --instance demo",
                Some("demo"),
                &Home::Root
            ),
            "instance \"demo\" lives in the root network namespace: drop --netns (`netfast \
             status --instance demo`)"
        );
        let unknown = advice(
            "--netns bad ct list --instance demo",
            Some("demo"),
            &Home::Unknown,
        );
        assert!(
            unknown.contains("lab-host, lab-lan (`ip netns list`)"),
            "{unknown}"
        );
        let up = advice("--netns bad up --config demo.toml", None, &Home::Unknown);
        assert!(
            up.contains("`ip netns add bad`") && up.contains("never the host's"),
            "{up}"
        );
        let run = advice("--netns bad run --config demo.toml", None, &Home::Unknown);
        assert_eq!(run, up);
        let down = advice("--netns bad down --config demo.toml", None, &Home::Unknown);
        assert!(
            down.contains("run down without --netns (`netfast down --config demo.toml`)"),
            "{down}"
        );
        let lab = advice("--netns bad lab", None, &Home::Unknown);
        assert!(lab.starts_with("drop --netns"), "{lab}");
    }

    #[test]
    fn ip_netns_exec_gets_the_netns_flag_instead() {
        let args = words("status --instance demo");
        let advice = mount_ns_advice(Some("lab-host"), "/sys/fs/bpf", &args);
        assert!(advice.contains("`ip netns exec lab-host`"), "{advice}");
        assert!(
            advice.ends_with("`netfast --netns lab-host status --instance demo`"),
            "{advice}"
        );
        let other = mount_ns_advice(None, "/sys/fs/bpf", &args);
        assert!(other.contains("the machine's mount namespace"), "{other}");
    }
}
