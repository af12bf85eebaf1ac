//! Line plots as PNG without fonts or system libraries: axes, a light grid
//! with numeric tick labels, one colored polyline per series and a legend
//! (color swatch + series name) at the top right, all text in the data
//! crate's 3x5 bitmap font (upper case). The training loop's `knn.png` has x
//! in training minutes; `loss.png` x in steps.

use std::path::Path;

use image::{Rgb, RgbImage};
use pretext_data::font::{draw_text, text_width};

pub const COLORS: [[u8; 3]; 6] = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [127, 127, 127]];

/// One named series of `(x, y)` points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Draws the series into a `w x h` PNG. Returns the (x, y) ranges used.
pub fn line_plot(path: &Path, series: &[Series], w: u32, h: u32) -> std::io::Result<((f64, f64), (f64, f64))> {
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let pts = series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (l, r, t, b) = (48i64, w as i64 - 15, 15i64, h as i64 - 30);
    let grey = Rgb([225, 225, 225]);
    for i in 0..=5 {
        let gx = l + (r - l) * i / 5;
        let gy = t + (b - t) * i / 5;
        line(&mut img, (gx, t), (gx, b), grey);
        line(&mut img, (l, gy), (r, gy), grey);
    }
    let black = Rgb([0, 0, 0]);
    line(&mut img, (l, b), (r, b), black);
    line(&mut img, (l, t), (l, b), black);
    for i in 0..=5 {
        let yv = y0 + (y1 - y0) * i as f64 / 5.0;
        text(&mut img, 2, b - (b - t) * i / 5 - 5, &fmt_tick(yv), black);
        let xv = x0 + (x1 - x0) * i as f64 / 5.0;
        text(&mut img, l + (r - l) * i / 5 - 8, b + 6, &fmt_tick(xv), black);
    }
    let map = |x: f64, y: f64| -> (i64, i64) {
        let px = l as f64 + (x - x0) / (x1 - x0) * (r - l) as f64;
        let py = b as f64 - (y - y0) / (y1 - y0) * (b - t) as f64;
        (px.round() as i64, py.round() as i64)
    };
    for (si, s) in series.iter().enumerate() {
        let c = Rgb(COLORS[si % COLORS.len()]);
        let p: Vec<(i64, i64)> = s.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).map(|&(x, y)| map(x, y)).collect();
        for win in p.windows(2) {
            thick_line(&mut img, win[0], win[1], c);
        }
        for &q in &p {
            if p.len() < 40 {
                dot(&mut img, q, c);
            }
        }
    }
    legend(&mut img, series, r, t);
    img.save(path).map_err(std::io::Error::other)?;
    Ok(((x0, x1), (y0, y1)))
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A white box at the top right of the plot area: per series, a swatch in
/// its color and its name, in series order.
fn legend(img: &mut RgbImage, series: &[Series], right: i64, top: i64) {
    if series.is_empty() {
        return;
    }
    let row = 14i64;
    let tw = series.iter().map(|s| text_width(s.name, 2)).max().unwrap_or(0) as i64;
    let (w, h) = (tw + 36, row * series.len() as i64 + 6);
    let (x0, y0) = ((right - 6 - w).max(0), top + 4);
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            put(img, x, y, Rgb([255, 255, 255]));
        }
    }
    let grey = Rgb([160, 160, 160]);
    for (a, b) in [((x0, y0), (x0 + w, y0)), ((x0, y0 + h), (x0 + w, y0 + h)), ((x0, y0), (x0, y0 + h)), ((x0 + w, y0), (x0 + w, y0 + h))] {
        line(img, a, b, grey);
    }
    for (si, s) in series.iter().enumerate() {
        let c = Rgb(COLORS[si % COLORS.len()]);
        let y = y0 + 4 + row * si as i64;
        thick_line(img, (x0 + 5, y + 4), (x0 + 25, y + 4), c);
        text(img, x0 + 31, y, s.name, Rgb([0, 0, 0]));
    }
}

/// Draws `s` (top-left at `x`, `y`) with the bitmap font scaled 2x, clipped at the left and top edges.
fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: Rgb<u8>) {
    draw_text(img, x.max(0) as u32, y.max(0) as u32, s, 2, c);
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn line(img: &mut RgbImage, a: (i64, i64), b: (i64, i64), c: Rgb<u8>) {
    let n = (b.0 - a.0).abs().max((b.1 - a.1).abs()).max(1);
    for i in 0..=n {
        let x = a.0 + (b.0 - a.0) * i / n;
        let y = a.1 + (b.1 - a.1) * i / n;
        put(img, x, y, c);
    }
}

fn thick_line(img: &mut RgbImage, a: (i64, i64), b: (i64, i64), c: Rgb<u8>) {
    for d in [(0, 0), (1, 0), (0, 1)] {
        line(img, (a.0 + d.0, a.1 + d.1), (b.0 + d.0, b.1 + d.1), c);
    }
}

fn dot(img: &mut RgbImage, p: (i64, i64), c: Rgb<u8>) {
    for dx in -2..=2 {
        for dy in -2..=2 {
            put(img, p.0 + dx, p.1 + dy, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_series_in_their_colors_within_the_axes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.png");
        let s = [Series { name: "a", points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN)] }, Series { name: "b", points: vec![] }];
        let ((x0, x1), (y0, y1)) = line_plot(&p, &s, 200, 120).unwrap();
        assert_eq!((x0, x1), (0.0, 1.0));
        assert!(y0 < 1.0 && y1 > 2.0);
        let img = image::open(&p).unwrap().to_rgb8();
        let blue = img.pixels().filter(|px| px.0 == COLORS[0]).count();
        assert!(blue > 50, "{blue} series pixels");
        assert!(img.pixels().any(|px| px.0 == [0, 0, 0]), "axes and labels");
    }

    /// The legend carries each series name: the pixels of a plot whose series
    /// are named differ from the same plot with other names, inside the legend
    /// box only, and a longer name widens the box.
    #[test]
    fn legend_draws_series_names() {
        let dir = tempfile::tempdir().unwrap();
        let draw = |a: &str, b: &str| {
            let p = dir.path().join(format!("{a}{b}.png"));
            let s = [Series { name: a, points: vec![(0.0, 0.0), (1.0, 1.0)] }, Series { name: b, points: vec![(0.0, 1.0), (1.0, 0.0)] }];
            line_plot(&p, &s, 320, 200).unwrap();
            image::open(&p).unwrap().to_rgb8()
        };
        let (x, y) = (draw("knn k=20", "knn k=200"), draw("loss", "lr"));
        let diff: Vec<(u32, u32)> = x.enumerate_pixels().filter(|(i, j, p)| y.get_pixel(*i, *j) != *p).map(|(i, j, _)| (i, j)).collect();
        assert!(!diff.is_empty());
        // All differences are in the top right (legend) area.
        assert!(diff.iter().all(|&(i, j)| i > 320 - 15 - text_width("knn k=200", 2) - 50 && j < 15 + 40), "{:?}", diff.iter().take(5).collect::<Vec<_>>());
        // The name is drawn in black glyphs next to its color swatch.
        let black = |img: &RgbImage| img.pixels().filter(|p| p.0 == [0, 0, 0]).count();
        assert!(black(&x) > black(&y), "longer names draw more glyph pixels");
    }
}
