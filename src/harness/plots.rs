//! Shared plotting plumbing: the bundled font, the colour cycle, and saving one chart as both
//! PNG and SVG (atomically, like the CSVs). The charts themselves are in `charts.rs`; they get
//! their data from the CSVs only (`render.rs`).
use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::csv_out::{temp_path, write_atomic};

/// DejaVu Sans (Bitstream Vera licence, assets/DejaVuSans.LICENSE): plotters' `ab_glyph` text
/// needs a font in memory, and bundling one makes plots identical on every machine.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// The family name charts use for all text.
pub const FONT_FAMILY: &str = "sans-serif";

/// Registers the bundled font once per process.
pub fn ensure_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT).is_ok()
    });
    anyhow::ensure!(
        ok,
        "the bundled font assets/DejaVuSans.ttf could not be loaded"
    );
    Ok(())
}

/// Matplotlib's `tab10`, so notebook figures and these use the same colours.
const TAB10: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

pub fn color(i: usize) -> RGBColor {
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b)
}

/// Turns a plotters error (generic over the backend) into an `anyhow` error.
pub fn pe<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e:?}")
}

/// A chart that can draw itself on any plotters backend.
pub trait Chart {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32) {
        (1000, 600)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>;
}

/// Writes `<dir>/<stem>.png` and `<dir>/<stem>.svg`.
pub fn save<C: Chart>(dir: &Path, stem: &str, chart: &C) -> anyhow::Result<()> {
    ensure_font()?;
    let size = chart.size();
    let png = dir.join(format!("{stem}.png"));
    let tmp = temp_path(&png);
    let drawn = (|| {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        chart.draw(&root)?;
        root.present().map_err(pe)
    })();
    match drawn.and_then(|_| std::fs::rename(&tmp, &png).map_err(anyhow::Error::from)) {
        Ok(()) => {}
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("plotting {}", png.display()));
        }
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        chart
            .draw(&root)
            .with_context(|| format!("plotting {stem}.svg"))?;
        root.present().map_err(pe)?;
    }
    write_atomic(&dir.join(format!("{stem}.svg")), svg.as_bytes())
}

/// A text style in the bundled font.
pub fn font(size: u32) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().into()
}

/// Tick labels without spurious decimals: `250` rather than `250.0` on large ranges.
pub fn tick(v: f64, range_max: f64) -> String {
    if range_max >= 20.0 {
        format!("{v:.0}")
    } else if range_max >= 2.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
