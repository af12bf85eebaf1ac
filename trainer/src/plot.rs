//! Line charts as PNG, drawn by plotters with the embedded font
//! (`pretext_data::font`): a title, axis titles with units, tick labels, one
//! coloured line per series, dashed horizontal reference lines (the
//! random-init baseline), and the legend in a strip under the plot, where it
//! cannot hide data. The training loop draws `loss.png` (x in steps) and
//! `knn.png` (x in training minutes) with it.

use std::path::Path;

use image::RgbImage;
use plotters::prelude::*;
use pretext_data::font;

/// Series colours (matplotlib's tab10); reference line `i` reuses colour `i`.
pub const COLORS: [RGBColor; 6] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(127, 127, 127)];

/// One named series of `(x, y)` points; non-finite points are skipped.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// A dashed horizontal line at `y`, e.g. the random-init k-NN accuracy.
pub struct Reference<'a> {
    pub name: &'a str,
    pub y: f64,
}

/// What one chart shows.
pub struct LineChart<'a> {
    pub title: &'a str,
    /// Axis titles, with their units.
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series<'a>],
    pub references: &'a [Reference<'a>],
}

const LEGEND_ROW: u32 = 22;

/// Draws the chart into a `w x h` PNG at `path`. Returns the (x, y) ranges of the axes.
pub fn line_plot(path: &Path, chart: &LineChart, w: u32, h: u32) -> std::io::Result<((f64, f64), (f64, f64))> {
    let (xr, yr) = ranges(chart);
    let entries = chart.series.len() + chart.references.len();
    let per_row = 3usize;
    let legend_h = LEGEND_ROW * entries.div_ceil(per_row).max(1) as u32 + 8;
    let mut img = RgbImage::new(w, h + legend_h);
    {
        let root = BitMapBackend::with_buffer(img.as_mut(), (w, h + legend_h)).into_drawing_area();
        draw(&root, chart, xr, yr, h, per_row).map_err(|e| std::io::Error::other(format!("drawing {}: {e}", path.display())))?;
    }
    img.save(path).map_err(|e| std::io::Error::other(format!("writing {}: {e}", path.display())))?;
    Ok((xr, yr))
}

/// Axis ranges covering every finite point and reference, y padded by 5%.
fn ranges(chart: &LineChart) -> ((f64, f64), (f64, f64)) {
    let pts = chart.series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, f64::MAX, f64::MIN);
    }
    for r in chart.references.iter().filter(|r| r.y.is_finite()) {
        (y0, y1) = (y0.min(r.y), y1.max(r.y));
    }
    if y0 > y1 {
        (y0, y1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    // Start at 0 when the data nearly does (a tick at the origin), and leave
    // 2% on the right so the last point is drawn whole.
    if x0 > 0.0 && x0 < 0.05 * (x1 - x0) {
        x0 = 0.0;
    }
    x1 += 0.02 * (x1 - x0);
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    ((x0, x1), (y0 - pad, y1 + pad))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw(root: &Area, chart: &LineChart, xr: (f64, f64), yr: (f64, f64), plot_h: u32, per_row: usize) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let (top, legend) = root.split_vertically(plot_h);
    let mut c = ChartBuilder::on(&top)
        .caption(chart.title, font::style(20.0, BLACK))
        .margin_top(8)
        .margin_left(8)
        // Room for the last x tick label, centred on the right edge.
        .margin_right(28)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
    c.configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .axis_desc_style(font::style(15.0, BLACK))
        .label_style(font::style(13.0, BLACK))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| tick(*v, xr.1 - xr.0))
        .y_label_formatter(&|v| tick(*v, yr.1 - yr.0))
        .draw()?;
    for (i, r) in chart.references.iter().enumerate().filter(|(_, r)| r.y.is_finite()) {
        let col = COLORS[i % COLORS.len()];
        c.draw_series(DashedLineSeries::new([(xr.0, r.y), (xr.1, r.y)], 8, 5, col.mix(0.8).stroke_width(2)))?;
    }
    for (i, s) in chart.series.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        c.draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(2)))?;
        if pts.len() < 40 {
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, col.filled())))?;
        }
    }
    // Legend: series (solid) then references (dashed), `per_row` to a row.
    let names = chart.series.iter().map(|s| (s.name, false)).chain(chart.references.iter().map(|r| (r.name, true)));
    let col_w = (legend.dim_in_pixel().0 as i32 - 80) / per_row as i32;
    for (k, (name, dashed)) in names.enumerate() {
        let i = if dashed { k - chart.series.len() } else { k };
        let col = COLORS[i % COLORS.len()];
        let (x, y) = (72 + (k % per_row) as i32 * col_w, 4 + (k / per_row) as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2);
        if dashed {
            legend.draw(&plotters::element::DashedPathElement::new([(x, y), (x + 28, y)], 5, 3, col.stroke_width(2)))?;
        } else {
            legend.draw(&PathElement::new([(x, y), (x + 28, y)], col.stroke_width(3)))?;
        }
        legend.draw(&Text::new(name.to_string(), (x + 36, y - 8), font::style(14.0, BLACK)))?;
    }
    root.present()?;
    Ok(())
}

/// A tick label with as many decimals as the axis span needs and no
/// trailing zeros ("16", "4.6", "0.125"; no "16." cut-offs).
fn tick(v: f64, span: f64) -> String {
    let decimals = if span >= 50.0 { 0 } else if span >= 5.0 { 1 } else if span >= 0.5 { 2 } else { 3 };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    if s == "-0" { "0".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart<'a>(series: &'a [Series<'a>], references: &'a [Reference<'a>]) -> LineChart<'a> {
        LineChart { title: "t", x_label: "x (s)", y_label: "y (%)", series, references }
    }

    #[test]
    fn draws_series_in_their_colors_within_the_axes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.png");
        let s = [Series { name: "a", points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN)] }, Series { name: "b", points: vec![] }];
        let ((x0, x1), (y0, y1)) = line_plot(&p, &chart(&s, &[]), 400, 300).unwrap();
        assert_eq!((x0, x1), (0.0, 1.02));
        assert!(y0 < 1.0 && y1 > 2.0);
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.height(), 300 + LEGEND_ROW + 8, "one legend row under the plot");
        let blue = img.pixels().filter(|px| px.0 == [31, 119, 180]).count();
        assert!(blue > 200, "{blue} series pixels");
        assert!(img.pixels().any(|px| px.0 == [0, 0, 0]), "axes and labels");
    }

    /// A reference line widens the y range to include it and is drawn across the plot.
    #[test]
    fn reference_lines_are_inside_the_y_range() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.png");
        let s = [Series { name: "k-NN", points: vec![(0.0, 30.0), (5.0, 50.0)] }];
        let r = [Reference { name: "random init", y: 10.0 }];
        let (_, (y0, y1)) = line_plot(&p, &chart(&s, &r), 400, 300).unwrap();
        assert!(y0 < 10.0 && y1 > 50.0, "{y0}..{y1}");
        let img = image::open(&p).unwrap().to_rgb8();
        // Dashed, blended into white: the rows that carry the most pixels of the reference's hue.
        let dashed = (0..300).map(|y| (0..400).filter(|&x| {
            let p = img.get_pixel(x, y).0;
            p[0] < 120 && p[2] > 170 && p[1] > 120
        }).count()).max().unwrap();
        assert!(dashed > 150, "{dashed} reference pixels on the best row");
    }

    #[test]
    fn ticks_keep_the_digits_the_span_needs() {
        assert_eq!(tick(16.0, 16.0), "16");
        assert_eq!(tick(4.6, 1.5), "4.6");
        assert_eq!(tick(0.125, 0.2), "0.125");
        assert_eq!(tick(1500.0, 3000.0), "1500");
        assert_eq!(tick(-0.0001, 2.0), "0");
    }
}
