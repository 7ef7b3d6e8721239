//! `--plot`: an SVG of a replay — per-dimension ratios, the composite score against its
//! thresholds, and brokers and workers over time with the actions marked.
//!
//! Long replays are downsampled: each line has at most [`MAX_POINTS`] points, each the highest
//! value of its stretch of evaluations (so peaks stay visible), and each stretch gets at most
//! one marker per kind of action. The SVG's size is bounded whatever the replay's length.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::Replay;
use crate::engine::Action;

/// The plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot to {path}: {detail}")]
pub struct PlotError {
    path: String,
    detail: String,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const RED: RGBColor = RGBColor(214, 39, 40);

/// Points per line at most (a 1280-pixel-wide plot shows no more).
pub const MAX_POINTS: usize = 2000;

/// Evaluations per plotted point.
fn stretch(replay: &Replay) -> usize {
    replay.steps.len().div_ceil(MAX_POINTS).max(1)
}

/// One replica line of the plot: label, which workload, colour.
type ReplicaLine = (&'static str, fn(&crate::engine::Replicas) -> u32, RGBColor);

/// Draw `replay` (and `baseline`, when given, as dashed replica lines) to an SVG file.
pub fn write_svg(path: &Path, title: &str, replay: &Replay, baseline: Option<&Replay>) -> Result<(), PlotError> {
    draw(path, title, replay, baseline)
        .map_err(|e| PlotError { path: path.display().to_string(), detail: e.to_string() })
}

fn draw(
    path: &Path,
    title: &str,
    replay: &Replay,
    baseline: Option<&Replay>,
) -> Result<(), Box<dyn std::error::Error>> {
    let with_traffic = replay.steps.first().is_some_and(|s| s.traffic.is_some());
    let height = if with_traffic { 1600 } else { 1000 };
    let root = SVGBackend::new(path, (1280, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let panels = root.split_evenly((if with_traffic { 5 } else { 3 }, 1));
    let end = replay.steps.last().map(|s| s.t).unwrap_or(0.0).max(replay.interval);
    // Time in hours for long replays, minutes otherwise, so the axis gets round ticks.
    let (unit, unit_name) =
        if end > 3.0 * 3600.0 { (3600.0, "hours from start") } else { (60.0, "minutes from start") };
    let x_end = end / unit;
    let names: Vec<String> = replay
        .steps
        .first()
        .map(|s| s.decision.dimensions.iter().map(|d| d.name.clone()).collect())
        .unwrap_or_default();

    // 1. Ratios per dimension (needed ÷ current capacity), clipped for readability.
    let ratio_max = replay
        .steps
        .iter()
        .flat_map(|s| s.decision.dimensions.iter().filter_map(|d| d.ratio))
        .filter(|r| r.is_finite())
        .fold(1.5f64, f64::max)
        .min(5.0)
        * 1.05;
    let caption = "Dimension ratios (needed ÷ current capacity; 1.0 = at target)";
    let mut chart = panel(&panels[0], caption, x_end, ratio_max, unit_name, "ratio")?;
    for (i, name) in names.iter().enumerate() {
        let ratio =
            |s: &super::ReplayStep| s.decision.dimensions.get(i).and_then(|d| d.ratio).map(|r| r.min(ratio_max));
        lines(&mut chart, segments(replay, unit, ratio), PALETTE[i % PALETTE.len()].stroke_width(2), name)?;
    }
    legend(&mut chart)?;

    // 2. Composite score, held score and the thresholds.
    let (up, down) = replay.triggers;
    let score_max = replay
        .steps
        .iter()
        .filter_map(|s| s.decision.score)
        .filter(|r| r.is_finite())
        .fold(up * 1.2, f64::max)
        .min(5.0)
        * 1.05;
    let caption = "Composite score (weighted mean of ratios) and thresholds";
    let mut chart = panel(&panels[1], caption, x_end, score_max, unit_name, "score")?;
    for (value, label) in [(up, "scale-up above"), (down, "scale-down below")] {
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, value), (x_end, value)], 6, 4, RED.stroke_width(1)))?
            .label(format!("{label} {value:.2}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED));
    }
    let now = segments(replay, unit, |s| s.decision.score.map(|v| v.min(score_max)));
    lines(&mut chart, now, BLACK.stroke_width(2), "score now")?;
    let held = segments(replay, unit, |s| s.decision.held_up.map(|v| v.min(score_max)));
    lines(&mut chart, held, PALETTE[3].stroke_width(1), "score held for the windows (scale-up)")?;
    legend(&mut chart)?;

    // 3. Replicas with actions marked.
    let peak = replay
        .steps
        .iter()
        .chain(baseline.iter().flat_map(|b| b.steps.iter()))
        .map(|s| s.decision.desired.workers.max(s.decision.desired.brokers))
        .max()
        .unwrap_or(1);
    let caption = "Replicas (▲ scale-up, ▼ scale-down)";
    let mut chart = panel(&panels[2], caption, x_end, f64::from(peak) * 1.15 + 1.0, unit_name, "replicas")?;
    let workloads: [ReplicaLine; 2] = [("workers", |r| r.workers, PALETTE[0]), ("brokers", |r| r.brokers, PALETTE[1])];
    for (name, of, color) in &workloads {
        let color = *color;
        lines(
            &mut chart,
            vec![staircase(replay, unit, of)],
            color.stroke_width(2),
            &format!("{name} ({})", replay.label),
        )?;
        if let Some(b) = baseline {
            chart
                .draw_series(DashedLineSeries::new(staircase(b, unit, of), 5, 4, color.mix(0.6).stroke_width(1)))?
                .label(format!("{name} ({})", b.label))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.mix(0.6)));
        }
    }
    for chunk in replay.steps.chunks(stretch(replay)) {
        let up = chunk.iter().find(|s| matches!(s.decision.action, Action::ScaleUp | Action::Fallback));
        if let Some(step) = up {
            let at = (step.t / unit, f64::from(step.decision.desired.workers));
            chart.draw_series(std::iter::once(TriangleMarker::new(at, 6, PALETTE[2].filled())))?;
        }
        if let Some(step) = chunk.iter().find(|s| s.decision.action == Action::ScaleDown) {
            let font = ("sans-serif", 12).into_font().color(&RED);
            let at = (step.t / unit, f64::from(step.decision.desired.workers));
            chart.draw_series(std::iter::once(Text::new("▼", at, font)))?;
        }
    }
    legend(&mut chart)?;

    // 4. Traffic per cluster, for plans with failover.
    if with_traffic {
        let mut chart = panel(&panels[3], "Traffic per cluster (% of requests)", x_end, 105.0, unit_name, "percent")?;
        let names: Vec<String> = replay.steps[0].traffic.as_ref().map(|t| t.clusters.clone()).unwrap_or_default();
        for (i, name) in names.iter().enumerate() {
            let weight =
                |s: &super::ReplayStep| s.traffic.as_ref().and_then(|t| t.weights.get(i)).map(|w| f64::from(*w));
            lines(&mut chart, segments(replay, unit, weight), PALETTE[i % PALETTE.len()].stroke_width(2), name)?;
        }
        legend(&mut chart)?;

        // 5. Workers per cluster: survivors raised before traffic moves, restored after.
        let workers_of = |i: usize| {
            move |s: &super::ReplayStep| s.traffic.as_ref().and_then(|t| t.survivors.get(i)).map(|w| f64::from(*w))
        };
        let top = replay
            .steps
            .iter()
            .filter_map(|s| s.traffic.as_ref())
            .flat_map(|t| t.survivors.iter().copied())
            .max()
            .unwrap_or(1);
        let mut chart = panel(
            &panels[4],
            "Workers per cluster (survivors raised by failover, restored after)",
            x_end,
            f64::from(top) * 1.15 + 1.0,
            unit_name,
            "workers",
        )?;
        for (i, name) in names.iter().enumerate() {
            lines(&mut chart, segments(replay, unit, workers_of(i)), PALETTE[i % PALETTE.len()].stroke_width(2), name)?;
        }
        legend(&mut chart)?;
    }
    root.present()?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: caption, time axis in `unit` seconds, y from 0 to `y_max`.
fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    x_end: f64,
    y_max: f64,
    x_desc: &str,
    y_desc: &str,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..x_end, 0f64..y_max)?;
    chart.configure_mesh().x_label_formatter(&|x: &f64| format!("{x}")).x_desc(x_desc).y_desc(y_desc).draw()?;
    Ok(chart)
}

/// Draw line segments, labelling the first for the legend.
fn lines(
    chart: &mut Chart<'_, '_>,
    segments: Vec<Vec<(f64, f64)>>,
    style: ShapeStyle,
    label: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    for (i, seg) in segments.into_iter().enumerate() {
        let drawn = chart.draw_series(LineSeries::new(seg, style))?;
        if i == 0 {
            drawn.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    Ok(())
}

/// The legend, top left.
fn legend<'b: 'a, 'a>(chart: &mut Chart<'a, 'b>) -> Result<(), Box<dyn std::error::Error>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Continuous runs of a per-step value (a gap in data breaks the line), one point per stretch of
/// evaluations: the stretch's highest value.
fn segments(replay: &Replay, unit: f64, value: impl Fn(&super::ReplayStep) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for chunk in replay.steps.chunks(stretch(replay)) {
        let highest = chunk.iter().filter_map(|s| value(s).filter(|v| v.is_finite())).reduce(f64::max);
        match highest {
            Some(v) => current.push((chunk[0].t / unit, v)),
            None => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Replica counts as a step function, one step per stretch of evaluations (its highest count).
fn staircase(replay: &Replay, unit: f64, of: &dyn Fn(&crate::engine::Replicas) -> u32) -> Vec<(f64, f64)> {
    let mut points = Vec::with_capacity(2 * MAX_POINTS + 2);
    let mut last: Option<f64> = None;
    for chunk in replay.steps.chunks(stretch(replay)) {
        let y = chunk.iter().map(|s| of(&s.decision.desired)).max().map(f64::from).unwrap_or(0.0);
        let t = chunk[0].t / unit;
        if let Some(prev) = last
            && prev != y
        {
            points.push((t, prev));
        }
        points.push((t, y));
        last = Some(y);
    }
    points
}
