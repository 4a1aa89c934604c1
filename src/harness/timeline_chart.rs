//! The step timeline: what each engine step computed, over time (from `steps.csv`).
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plots::{color, font, pe, tick, Chart};

/// Tokens computed per step over time: each step is a bar as wide as its duration; prefill
/// and decode tokens get a panel each, since a prefill step can be 100x a decode step.
pub struct Timeline {
    pub variant: String,
    pub steps: Vec<StepBar>,
}

/// One step of `steps.csv`, as drawn.
pub struct StepBar {
    pub start_s: f64,
    pub end_s: f64,
    pub prefill_tokens: f64,
    pub decode_tokens: f64,
}

impl StepBar {
    fn tokens(&self, prefill: bool) -> f64 {
        if prefill {
            self.prefill_tokens
        } else {
            self.decode_tokens
        }
    }
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
        let x_max = self
            .steps
            .iter()
            .map(|s| s.end_s)
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.02;
        let panels = [
            ("prefill tokens in step", true, color(0)),
            ("decode tokens in step", false, color(1)),
        ];
        for (area, (desc, prefill, c)) in root.split_evenly((2, 1)).iter().zip(panels) {
            let y_max = self
                .steps
                .iter()
                .map(|s| s.tokens(prefill))
                .fold(0.0, f64::max)
                .max(1.0)
                * 1.1;
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
                .x_label_formatter(&|v| tick(*v, x_max))
                .y_label_formatter(&|v| tick(*v, y_max))
                .label_style(font(14))
                .axis_desc_style(font(15))
                .draw()
                .map_err(pe)?;
            chart
                .draw_series(
                    self.steps
                        .iter()
                        .filter(|s| s.tokens(prefill) > 0.0)
                        .map(|s| {
                            Rectangle::new(
                                [(s.start_s, 0.0), (s.end_s, s.tokens(prefill))],
                                c.filled(),
                            )
                        }),
                )
                .map_err(pe)?;
        }
        Ok(())
    }
}
