//! `--out chart.svg`: metric values against their targets (left axis) and replicas (right axis)
//! over time, drawn with plotters' SVG backend.
//!
//! For an `AverageValue` target the line drawn is what the ready pods can absorb
//! (target × ready pods), so a value line above it is a backlog; a `Value` target is flat.

use std::path::Path;

use plotters::prelude::*;

use super::replay::{Actor, Outcome};
use crate::crd::scaled_object::MetricTargetType;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 600;

/// A palette readable on white, one colour per metric.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
const REPLICAS: RGBColor = RGBColor(214, 39, 40);
const DESIRED: RGBColor = RGBColor(255, 127, 14);

/// The series the chart draws: `(label, points, colour, dashed, on the replicas axis)`.
type Series = (String, Vec<(f64, f64)>, RGBColor, bool, bool);

/// Builds the series from the replay (time in the unit `scale` ms).
fn series(o: &Outcome, scale: f64) -> Vec<Series> {
    let mut out = Vec::new();
    for (i, name) in o.metric_names.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut values = Vec::new();
        let mut targets = Vec::new();
        let (target, kind) = o
            .targets
            .get(i)
            .copied()
            .unwrap_or((0.0, MetricTargetType::AverageValue));
        for row in &o.rows {
            let Some(v) = row
                .metrics
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, m)| m.value)
            else {
                continue;
            };
            let x = row.time_ms as f64 / scale;
            values.push((x, v));
            let t = match kind {
                MetricTargetType::Value => target,
                _ => target * f64::from(row.ready),
            };
            targets.push((x, t));
        }
        let what = match kind {
            MetricTargetType::Value => format!("{name} target (value {target})"),
            _ => format!("{name} target × ready pods ({target}/pod)"),
        };
        out.push((name.clone(), values, colour, false, false));
        out.push((what, targets, colour, true, false));
    }
    // Replicas as a step line: hold each count until the next change.
    let mut replicas: Vec<(f64, f64)> = Vec::new();
    let mut desired: Vec<(f64, f64)> = Vec::new();
    for row in &o.rows {
        let x = row.time_ms as f64 / scale;
        if let Some(&(_, last)) = replicas.last() {
            replicas.push((x, last));
        }
        replicas.push((x, f64::from(row.replicas)));
        if row.actor == Actor::Hpa {
            desired.push((x, f64::from(row.desired)));
        }
    }
    out.push(("replicas".to_string(), replicas, REPLICAS, false, true));
    if !desired.is_empty() {
        out.push(("HPA desired replicas".to_string(), desired, DESIRED, true, true));
    }
    out
}

/// Draws the chart to `path`.
pub fn write_svg(path: &Path, o: &Outcome) -> Result<(), String> {
    let end_ms = o.rows.last().map_or(0, |r| r.time_ms).max(1);
    let (scale, unit) = if end_ms > 3 * 3_600_000 {
        (3_600_000.0, "hours")
    } else {
        (60_000.0, "minutes")
    };
    let all = series(o, scale);
    let x_max = end_ms as f64 / scale;
    let top = |replicas_axis: bool| {
        all.iter()
            .filter(|s| s.4 == replicas_axis)
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
    };
    // Scale to the metric values, not to the capacity lines: a capacity far above the load
    // (many replicas for a small metric) would flatten the values the chart is for.
    let values_top = all
        .iter()
        .filter(|s| !s.4 && !s.3)
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_max = (values_top * 1.5).min(top(false) * 1.1).max(1.0);
    let r_max = (top(true) + 1.0).max(2.0);
    let all: Vec<Series> = all
        .into_iter()
        .map(|mut s| {
            if !s.4 {
                for p in &mut s.1 {
                    p.1 = p.1.min(y_max);
                }
            }
            s
        })
        .collect();
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "ebb simulate: {} metric(s), {} scale events",
                o.metric_names.len(),
                o.summary.scale_events
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|x| e(&x))?
        .set_secondary_coord(0f64..x_max, 0f64..r_max);
    chart
        .configure_mesh()
        .x_desc(format!("time ({unit})"))
        .y_desc("metric value")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .configure_secondary_axes()
        .y_desc("replicas")
        .draw()
        .map_err(|x| e(&x))?;
    for (label, points, colour, dashed, right) in all {
        let style = ShapeStyle {
            color: colour.to_rgba(),
            filled: false,
            stroke_width: if dashed { 1 } else { 2 },
        };
        let legend = move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 20, y)], style);
        let drawn = if right {
            chart.draw_secondary_series(LineSeries::new(points, style))
        } else {
            chart.draw_series(LineSeries::new(points, style))
        };
        drawn.map_err(|x| e(&x))?.label(label).legend(legend);
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
