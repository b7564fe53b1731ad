//! [`Target`]: how every operator command names its instance.

use std::path::PathBuf;

use clap::Args;
use netfast::{bpf::PinnedInstance, config::Config};

/// `--instance NAME` or `--config FILE` (the instance named in the file).
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The instance to act on; its pins are under /sys/fs/bpf/netfast/NAME.
    #[arg(
        long,
        short = 'i',
        value_name = "NAME",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    pub instance: Option<String>,
    /// Take the instance name (and, for `publish add`, the container addresses) from
    /// this config file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Target {
    /// Opens the instance's pins; the config too when given.
    pub fn open(&self) -> anyhow::Result<(PinnedInstance, Option<Config>)> {
        let config = match &self.config {
            Some(path) => Some(Config::from_file(path)?),
            None => None,
        };
        let name = match (&self.instance, &config) {
            (Some(name), _) => name.clone(),
            (None, Some(cfg)) => cfg.instance.clone(),
            // clap requires one of the two.
            (None, None) => anyhow::bail!("give --instance NAME or --config FILE"),
        };
        Ok((PinnedInstance::open(&name)?, config))
    }
}
