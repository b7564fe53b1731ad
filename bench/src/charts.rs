//! SVG charts (plotters, SVG backend only: text is written as SVG text, so no system
//! fonts are needed).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::{BenchError, names, report::Report};

const PALETTE: [RGBColor; 6] = [
    RGBColor(90, 90, 90),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

fn err(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Check {
        what: format!("drawing {what}: {e}"),
    }
}

pub fn draw(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    let mut out = Vec::new();
    let p = dir.join("conn_rate_vs_rules.svg");
    conn_vs_rules(report, &p).map_err(|e| err("conn_rate_vs_rules.svg", e))?;
    out.push(p);
    let p = dir.join("latency_by_lane.svg");
    bars(
        report,
        &p,
        "Request/response latency on one connection (median over blocks)",
        "µs",
        &[(names::RR, "p50"), (names::RR, "p99"), (names::RR, "p99.9")],
    )
    .map_err(|e| err("latency_by_lane.svg", e))?;
    out.push(p);
    let p = dir.join("pps_by_lane.svg");
    bars(
        report,
        &p,
        &format!(
            "UDP delivered packets/s at {} pkt/s offered (median over blocks)",
            report.options.udp_pps
        ),
        "packets/s",
        &[
            (names::UDP_NEW, "delivered pps"),
            (names::UDP_EST, "delivered pps"),
        ],
    )
    .map_err(|e| err("pps_by_lane.svg", e))?;
    out.push(p);
    Ok(out)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn conn_vs_rules(report: &Report, path: &Path) -> DrawResult {
    let sizes = &report.options.rule_sizes;
    let lanes: Vec<&str> = report.lanes.iter().map(|l| l.name.as_str()).collect();
    let value = |lane: &str, n: usize| {
        report
            .figures
            .iter()
            .find(|f| {
                f.scenario == names::SCALING
                    && f.metric == "connections/s"
                    && f.lane == lane
                    && f.rules == n
            })
            .map(|f| (f.summary.median, f.summary.p25, f.summary.p75))
    };
    let ymax = lanes
        .iter()
        .flat_map(|l| sizes.iter().filter_map(move |&n| value(l, n)))
        .map(|(_, _, hi)| hi)
        .filter(|x| x.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "New TCP connections/s vs published ports (median, bars p25–p75)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3f64..(sizes.len() as f64 - 0.7), 0f64..ymax)?;
    let labels: Vec<String> = sizes.iter().map(|n| format!("{n} ports")).collect();
    chart
        .configure_mesh()
        .x_labels(sizes.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("connections/s")
        .draw()?;
    for (li, lane) in lanes.iter().enumerate() {
        let color = PALETTE[li % PALETTE.len()];
        let pts: Vec<(f64, f64, f64, f64)> = sizes
            .iter()
            .enumerate()
            .filter_map(|(i, &n)| value(lane, n).map(|(m, lo, hi)| (i as f64, m, lo, hi)))
            .filter(|(_, m, ..)| m.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, m, ..)| (x, m)),
                color.stroke_width(2),
            ))?
            .label(*lane)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            pts.iter()
                .map(|&(x, m, ..)| Circle::new((x, m), 4, color.filled())),
        )?;
        chart.draw_series(pts.iter().map(|&(x, _, lo, hi)| {
            PathElement::new(vec![(x, lo), (x, hi)], color.stroke_width(1))
        }))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Grouped bars: one group per lane, one bar per (scenario, metric) series, whiskers
/// p25–p75.
fn bars(
    report: &Report,
    path: &Path,
    title: &str,
    unit: &str,
    series: &[(&str, &str)],
) -> DrawResult {
    let rules0 = report.options.rule_sizes.first().copied().unwrap_or(1);
    let lanes: Vec<&str> = report.lanes.iter().map(|l| l.name.as_str()).collect();
    let value = |lane: &str, scenario: &str, metric: &str| {
        report
            .figures
            .iter()
            .find(|f| {
                f.scenario == scenario && f.metric == metric && f.lane == lane && f.rules == rules0
            })
            .map(|f| (f.summary.median, f.summary.p25, f.summary.p75))
            .filter(|(m, ..)| m.is_finite())
    };
    let ymax = lanes
        .iter()
        .flat_map(|l| series.iter().filter_map(move |(s, m)| value(l, s, m)))
        .map(|(_, _, hi)| hi)
        .filter(|x| x.is_finite())
        .fold(1e-9f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..lanes.len() as f64, 0f64..ymax)?;
    let names: Vec<String> = lanes.iter().map(|s| s.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(lanes.len() * 2 + 1)
        .x_label_formatter(&|x| {
            // Labels sit at the middle of each group.
            let i = (x - 0.5).round();
            if (x - 0.5 - i).abs() < 0.01 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc(unit)
        .draw()?;
    let width = 0.8 / series.len() as f64;
    for (si, (scenario, metric)) in series.iter().enumerate() {
        let color = PALETTE[(si + 1) % PALETTE.len()];
        let rects: Vec<(f64, f64, f64, f64)> = lanes
            .iter()
            .enumerate()
            .filter_map(|(li, lane)| {
                value(lane, scenario, metric).map(|(m, lo, hi)| {
                    let x0 = li as f64 + 0.1 + si as f64 * width;
                    (x0, m, lo, hi)
                })
            })
            .collect();
        chart
            .draw_series(rects.iter().map(|&(x0, m, ..)| {
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, m)], color.filled())
            }))?
            .label(format!("{scenario}: {metric}"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        chart.draw_series(rects.iter().map(|&(x0, _, lo, hi)| {
            let xm = x0 + width * 0.45;
            PathElement::new(vec![(xm, lo), (xm, hi)], BLACK.stroke_width(1))
        }))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
