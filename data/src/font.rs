//! A 3x5 bitmap font (upper case, digits, a little punctuation) for labels
//! on contact sheets, so drawing text needs no system font.
use image::{Rgb, RgbImage};

/// Rows of 3 bits, top to bottom.
fn glyph(c: char) -> &'static str {
    match c.to_ascii_uppercase() {
        'A' => "010101111101101", 'B' => "110101110101110", 'C' => "011100100100011", 'D' => "110101101101110",
        'E' => "111100110100111", 'F' => "111100110100100", 'G' => "011100101101011", 'H' => "101101111101101",
        'I' => "111010010010111", 'J' => "001001001101010", 'K' => "101101110101101", 'L' => "100100100100111",
        'M' => "101111111101101", 'N' => "110101101101101", 'O' => "010101101101010", 'P' => "110101110100100",
        'Q' => "010101101110011", 'R' => "110101110101101", 'S' => "011100010001110", 'T' => "111010010010010",
        'U' => "101101101101111", 'V' => "101101101101010", 'W' => "101101111111101", 'X' => "101101010101101",
        'Y' => "101101010010010", 'Z' => "111001010100111", '0' => "111101101101111", '1' => "010110010010111",
        '2' => "110001010100111", '3' => "110001010001110", '4' => "101101111001001", '5' => "111100110001110",
        '6' => "011100111101111", '7' => "111001010010010", '8' => "111101111101111", '9' => "111101111001110",
        '-' => "000000111000000", '_' => "000000000000111", '.' => "000000000000010", '/' => "001001010100100",
        ':' => "000010000010000", '(' => "001010010010001", ')' => "100010010010100", ',' => "000000000010100",
        ' ' => "000000000000000", '=' => "000111000111000", '%' => "101001010100101", _ => "111101101101111",
    }
}

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * 4 * scale
}

/// Draws `text` with its top-left corner at `(x, y)`, clipped to the image.
pub fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32, color: Rgb<u8>) {
    for (k, c) in text.chars().enumerate() {
        for (b, bit) in glyph(c).bytes().enumerate() {
            if bit != b'1' {
                continue;
            }
            let (gx, gy) = (x + k as u32 * 4 * scale + (b as u32 % 3) * scale, y + (b as u32 / 3) * scale);
            for dy in 0..scale {
                for dx in 0..scale {
                    if gx + dx < img.width() && gy + dy < img.height() {
                        img.put_pixel(gx + dx, gy + dy, color);
                    }
                }
            }
        }
    }
}
