//! PNG bar chart of the results, drawn pixel by pixel with an embedded 5x7
//! bitmap font: no system fonts, no native libraries.
//!
//! One group per measured case (model and batch, training, k-NN); inside a
//! group one bar per system, scaled to the group's best, labelled with its
//! value and its ratio to every peer.

use std::path::Path;

use image::{Rgb, RgbImage};

/// One bar: a system's throughput and the label drawn to its right.
pub struct Bar {
    pub system: String,
    pub value: f64,
    pub label: String,
    /// Peers are drawn in grey, pretext systems in colour.
    pub is_peer: bool,
}

pub struct Group {
    pub title: String,
    pub bars: Vec<Bar>,
}

/// Classic 5x7 glyphs, one byte per row, bit 4 = leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '[' => [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E],
        ']' => [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '*' => [0, 0x04, 0x15, 0x0E, 0x15, 0x04, 0],
        '@' => [0x0E, 0x11, 0x01, 0x0D, 0x15, 0x15, 0x0E],
        ' ' => [0; 7],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
    }
}

const SCALE: u32 = 2;
const CHAR_W: u32 = 6 * SCALE;
const LINE_H: u32 = 9 * SCALE;

fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, color: Rgb<u8>) {
    for (k, c) in text.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5u32 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                let (gx, gy) = (x + k as u32 * CHAR_W + col * SCALE, y + row as u32 * SCALE);
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        if gx + dx < img.width() && gy + dy < img.height() {
                            img.put_pixel(gx + dx, gy + dy, color);
                        }
                    }
                }
            }
        }
    }
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, color: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, color);
        }
    }
}

const PALETTE: [[u8; 3]; 4] = [[31, 119, 180], [44, 160, 44], [214, 39, 40], [148, 103, 189]];

/// Renders the chart into an image.
pub fn render(title: &str, subtitle: &[String], groups: &[Group]) -> RgbImage {
    let name_w = groups.iter().flat_map(|g| g.bars.iter()).map(|b| b.system.chars().count()).max().unwrap_or(8) as u32 * CHAR_W + 16;
    let label_w = groups.iter().flat_map(|g| g.bars.iter()).map(|b| b.label.chars().count()).max().unwrap_or(10) as u32 * CHAR_W + 16;
    let bar_max = 360;
    let longest_line = subtitle.iter().map(|s| s.chars().count()).chain([title.chars().count()]).max().unwrap_or(0) as u32;
    let width = (16 + name_w + bar_max + label_w).max(longest_line * CHAR_W + 32);
    let header = 16 + LINE_H * (1 + subtitle.len() as u32) + 8;
    let height = header + groups.iter().map(|g| LINE_H + 6 + g.bars.len() as u32 * (LINE_H + 2) + 10).sum::<u32>() + 8;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let black = Rgb([0, 0, 0]);
    draw_text(&mut img, 16, 12, title, black);
    for (i, s) in subtitle.iter().enumerate() {
        draw_text(&mut img, 16, 12 + LINE_H * (i as u32 + 1), s, Rgb([90, 90, 90]));
    }
    let mut y = header;
    for g in groups {
        fill(&mut img, 16, y, width - 32, 1, Rgb([200, 200, 200]));
        draw_text(&mut img, 16, y + 4, &g.title, black);
        y += LINE_H + 6;
        let max = g.bars.iter().map(|b| b.value).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
        let mut colour = 0;
        for b in &g.bars {
            draw_text(&mut img, 16, y + 2, &b.system, black);
            let len = if max > 0.0 && b.value.is_finite() { ((b.value / max) * bar_max as f64).round() as u32 } else { 0 };
            let c = if b.is_peer {
                Rgb([150, 150, 150])
            } else {
                colour += 1;
                Rgb(PALETTE[(colour - 1) % PALETTE.len()])
            };
            fill(&mut img, 16 + name_w, y, len.max(1), LINE_H - 2, c);
            draw_text(&mut img, 16 + name_w + len + 8, y + 2, &b.label, black);
            y += LINE_H + 2;
        }
        y += 10;
    }
    img
}

/// Renders and writes the chart as PNG.
pub fn write_png(path: &Path, title: &str, subtitle: &[String], groups: &[Group]) -> Result<(), image::ImageError> {
    render(title, subtitle, groups).save_with_format(path, image::ImageFormat::Png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_group_best() {
        let g = Group {
            title: "RESNET".into(),
            bars: vec![
                Bar { system: "a".into(), value: 100.0, label: "100".into(), is_peer: false },
                Bar { system: "b".into(), value: 50.0, label: "50".into(), is_peer: true },
            ],
        };
        let img = render("T", &[], &[g]);
        // Count coloured pixels on each bar's middle row.
        let row_len = |want: Rgb<u8>| (0..img.height()).map(|y| (0..img.width()).filter(|&x| *img.get_pixel(x, y) == want).count()).max().unwrap();
        let a = row_len(Rgb(PALETTE[0]));
        let b = row_len(Rgb([150, 150, 150]));
        assert_eq!(a, 360);
        assert_eq!(b, 180);
    }

    #[test]
    fn the_image_is_wide_enough_for_the_longest_subtitle() {
        let g = Group { title: "G".into(), bars: vec![Bar { system: "a".into(), value: 1.0, label: "1".into(), is_peer: false }] };
        let long = "X".repeat(300);
        let img = render("T", &[long], &[g]);
        assert!(img.width() >= 300 * CHAR_W + 32, "{} px", img.width());
    }

    #[test]
    fn every_label_character_has_a_glyph() {
        for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:-+/%()[]=_<>*@ ".chars() {
            assert!(c == ' ' || glyph(c) != glyph('\u{1}'), "{c} falls back to '?'");
        }
    }
}
