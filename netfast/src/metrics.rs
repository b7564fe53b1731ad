//! The daemon's metrics (`netfast run --metrics ADDR`): the datapath's counters, the
//! fill of every pinned map and the conntrack GC's totals, in the OpenMetrics text
//! format that Prometheus scrapes (encoded by the prometheus-client crate).
//!
//! Every value is read from the pinned maps at scrape time ([`Snapshot::read`]), so a
//! scrape shows what the kernel holds now, and a scrape that cannot read them fails
//! whole instead of serving stale or partial figures.
//!
//! Families (the label `netfast_instance` names the instance; `instance` is left to
//! Prometheus, which sets it to the scraped target):
//! - `netfast_packets_total{decision, verdict}`: each packet's one decision, a counter
//!   per `Counter::is_decision`, `verdict` "drop", "redirect" or "pass" as `netfast
//!   stats` says (`Counter::is_drop`, `Counter::is_redirect`);
//! - `netfast_datapath_events_total{event}`: what the datapath counts on the way
//!   (conntrack assured, fast-path fallbacks, SNAT port retries ...);
//! - `netfast_host_local_calls_total{outcome}`: socket calls the host-local cgroup
//!   programs saw (`Counter::is_host_local`);
//! - `netfast_map_entries{map}` and `netfast_map_max_entries{map}`: gauges, as
//!   `netfast stats` shows them;
//! - `netfast_gc_runs_total`, `netfast_gc_expired_flows_total`,
//!   `netfast_gc_deleted_entries_total`, `netfast_gc_duration_seconds_total`: this
//!   daemon's GC passes since it started.

use std::time::Duration;

use netfast_common::Counter;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    bpf::{
        PinnedInstance,
        pinned::{MapFill, PinnedError},
    },
    gc::GcReport,
};

/// The `Content-Type` of [`Snapshot::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The conntrack GC's work since the daemon started: the sum of its passes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GcTotals {
    pub runs: u64,
    /// Flows removed for idling past their timeout.
    pub expired: u64,
    /// Entries deleted (both halves of each removed flow).
    pub deleted: u64,
    /// Time spent in passes.
    pub duration: Duration,
}

impl GcTotals {
    /// Adds one pass (over both conntrack maps).
    pub fn add(&mut self, pass: &GcReport) {
        self.runs += 1;
        self.expired += pass.expired as u64;
        self.deleted += pass.deleted as u64;
        self.duration += pass.duration;
    }
}

/// What a scrape shows, read from the instance's pins.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub instance: String,
    /// Every counter, summed over CPUs.
    pub counters: Vec<(Counter, u64)>,
    pub maps: Vec<MapFill>,
    pub gc: GcTotals,
}

impl Snapshot {
    /// Reads the counters and map fill of the pinned instance `instance`, beside the
    /// GC totals the daemon kept. Errors: the instance is not pinned (taken down under
    /// the daemon), or a map cannot be read.
    pub fn read(instance: &str, gc: GcTotals) -> Result<Snapshot, PinnedError> {
        let pinned = PinnedInstance::open(instance)?;
        Ok(Snapshot {
            instance: instance.to_owned(),
            counters: pinned.counters()?,
            maps: pinned.map_fill()?,
            gc,
        })
    }

    /// The OpenMetrics text, `# EOF` included.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let instance = ("netfast_instance", self.instance.as_str());
        let family = |encoder: &mut DescriptorEncoder,
                      name: &str,
                      help: &str,
                      label: &str,
                      pick: &dyn Fn(Counter) -> Option<&'static str>|
         -> Result<(), std::fmt::Error> {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for &(counter, value) in &self.counters {
                let Some(extra) = pick(counter) else {
                    continue;
                };
                let labels = [instance, (label, counter.name()), ("verdict", extra)];
                // "verdict" only where the family has it.
                let labels = if extra.is_empty() {
                    &labels[..2]
                } else {
                    &labels[..]
                };
                ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
            }
            Ok(())
        };
        family(
            &mut encoder,
            "netfast_packets",
            "Packets by the datapath's one decision about each.",
            "decision",
            &|c| {
                if !c.is_decision() {
                    None
                } else if c.is_drop() {
                    Some("drop")
                } else if c.is_redirect() {
                    Some("redirect")
                } else {
                    Some("pass")
                }
            },
        )?;
        family(
            &mut encoder,
            "netfast_datapath_events",
            "Events the datapath counts on the way (not decisions).",
            "event",
            &|c| (!c.is_decision() && !c.is_host_local()).then_some(""),
        )?;
        family(
            &mut encoder,
            "netfast_host_local_calls",
            "Socket calls the host-local cgroup programs saw.",
            "outcome",
            &|c| c.is_host_local().then_some(""),
        )?;

        for (name, help, value) in [
            (
                "netfast_map_entries",
                "Entries in each pinned map now.",
                (|m: &MapFill| m.entries) as fn(&MapFill) -> u32,
            ),
            (
                "netfast_map_max_entries",
                "Capacity of each pinned map (max_entries).",
                |m: &MapFill| m.capacity,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for map in &self.maps {
                let labels = [instance, ("map", map.name)];
                ConstGauge::new(i64::from(value(map))).encode(metric.encode_family(&labels)?)?;
            }
        }

        let labels = [instance];
        for (name, help, value) in [
            ("netfast_gc_runs", "Conntrack GC passes.", self.gc.runs),
            (
                "netfast_gc_expired_flows",
                "Flows the GC removed for idling past their timeout.",
                self.gc.expired,
            ),
            (
                "netfast_gc_deleted_entries",
                "Conntrack entries the GC deleted (two per flow).",
                self.gc.deleted,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "netfast_gc_duration_seconds",
            "Time spent in conntrack GC passes.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.gc.duration.as_secs_f64()).encode(metric.encode_family(&labels)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            instance: "demo".into(),
            counters: Counter::ALL
                .iter()
                .enumerate()
                .map(|(i, &c)| (c, i as u64 * 10))
                .collect(),
            maps: vec![MapFill {
                name: "CONNTRACK",
                kind: "lru_hash",
                entries: 6,
                capacity: 262_144,
            }],
            gc: GcTotals {
                runs: 3,
                expired: 2,
                deleted: 4,
                duration: Duration::from_millis(1500),
            },
        }
    }

    #[test]
    fn every_counter_lands_in_exactly_one_family_with_its_value() {
        let text = sample().encode().expect("encodes");
        for (i, &c) in Counter::ALL.iter().enumerate() {
            let value = i * 10;
            let line = if c.is_decision() {
                let verdict = if c.is_drop() {
                    "drop"
                } else if c.is_redirect() {
                    "redirect"
                } else {
                    "pass"
                };
                format!(
                    "netfast_packets_total{{netfast_instance=\"demo\",decision=\"{}\",verdict=\"{verdict}\"}} {value}",
                    c.name()
                )
            } else if c.is_host_local() {
                format!(
                    "netfast_host_local_calls_total{{netfast_instance=\"demo\",outcome=\"{}\"}} {value}",
                    c.name()
                )
            } else {
                format!(
                    "netfast_datapath_events_total{{netfast_instance=\"demo\",event=\"{}\"}} {value}",
                    c.name()
                )
            };
            assert_eq!(
                text.lines().filter(|l| *l == line).count(),
                1,
                "{line} in\n{text}"
            );
            assert_eq!(
                text.matches(&format!("=\"{}\"", c.name())).count(),
                1,
                "{} in one family only",
                c.name()
            );
        }
    }

    #[test]
    fn maps_gc_and_types_follow_openmetrics() {
        let text = sample().encode().expect("encodes");
        for line in [
            "# TYPE netfast_packets counter",
            "# TYPE netfast_map_entries gauge",
            "netfast_map_entries{netfast_instance=\"demo\",map=\"CONNTRACK\"} 6",
            "netfast_map_max_entries{netfast_instance=\"demo\",map=\"CONNTRACK\"} 262144",
            "netfast_gc_runs_total{netfast_instance=\"demo\"} 3",
            "netfast_gc_expired_flows_total{netfast_instance=\"demo\"} 2",
            "netfast_gc_deleted_entries_total{netfast_instance=\"demo\"} 4",
            "netfast_gc_duration_seconds_total{netfast_instance=\"demo\"} 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(text.lines().last(), Some("# EOF"));
    }

    #[test]
    fn gc_totals_add_passes() {
        let mut totals = GcTotals::default();
        let pass = GcReport {
            expired: 2,
            deleted: 4,
            duration: Duration::from_millis(3),
            ..GcReport::default()
        };
        totals.add(&pass);
        totals.add(&pass);
        assert_eq!(
            totals,
            GcTotals {
                runs: 2,
                expired: 4,
                deleted: 8,
                duration: Duration::from_millis(6)
            }
        );
    }
}
