//! `bench.png`: every target of the run as one row, drawn by plotters with
//! the embedded font (`pretext_data::font`). A row shows the ratio's median
//! (dot) and bootstrap 95% interval (bar), coloured by verdict, and the
//! target's limit as a black tick across the row; x is logarithmic, so 0.5x
//! and 2x sit at the same distance from 1x.

use std::path::Path;

use anyhow::{anyhow, Result};
use image::RgbImage;
use plotters::prelude::*;
use pretext_data::font;
use serde::Serialize;

use crate::stats::{Interval, Verdict};

/// One target of the issue, evaluated on this run.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: String,
    /// `None`: a system of the ratio was not measured.
    pub ratio: Option<Interval>,
    pub limit: f64,
    /// The ratio must stay under `limit` (else above it).
    pub at_most: bool,
    pub verdict: Option<Verdict>,
}

const MET: RGBColor = RGBColor(44, 160, 44);
const MISSED: RGBColor = RGBColor(214, 39, 40);
const UNDECIDED: RGBColor = RGBColor(230, 140, 0);
const GREY: RGBColor = RGBColor(150, 150, 150);

fn colour(v: Option<Verdict>) -> RGBColor {
    match v {
        Some(Verdict::Met) => MET,
        Some(Verdict::Missed) => MISSED,
        Some(Verdict::Undecided) => UNDECIDED,
        None => GREY,
    }
}

const ROW: u32 = 30;

/// The x range: every interval end and limit, with a margin, on a log scale.
fn x_range(targets: &[Target]) -> (f64, f64) {
    let vals = targets.iter().flat_map(|t| [Some(t.limit), t.ratio.map(|r| r.lo), t.ratio.map(|r| r.hi)]).flatten().filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = vals.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return (0.5, 2.0);
    }
    (lo.min(0.9) / 1.25, hi.max(1.1) * 1.25)
}

/// Round ratios inside the x range for the log axis' labels.
fn ticks(x0: f64, x1: f64) -> Vec<f64> {
    let mut v = Vec::new();
    for e in -3..=3 {
        for m in [1.0, 1.5, 2.0, 3.0, 5.0] {
            let t = if e < 0 { m / 10f64.powi(-e) } else { m * 10f64.powi(e) };
            if t >= x0 && t <= x1 {
                v.push(t);
            }
        }
    }
    v
}

/// Draws the chart into `path`.
pub fn write_png(path: &Path, title: &str, subtitle: &[String], targets: &[Target]) -> Result<()> {
    let name_w = targets.iter().map(|t| font::text_width(&t.target, 13.0)).max().unwrap_or(100) + 24;
    let sub_w = subtitle.iter().map(|s| font::text_width(s, 13.0)).max().unwrap_or(0) + 40;
    let w = (name_w + 560).max(sub_w);
    let head = 40 + 18 * subtitle.len() as u32;
    let plot_h = ROW * targets.len().max(1) as u32 + 60;
    let h = head + plot_h + 40;
    let mut img = RgbImage::new(w, h);
    {
        let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
        draw(&root, title, subtitle, targets, name_w, head, plot_h).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    }
    img.save(path).map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw(root: &Area, title: &str, subtitle: &[String], targets: &[Target], name_w: u32, head: u32, plot_h: u32) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(head);
    let (plot, legend) = rest.split_vertically(plot_h);
    top.draw(&Text::new(title.to_string(), (16, 10), font::style(20.0, BLACK)))?;
    for (i, s) in subtitle.iter().enumerate() {
        top.draw(&Text::new(s.clone(), (16, 38 + 18 * i as i32), font::style(13.0, RGBColor(80, 80, 80))))?;
    }
    let n = targets.len().max(1) as i32;
    let (x0, x1) = x_range(targets);
    // Row i of the list is drawn at the top: segment n - 1 - i.
    let row = |i: usize| SegmentValue::CenterOf(n - 1 - i as i32);
    let mut c = ChartBuilder::on(&plot).margin_right(24).margin_top(4).x_label_area_size(44).y_label_area_size(name_w).build_cartesian_2d((x0..x1).log_scale().with_key_points(ticks(x0, x1)), (0..(n - 1).max(1)).into_segmented())?;
    c.configure_mesh()
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(220, 220, 220))
        .x_desc("ratio (log scale): latency or time / the peer's; training: images/s / PyTorch's")
        .axis_desc_style(font::style(14.0, BLACK))
        .label_style(font::style(13.0, BLACK))
        .x_labels(10)
        .x_label_formatter(&|v| format!("{}x", (v * 1000.0).round() / 1000.0))
        .y_labels(n as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(k) => targets.get((n - 1 - k) as usize).map(|t| t.target.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    for (i, t) in targets.iter().enumerate() {
        // The limit: a black tick across the row, in pixels.
        let (px, py) = c.backend_coord(&(t.limit, row(i)));
        root.draw(&PathElement::new([(px, py - 11), (px, py + 11)], BLACK.stroke_width(2)))?;
        let Some(r) = t.ratio else { continue };
        let col = colour(t.verdict);
        c.draw_series(std::iter::once(PathElement::new([(r.lo.max(x0), row(i)), (r.hi.min(x1), row(i))], col.stroke_width(4))))?;
        c.draw_series(std::iter::once(Circle::new((r.median, row(i)), 5, col.filled())))?;
    }
    // Legend, under the axis title.
    let mut x = 16;
    let y = 20;
    let item = |x: &mut i32, text: &str| -> Result<(), Box<dyn std::error::Error>> {
        legend.draw(&Text::new(text.to_string(), (*x + 28, y - 8), font::style(13.0, BLACK)))?;
        *x += 28 + font::text_width(text, 13.0) as i32 + 18;
        Ok(())
    };
    legend.draw(&Circle::new((x + 12, y), 5, BLACK.filled()))?;
    legend.draw(&PathElement::new([(x, y), (x + 24, y)], BLACK.stroke_width(4)))?;
    item(&mut x, "median of per-round ratios, bootstrap 95% interval")?;
    legend.draw(&PathElement::new([(x + 12, y - 10), (x + 12, y + 10)], BLACK.stroke_width(2)))?;
    item(&mut x, "limit")?;
    for (v, name) in [(Some(Verdict::Met), "met"), (Some(Verdict::Missed), "missed"), (Some(Verdict::Undecided), "undecided")] {
        legend.draw(&Rectangle::new([(x + 4, y - 6), (x + 20, y + 6)], colour(v).filled()))?;
        item(&mut x, name)?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, median: f64, lo: f64, hi: f64, limit: f64) -> Target {
        let iv = Interval { median, lo, hi, rounds: 8 };
        Target { target: name.into(), ratio: Some(iv), limit, at_most: true, verdict: Some(Verdict::of(&iv, limit, true)) }
    }

    /// One row per target in its verdict's colour; the PNG decodes with a
    /// size that fits every name.
    #[test]
    fn rows_in_verdict_colours() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bench.png");
        let t = [target("a: met", 0.5, 0.45, 0.55, 1.0), target("b: undecided", 1.0, 0.9, 1.1, 1.0), target("c: a longer name, missed", 4.0, 3.5, 4.5, 3.0)];
        write_png(&p, "pretext bench", &["subtitle".into()], &t).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert!(img.width() >= font::text_width("c: a longer name, missed", 13.0) + 560, "{} px wide", img.width());
        assert!((200..800).contains(&img.height()), "{} px high", img.height());
        // Pixels of each verdict's colour above the legend strip (the last 40 px).
        let count = |c: RGBColor| img.enumerate_pixels().filter(|(_, y, p)| *y < img.height() - 40 && p.0 == [c.0, c.1, c.2]).count();
        for (c, what) in [(MET, "met"), (UNDECIDED, "undecided"), (MISSED, "missed")] {
            assert!(count(c) > 80, "{what}: {} px", count(c));
        }
        // The limits (1x and 3x): black ticks 22 px high, 2 px wide, right of
        // the y axis, where no text or axis line is that tall.
        let left = font::text_width("c: a longer name, missed", 13.0) + 34;
        let tall = (left..img.width()).filter(|&x| (0..img.height() - 40).filter(|&y| img.get_pixel(x, y).0 == [0, 0, 0]).count() >= 20).count();
        assert!(tall >= 4, "{tall} limit tick columns");
        // x covers every interval and limit, with round labels.
        let (x0, x1) = x_range(&t);
        assert!(x0 < 0.45 && x1 > 4.5, "{x0}..{x1}");
        assert_eq!(ticks(x0, x1), vec![0.5, 1.0, 1.5, 2.0, 3.0, 5.0]);
    }
}
