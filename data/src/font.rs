//! The one font of every chart and contact sheet: DejaVu Sans (an ASCII
//! subset, 14 KB; licence in data/assets/fonts/LICENSE) embedded in the
//! binary and registered with plotters as `sans-serif`, so drawing text needs
//! no system font.

use std::sync::Once;

use image::{Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::FontStyle;

/// The family name to draw with, after [`register`].
pub const FAMILY: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");

/// Registers the embedded font with plotters (once per process). Drawing
/// text before this fails with plotters' `FontUnavailable`.
pub fn register() {
    static ONCE: Once = Once::new();
    // The embedded bytes are checked by the test below; a font that did not
    // parse would leave text drawing to fail with an error, not a panic.
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS);
    });
}

/// The text style of `size` px in `color`.
pub fn style(size: f64, color: RGBColor) -> TextStyle<'static> {
    register();
    TextStyle { font: (FAMILY, size).into_font(), color: color.to_backend_color(), pos: plotters::style::text_anchor::Pos::default() }
}

/// Width in pixels of `text` drawn at `size` px (0 if the font is unavailable).
pub fn text_width(text: &str, size: f64) -> u32 {
    register();
    (FAMILY, size).into_font().box_size(text).map_or(0, |(w, _)| w)
}

/// Draws `text` at `size` px with its top-left corner at `(x, y)`, clipped to the image.
pub fn draw_text(img: &mut RgbImage, x: i32, y: i32, text: &str, size: f64, color: Rgb<u8>) {
    let (w, h) = img.dimensions();
    let area = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    // Errors only come from a missing font, ruled out by the test below.
    let _ = area.draw_text(text, &style(size, RGBColor(color.0[0], color.0[1], color.0[2])), (x, y));
    let _ = area.present();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_font_draws_text() {
        let mut img = RgbImage::from_pixel(200, 40, Rgb([255, 255, 255]));
        draw_text(&mut img, 4, 4, "k-NN 0.5 ms", 20.0, Rgb([0, 0, 0]));
        let ink: Vec<(u32, u32)> = img.enumerate_pixels().filter(|p| p.2 .0[0] < 128).map(|p| (p.0, p.1)).collect();
        assert!(ink.len() > 100, "{} dark pixels", ink.len());
        // Inside the box the layout promises.
        let w = text_width("k-NN 0.5 ms", 20.0);
        assert!((60..160).contains(&w), "{w} px");
        assert!(ink.iter().all(|&(x, y)| x >= 4 && x <= 4 + w + 1 && y < 40), "ink outside the text box");
        assert!(text_width("WWWW", 20.0) > text_width("iiii", 20.0), "proportional glyph advances");
    }
}
