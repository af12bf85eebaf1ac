//! The one image decoder: every JPEG and PNG pretext reads (datasets, the
//! eval transform, `extract`, `knn`) goes through [`decode`].
//!
//! It is strict where decoders are lenient: `image` (zune-jpeg in its lenient
//! mode) fills the missing scan of a truncated JPEG with grey and returns an
//! image, which would put a mostly blank picture into training or a features
//! file. Pillow refuses such a file ("image file is truncated"); so do we:
//! - the file's structure is walked first: a JPEG's marker segments and
//!   entropy-coded scans up to its end-of-image marker, a PNG's chunks up to
//!   `IEND`, each segment or chunk complete (bytes after the end are allowed,
//!   as Pillow allows them); the reason says where the file ends;
//! - a JPEG is then decoded by zune-jpeg (the decoder inside `image`, the
//!   same version) in strict mode, so corrupt entropy-coded data is an error
//!   instead of a grey remainder; a PNG by `image` (the `png` crate checks
//!   every chunk's CRC).
//!
//! Intact files decode to the same pixels as `image::load_from_memory`.
use image::DynamicImage;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// Decodes a JPEG or PNG; the error is the reason, for the caller to put
/// next to the file's name.
pub(crate) fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    if bytes.starts_with(&[0xff, 0xd8]) {
        jpeg_complete(bytes)?;
        decode_jpeg(bytes)
    } else if bytes.starts_with(&PNG_SIGNATURE) {
        png_complete(bytes)?;
        image::load_from_memory_with_format(bytes, image::ImageFormat::Png).map_err(|e| format!("PNG: {e}"))
    } else {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        Err(format!("neither JPEG nor PNG ({} bytes, starting {})", bytes.len(), head.join(" ")))
    }
}

/// zune-jpeg in strict mode, with `image`'s colour handling: RGB, RGBA,
/// gray and gray+alpha stay as they are, every other colour space (YCbCr,
/// CMYK, ...) becomes RGB.
fn decode_jpeg(bytes: &[u8]) -> Result<DynamicImage, String> {
    let reason = |e: zune_jpeg::errors::DecodeErrors| format!("JPEG: {}", e.to_string().trim_matches('"'));
    let options = DecoderOptions::default().set_strict_mode(true).set_max_width(usize::MAX).set_max_height(usize::MAX);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    d.decode_headers().map_err(reason)?;
    let input = d.input_colorspace().ok_or("JPEG: no colour space after the headers")?;
    let out = match input {
        ColorSpace::RGB | ColorSpace::RGBA | ColorSpace::Luma | ColorSpace::LumaA => input,
        _ => ColorSpace::RGB,
    };
    d.set_options(options.jpeg_set_out_colorspace(out));
    let pixels = d.decode().map_err(reason)?;
    let (w, h) = d.dimensions().ok_or("JPEG: no dimensions after decoding")?;
    let (w, h) = (w as u32, h as u32);
    let short = format!("JPEG: {} decoded bytes for {w}x{h} {out:?}", pixels.len());
    let img = match out {
        ColorSpace::RGBA => image::RgbaImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgba8),
        ColorSpace::Luma => image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        ColorSpace::LumaA => image::GrayAlphaImage::from_raw(w, h, pixels).map(DynamicImage::ImageLumaA8),
        _ => image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
    };
    img.ok_or(short)
}

/// Where a file ends early, for the reason of a truncated file.
fn truncated(format: &str, len: usize, place: String, end: &str) -> String {
    format!("truncated {format}: the file ends after {len} bytes, {place}, before its {end}")
}

/// Walks a JPEG from SOI to EOI: every marker segment complete, every scan
/// ended by a marker, and an EOI at the end.
fn jpeg_complete(b: &[u8]) -> Result<(), String> {
    let cut = |place: String| Err(truncated("JPEG", b.len(), place, "end-of-image marker"));
    let mut i = 2;
    let mut scans = 0;
    loop {
        let place = || if scans == 0 { "in the headers".to_string() } else { format!("after scan {scans}") };
        if i >= b.len() {
            return cut(place());
        }
        if b[i] != 0xff {
            return Err(format!("corrupt JPEG: byte {i} is 0x{:02x} where a marker should start", b[i]));
        }
        while i < b.len() && b[i] == 0xff {
            i += 1; // fill bytes before a marker
        }
        let Some(&marker) = b.get(i) else { return cut(place()) };
        i += 1;
        match marker {
            0xd9 => return Ok(()),
            0x00 => return Err(format!("corrupt JPEG: a stuffed 0xff00 at byte {} outside a scan", i - 2)),
            // Standalone markers: TEM, RSTn.
            0x01 | 0xd0..=0xd7 => continue,
            _ => {}
        }
        let name = match marker {
            0xda => format!("start-of-scan {}", scans + 1),
            0xc4 => "DHT (Huffman table)".into(),
            0xdb => "DQT (quantization table)".into(),
            0xc0..=0xcf => format!("SOF{} (frame header)", marker - 0xc0),
            0xe0..=0xef => format!("APP{}", marker - 0xe0),
            _ => format!("0xff{marker:02x}"),
        };
        if i + 2 > b.len() {
            return cut(format!("{}, in the length of the {name} segment", place()));
        }
        let len = u16::from_be_bytes([b[i], b[i + 1]]) as usize;
        if len < 2 {
            return Err(format!("corrupt JPEG: the {name} segment at byte {} has length {len}", i - 2));
        }
        if i + len > b.len() {
            return cut(format!("{}, inside the {name} segment ({} of its {len} bytes present)", place(), b.len() - i));
        }
        i += len;
        if marker == 0xda {
            scans += 1;
            // Entropy-coded data runs to the next marker that is neither a
            // stuffed 0xff00 nor a restart marker.
            let start = i;
            loop {
                let Some(k) = b[i..].iter().position(|&v| v == 0xff) else {
                    return cut(format!("in scan {scans} ({} bytes of entropy-coded data)", b.len() - start));
                };
                i += k;
                match b.get(i + 1) {
                    None => return cut(format!("in scan {scans} ({} bytes of entropy-coded data)", b.len() - start)),
                    Some(0x00 | 0xd0..=0xd7) => i += 2,
                    Some(0xff) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

/// Walks a PNG's chunks after the signature up to `IEND`, each complete.
fn png_complete(b: &[u8]) -> Result<(), String> {
    let cut = |place: String| Err(truncated("PNG", b.len(), place, "IEND chunk"));
    let mut i = PNG_SIGNATURE.len();
    let mut last = "the signature".to_string();
    loop {
        if i + 8 > b.len() {
            return cut(format!("after {last}"));
        }
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let kind = String::from_utf8_lossy(&b[i + 4..i + 8]).to_string();
        let end = (i + 12).saturating_add(len);
        if end > b.len() {
            return cut(format!("inside the {kind} chunk ({} of its {} bytes present)", b.len() - i, len + 12));
        }
        if kind == "IEND" {
            return Ok(());
        }
        last = format!("the {kind} chunk");
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64x48 RGB image with structure in both directions (so every MCU of
    /// the JPEG carries data), encoded at quality 90.
    fn jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 256) as u8]));
        let mut out = vec![];
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
        out
    }

    fn png() -> Vec<u8> {
        let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x + y) * 3) as u8]));
        let mut out = std::io::Cursor::new(vec![]);
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// Byte offset of the first start-of-scan marker's segment data end (the first entropy-coded byte).
    fn scan_start(b: &[u8]) -> usize {
        let sos = b.windows(2).position(|w| w == [0xff, 0xda]).unwrap();
        sos + 2 + u16::from_be_bytes([b[sos + 2], b[sos + 3]]) as usize
    }

    #[test]
    fn intact_files_decode_like_image() {
        for (what, bytes) in [("jpeg", jpeg()), ("png", png())] {
            let ours = decode(&bytes).unwrap();
            let theirs = image::load_from_memory(&bytes).unwrap();
            assert_eq!(ours.color(), theirs.color(), "{what}");
            assert_eq!(ours.to_rgb8(), theirs.to_rgb8(), "{what}");
        }
        // Real photos (the runtime's fixtures) and their lossless PNG copies.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/fixtures");
        for name in ["raccoon-39.jpg", "raccoon-150.jpg", "raccoon-151.jpg", "raccoon-151.rgb.png"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert_eq!(decode(&bytes).unwrap().to_rgb8(), image::load_from_memory(&bytes).unwrap().to_rgb8(), "{name}");
        }
        // A gray JPEG stays one channel.
        let gray = image::GrayImage::from_fn(24, 16, |x, y| image::Luma([(x * 10 + y) as u8]));
        let mut g = vec![];
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut g, 85).encode_image(&gray).unwrap();
        let ours = decode(&g).unwrap();
        assert_eq!(ours.color(), image::ColorType::L8);
        assert_eq!(ours.to_rgb8(), image::load_from_memory(&g).unwrap().to_rgb8());
    }

    #[test]
    fn bytes_after_the_end_are_allowed() {
        for mut bytes in [jpeg(), png()] {
            let want = decode(&bytes).unwrap().to_rgb8();
            bytes.extend_from_slice(b"trailing garbage");
            assert_eq!(decode(&bytes).unwrap().to_rgb8(), want);
        }
    }

    /// Each cut is refused with where the file ends; the lenient decoder
    /// (`image`) accepts the scan cuts, which is why this module exists.
    #[test]
    fn truncated_jpegs_are_refused_with_where_they_end() {
        let b = jpeg();
        let s = scan_start(&b);
        let cases = [
            ("in the headers", 300.min(s - 10), "in the headers"),
            ("inside the scan header", s - 2, "inside the start-of-scan 1 segment"),
            ("at the first scan byte", s, "in scan 1 (0 bytes"),
            ("in the first scan", s + 20, "in scan 1 (20 bytes"),
            ("mid-scan", (s + b.len()) / 2, "in scan 1"),
            ("without only the end marker", b.len() - 2, "in scan 1"),
        ];
        for (what, at, want) in cases {
            let e = decode(&b[..at]).unwrap_err();
            assert!(e.starts_with(&format!("truncated JPEG: the file ends after {at} bytes")) && e.contains(want), "{what}: {e}");
        }
        assert!(image::load_from_memory(&b[..(s + b.len()) / 2]).is_ok(), "image now refuses a mid-scan cut itself; this module may be simpler");
    }

    #[test]
    fn corrupt_jpeg_scan_data_is_refused() {
        // Invalid Huffman codes: all-ones bytes (0xff stuffed as 0xff00) throughout the scan.
        let mut b = jpeg();
        let s = scan_start(&b);
        let mut corrupt: Vec<u8> = b[..s].to_vec();
        corrupt.extend(std::iter::repeat_n([0xff, 0x00], (b.len() - s) / 2).flatten());
        corrupt.extend_from_slice(&[0xff, 0xd9]);
        let e = decode(&corrupt).unwrap_err();
        assert!(e.starts_with("JPEG: "), "{e}");
        // A marker segment with an impossible length.
        b[2..6].copy_from_slice(&[0xff, 0xe0, 0x00, 0x01]);
        assert!(decode(&b).unwrap_err().contains("has length 1"));
    }

    #[test]
    fn truncated_and_corrupt_pngs_are_refused() {
        let b = png();
        let idat = b.windows(4).position(|w| w == b"IDAT").unwrap() - 4;
        let iend = b.windows(4).position(|w| w == b"IEND").unwrap() - 4;
        for (what, at, want) in [
            ("after the signature", 8, "after the signature"),
            ("in the IHDR", 20, "inside the IHDR chunk"),
            ("in the IDAT", idat + 30, "inside the IDAT chunk"),
            ("without IEND", iend, "after the IDAT chunk"),
        ] {
            let e = decode(&b[..at]).unwrap_err();
            assert!(e.starts_with(&format!("truncated PNG: the file ends after {at} bytes")) && e.contains(want), "{what}: {e}");
        }
        let mut flipped = b.clone();
        flipped[idat + 20] ^= 0x55;
        let e = decode(&flipped).unwrap_err();
        assert!(e.starts_with("PNG: "), "{e}");
    }

    #[test]
    fn other_bytes_are_neither_jpeg_nor_png() {
        assert_eq!(decode(b"GIF89a").unwrap_err(), "neither JPEG nor PNG (6 bytes, starting 47 49 46 38)");
    }
}
