//! The step timeline: what each engine step computed, over time (from `steps.csv`).
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plots::{color, font, pe, tick, Chart};

/// Tokens computed per step over time: each step is a bar as wide as its duration; prefill
/// and decode tokens get a panel each, since a prefill step can be 100x a decode step.
pub struct Timeline {
    pub variant: String,
    /// (start s, end s, prefill tokens, decode tokens).
    pub steps: Vec<(f64, f64, f64, f64)>,
}

impl Chart for Timeline {
    fn size(&self) -> (u32, u32) {
        (1000, 700)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        root.fill(&WHITE).map_err(pe)?;
        let root = root
            .titled(&format!("Step timeline: {}", self.variant), font(22))
            .map_err(pe)?;
        let x_max = self.steps.iter().map(|s| s.1).fold(0.0, f64::max).max(1e-3) * 1.02;
        let panels: [(&str, fn(&(f64, f64, f64, f64)) -> f64, RGBColor); 2] = [
            ("prefill tokens in step", |s| s.2, color(0)),
            ("decode tokens in step", |s| s.3, color(1)),
        ];
        for (area, (desc, pick, c)) in root.split_evenly((2, 1)).iter().zip(panels) {
            let y_max = self.steps.iter().map(pick).fold(0.0, f64::max).max(1.0) * 1.1;
            let mut chart = ChartBuilder::on(area)
                .margin(10)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_desc("time since start (s)")
                .y_desc(desc)
                .y_label_formatter(&|v| tick(*v, y_max))
                .label_style(font(14))
                .axis_desc_style(font(15))
                .draw()
                .map_err(pe)?;
            chart
                .draw_series(
                    self.steps
                        .iter()
                        .filter(|s| pick(s) > 0.0)
                        .map(|s| Rectangle::new([(s.0, 0.0), (s.1, pick(s))], c.filled())),
                )
                .map_err(pe)?;
        }
        Ok(())
    }
}
