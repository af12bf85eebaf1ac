//! A training run whose output goes to a pipe (as in `pretext train > log
//! 2>&1`) prints plain progress lines with step and loss instead of a bar,
//! and its charts decode as PNGs of a sane size.

use std::path::Path;
use std::process::Command;

fn write_dataset(root: &Path) {
    for (split, n) in [("train", 32), ("test", 16)] {
        for (c, class) in ["a", "b"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n / 2 {
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    let v = if c == 0 { (x * 8 + i) % 256 } else { (y * 8 + i) % 256 };
                    image::Rgb([v as u8, 128, (255 - v) as u8])
                });
                img.save(dir.join(format!("{i:03}.png"))).unwrap();
            }
        }
    }
}

#[test]
fn piped_training_logs_progress_lines_and_draws_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let run = tmp.path().join("run");
    let t0 = std::time::Instant::now();
    // 12 epochs of 4 steps: several seconds, so several 1-second progress lines.
    // (Width 8: at width 4 libtorch's oneDNN 1x1 conv backward crashes on this machine.)
    let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .env("PRETEXT_CACHE", tmp.path().join("cache"))
        .env("PRETEXT_PROGRESS_SECS", "1")
        .args(["train", "--method", "simclr", "--backbone", "resnet18-cifar", "--width", "8", "--epochs", "12", "--batch-size", "8", "--threads", "1", "--knn-every", "4"])
        .arg("--data").arg(&data).arg("--out").arg(&run)
        .output().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{}\n{stderr}", out.status, String::from_utf8_lossy(&out.stdout));
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("[train] ")).collect();
    assert!(!lines.is_empty(), "no progress line in {secs:.1} s:\n{stderr}");
    for l in &lines {
        // `[train] 12/48 (25%) 41.2/s, 0:03 elapsed, ETA 0:02 | loss 4.1203 lr 0.0300 263 img/s`
        let step: u64 = l["[train] ".len()..].split('/').next().unwrap().parse().unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(step <= 48 && l.contains("/48 (") && l.contains("elapsed"), "{l}");
        let loss: f64 = l.split("| loss ").nth(1).and_then(|r| r.split(' ').next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no loss in {l}"));
        assert!(loss.is_finite() && loss > 0.0, "{l}");
    }
    // One line a second at most, plus the final one.
    assert!(lines.len() as f64 <= secs + 2.0, "{} lines in {secs:.1} s", lines.len());
    assert!(lines.last().unwrap().starts_with("[train] 48/48"), "{lines:?}");
    assert!(!stderr.contains('\u{1b}'), "terminal escapes in a piped log:\n{stderr}");

    for (f, min_h) in [("loss.png", 400), ("knn.png", 400)] {
        let img = image::open(run.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")).to_rgb8();
        assert!(img.width() == 720 && (min_h..min_h + 100).contains(&img.height()), "{f}: {}x{}", img.width(), img.height());
        let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
        assert!(dark > 1000, "{f}: {dark} dark pixels (text, axes)");
    }
}
