//! The report's expert-compression section from `quality.csv`: a table of method × rank
//! (perplexity, KL, top-1 agreement, expert parameter fraction) and a chart of perplexity
//! against the expert parameter fraction, one line per method.
use std::collections::BTreeSet;
use std::fmt::Write;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::plots::{color, font, pe, Chart};
use super::quality::QualityRow;

/// Methods in the order the table and chart show them.
const METHODS: [&str; 3] = ["pca", "ridge", "whitened"];

/// `## Expert compression`: the uncompressed rows, then one line per rank with each method's
/// perplexity, KL and top-1 agreement.
pub fn write_quality_table(md: &mut String, rows: &[QualityRow]) {
    if rows.is_empty() {
        return;
    }
    md.push_str("## Expert compression\n\n");
    md.push_str(
        "Held-out perplexity, mean KL divergence from the uncompressed model's next-token \
         distribution (nats) and top-1 agreement with it, per method and rank \
         (`quality.csv`).\n\n",
    );
    for r in rows.iter().filter(|r| r.method == "none") {
        let _ = writeln!(
            md,
            "- `{}` (experts as they are, {:.0}% of expert parameters): perplexity **{:.3}** \
             over {} predictions\n",
            r.variant,
            100.0 * r.expert_param_fraction,
            r.perplexity,
            r.eval_tokens
        );
    }
    let methods: Vec<&str> = METHODS
        .iter()
        .copied()
        .filter(|m| rows.iter().any(|r| r.method == *m))
        .collect();
    let ranks: BTreeSet<usize> = rows.iter().filter_map(|r| r.rank).collect();
    if methods.is_empty() {
        return;
    }
    let _ = write!(md, "| rank | expert params |");
    for m in &methods {
        let _ = write!(md, " {m}: perplexity / KL / top-1 |");
    }
    md.push('\n');
    let _ = write!(md, "|---:|---:|");
    for _ in &methods {
        md.push_str("---|");
    }
    md.push('\n');
    for rank in ranks {
        let at = |m: &str| rows.iter().find(|r| r.method == m && r.rank == Some(rank));
        let fraction = methods
            .iter()
            .find_map(|m| at(m))
            .map_or(f64::NAN, |r| r.expert_param_fraction);
        let _ = write!(md, "| {rank} | {:.1}% |", 100.0 * fraction);
        let best = methods
            .iter()
            .filter_map(|m| at(m).map(|r| r.perplexity))
            .fold(f64::INFINITY, f64::min);
        for m in &methods {
            match at(m) {
                Some(r) => {
                    let ppl = format!("{:.3}", r.perplexity);
                    let ppl = if r.perplexity == best {
                        format!("**{ppl}**")
                    } else {
                        ppl
                    };
                    let _ = write!(md, " {ppl} / {:.3} / {:.3} |", r.kl_mean, r.top1_agreement);
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    md.push('\n');
}

/// Perplexity (log scale) against the expert parameter fraction, one line per method, the
/// uncompressed model as a horizontal line.
pub struct QualityChart {
    pub rows: Vec<QualityRow>,
}

impl Chart for QualityChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        root.fill(&WHITE).map_err(pe)?;
        let finite: Vec<&QualityRow> = self
            .rows
            .iter()
            .filter(|r| r.perplexity.is_finite() && r.perplexity > 0.0)
            .collect();
        let (lo, hi) = finite.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
            (lo.min(r.perplexity), hi.max(r.perplexity))
        });
        let (lo, hi) = if lo.is_finite() {
            (lo * 0.9, hi * 1.1)
        } else {
            (1.0, 10.0)
        };
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Held-out perplexity against expert parameters kept",
                font(24),
            )
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..1.05, (lo..hi).log_scale())
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("expert parameters kept (fraction of the uncompressed experts)")
            .y_desc("perplexity (log scale)")
            .x_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .light_line_style(WHITE)
            .label_style(font(14))
            .axis_desc_style(font(16))
            .draw()
            .map_err(pe)?;
        if let Some(none) = finite.iter().find(|r| r.method == "none") {
            let c = BLACK;
            chart
                .draw_series(LineSeries::new(
                    [(0.0, none.perplexity), (1.05, none.perplexity)],
                    c.stroke_width(1),
                ))
                .map_err(pe)?
                .label("uncompressed")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
        for (i, m) in METHODS.iter().enumerate() {
            let mut points: Vec<(f64, f64)> = finite
                .iter()
                .filter(|r| r.method == *m)
                .map(|r| (r.expert_param_fraction, r.perplexity))
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let c = color(i);
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(pe)?
                .label(*m)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(pe)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .label_font(font(14))
            .draw()
            .map_err(pe)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, rank: Option<usize>, ppl: f64) -> QualityRow {
        QualityRow {
            variant: format!("{method}-{rank:?}"),
            method: method.into(),
            rank,
            expert_param_fraction: rank.map_or(1.0, |r| r as f64 / 192.0),
            perplexity: ppl,
            kl_mean: 0.1,
            top1_agreement: 0.9,
            eval_tokens: 100,
            ..Default::default()
        }
    }

    #[test]
    fn the_table_has_a_line_per_rank_and_bolds_the_best_method() {
        let rows = vec![
            row("none", None, 10.0),
            row("pca", Some(32), 40.0),
            row("ridge", Some(32), 20.0),
            row("pca", Some(64), 15.0),
            row("ridge", Some(64), 12.0),
        ];
        let mut md = String::new();
        write_quality_table(&mut md, &rows);
        assert!(md.contains("perplexity **10.000**"), "{md}");
        let line32 = md
            .lines()
            .find(|l| l.starts_with("| 32 |"))
            .expect("rank 32");
        assert!(
            line32.contains("40.000 /") && line32.contains("**20.000**"),
            "{line32}"
        );
        assert!(md.lines().any(|l| l.starts_with("| 64 |")));
        assert!(
            !md.contains("whitened"),
            "no column for a method that did not run"
        );
    }
}
