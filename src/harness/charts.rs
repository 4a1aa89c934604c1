//! The report's charts, as plain data plus a `draw` that works on any plotters backend.
//! Times are plotted in milliseconds for latencies and seconds for the timeline.
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plots::{color, font, pe, tick, Chart};

/// Empirical CDF of TTFT, one line per variant.
pub struct TtftCdf {
    /// (variant, TTFT values in ms).
    pub series: Vec<(String, Vec<f64>)>,
}

impl Chart for TtftCdf {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        root.fill(&WHITE).map_err(pe)?;
        let x_max = self
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.05;
        let mut chart = ChartBuilder::on(root)
            .caption("Time to first token: CDF per variant", font(24))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..1.0)
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("TTFT (ms)")
            .y_desc("fraction of requests")
            .x_label_formatter(&|v| tick(*v, x_max))
            .label_style(font(14))
            .axis_desc_style(font(16))
            .draw()
            .map_err(pe)?;
        for (i, (label, values)) in self.series.iter().enumerate() {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len() as f64;
            // A step function: the fraction jumps at each observed value.
            let mut points = vec![(0.0, 0.0)];
            for (k, &x) in sorted.iter().enumerate() {
                points.push((x, k as f64 / n));
                points.push((x, (k + 1) as f64 / n));
            }
            let c = color(i);
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))
                .map_err(pe)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .label_font(font(14))
            .draw()
            .map_err(pe)?;
        Ok(())
    }
}

/// One panel of grouped bars: `values[class][variant]`.
pub struct BarPanel {
    pub title: String,
    pub y_desc: String,
    pub values: Vec<Vec<Option<f64>>>,
}

/// Panels of bars per class (TTFT and TPOT p50/p99; expert offloading's counters), grouped by
/// class, one bar colour per variant.
pub struct LatencyByClass {
    pub title: String,
    pub classes: Vec<String>,
    pub variants: Vec<String>,
    pub panels: Vec<BarPanel>,
}

impl Chart for LatencyByClass {
    fn size(&self) -> (u32, u32) {
        (1200, 900)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        root.fill(&WHITE).map_err(pe)?;
        let root = root.titled(&self.title, font(24)).map_err(pe)?;
        let (body, legend) = root.split_vertically(root.dim_in_pixel().1 - 40);
        let n_cols = 2.min(self.panels.len().max(1));
        let n_rows = self.panels.len().div_ceil(n_cols).max(1);
        let areas = body.split_evenly((n_rows, n_cols));
        let n_classes = self.classes.len().max(1);
        let width = 0.8 / self.variants.len().max(1) as f64;
        for (panel, area) in self.panels.iter().zip(areas.iter()) {
            let y_max = panel
                .values
                .iter()
                .flatten()
                .flatten()
                .copied()
                .fold(0.0, f64::max)
                .max(1e-3)
                * 1.1;
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, font(18))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(65)
                .build_cartesian_2d(-0.5..(n_classes as f64 - 0.5), 0.0..y_max)
                .map_err(pe)?;
            let classes = &self.classes;
            let class_at = |x: &f64| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    classes.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            };
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(2 * n_classes + 1)
                .x_label_formatter(&class_at)
                .y_label_formatter(&|v| tick(*v, y_max))
                .y_desc(panel.y_desc.as_str())
                .label_style(font(14))
                .axis_desc_style(font(14))
                .draw()
                .map_err(pe)?;
            for (c, per_variant) in panel.values.iter().enumerate() {
                for (v, value) in per_variant.iter().enumerate() {
                    let Some(value) = value else { continue };
                    let x0 = c as f64 - 0.4 + v as f64 * width;
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x0, 0.0), (x0 + width * 0.95, *value)],
                            color(v).filled(),
                        )))
                        .map_err(pe)?;
                }
            }
        }
        draw_legend(&legend, &self.variants)
    }
}

/// A one-line legend of coloured squares.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    labels: &[String],
) -> anyhow::Result<()> {
    let (w, _) = area.dim_in_pixel();
    let total: usize = labels.iter().map(|l| 30 + 8 * l.len()).sum();
    let mut x = (w as i32 - total as i32).max(10) / 2;
    for (i, label) in labels.iter().enumerate() {
        area.draw(&Rectangle::new([(x, 12), (x + 14, 26)], color(i).filled()))
            .map_err(pe)?;
        area.draw(&Text::new(label.clone(), (x + 20, 12), font(14)))
            .map_err(pe)?;
        x += 30 + 8 * label.len() as i32;
    }
    Ok(())
}

/// Output and total throughput per variant, as horizontal bars (labels stay readable).
pub struct Throughput {
    /// (variant, output tokens/s, total tokens/s).
    pub rows: Vec<(String, Option<f64>, Option<f64>)>,
}

impl Chart for Throughput {
    fn size(&self) -> (u32, u32) {
        (1200, 160 + 40 * self.rows.len() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        root.fill(&WHITE).map_err(pe)?;
        let root = root
            .titled("Throughput per variant", font(24))
            .map_err(pe)?;
        let halves = root.split_evenly((1, 2));
        let n = self.rows.len().max(1);
        let label_w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(4) as u32 * 8 + 20;
        let names: Vec<String> = self.rows.iter().map(|r| r.0.clone()).collect();
        for (half, (title, pick)) in halves.iter().zip([
            ("Output tokens / s", 0),
            ("Total (prompt + output) tokens / s", 1),
        ]) {
            let value = |r: &(String, Option<f64>, Option<f64>)| if pick == 0 { r.1 } else { r.2 };
            let x_max = self
                .rows
                .iter()
                .filter_map(value)
                .fold(0.0, f64::max)
                .max(1e-3)
                * 1.1;
            let mut chart = ChartBuilder::on(half)
                .caption(title, font(16))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(label_w)
                .build_cartesian_2d(0.0..x_max, -0.5..(n as f64 - 0.5))
                .map_err(pe)?;
            let name_at = |y: &f64| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            };
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(2 * n + 1)
                .y_label_formatter(&name_at)
                .x_label_formatter(&|v| tick(*v, x_max))
                .x_desc("tokens / s")
                .label_style(font(13))
                .axis_desc_style(font(14))
                .draw()
                .map_err(pe)?;
            for (i, row) in self.rows.iter().enumerate() {
                if let Some(v) = value(row) {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(0.0, i as f64 - 0.35), (v, i as f64 + 0.35)],
                            color(i).filled(),
                        )))
                        .map_err(pe)?;
                }
            }
        }
        Ok(())
    }
}
