//! Line plots as PNG without fonts or system libraries: axes, a light grid
//! with numeric tick labels (a built-in 3x5 digit font), one colored polyline
//! per series and a color swatch per series at the top right, in series order
//! (the training loop's `knn.png`: blue = k=20 T=0.07, orange = k=200 T=0.1;
//! x axis in training minutes; `loss.png`: x axis in steps).

use std::path::Path;

use image::{Rgb, RgbImage};

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
        // Legend swatch per series, top right.
        let ly = t + 6 + 10 * si as i64;
        thick_line(&mut img, (r - 40, ly), (r - 10, ly), c);
    }
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

/// 3x5 glyphs for `0-9 . -`, rows top to bottom, 3 bits each (MSB = left).
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        _ => return None,
    })
}

/// Draws `s` with the 3x5 font scaled 2x.
fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: Rgb<u8>) {
    for (k, ch) in s.chars().enumerate() {
        let Some(g) = glyph(ch) else { continue };
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        put(img, x + k as i64 * 8 + col * 2 + dx, y + row as i64 * 2 + dy, c);
                    }
                }
            }
        }
    }
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
}
