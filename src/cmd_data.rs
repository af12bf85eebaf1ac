//! `pretext data inspect <path>`: splits, classes, counts, sizes, boxes,
//! skips, unreadable image files and duplicates of a dataset, and a
//! contact-sheet PNG.
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pretext_data::inspect::{contact_sheet, Summary};
use pretext_data::{CacheStatus, Dataset, OnBadImage, OpenOptions};

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    cmd: DataCmd,
}

#[derive(Subcommand)]
enum DataCmd {
    /// Print a dataset's splits, classes, counts, image sizes, boxes, skips,
    /// unreadable (truncated or corrupt) image files and duplicates, and write
    /// a contact sheet of samples per class. Exits with an error after the
    /// report when any image file does not decode.
    Inspect(InspectArgs),
}

#[derive(Args)]
struct InspectArgs {
    /// A dataset directory, tarball (.tar.gz/.tgz/.tar) or file (IDX, CIFAR .bin).
    path: PathBuf,
    /// Folder for the contact sheet `inspect-<name>.png` (default: current folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Samples per class on the contact sheet.
    #[arg(long, default_value_t = 8)]
    per_class: usize,
    /// Decode from the source, neither reading nor writing the cache.
    #[arg(long)]
    no_cache: bool,
}

pub fn run(a: DataArgs) -> anyhow::Result<()> {
    match a.cmd {
        DataCmd::Inspect(a) => inspect(a),
    }
}

fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")?.progress_chars("=> "));
    let b = bar.clone();
    let opts = OpenOptions {
        no_cache: a.no_cache,
        // Every unreadable file is listed in the report, not only the first.
        on_bad_image: OnBadImage::Skip,
        progress: Some(Arc::new(move |stage: &str, done, total| {
            b.set_length(total);
            b.set_message(stage.to_string());
            b.set_position(done);
        })),
        ..Default::default()
    };
    let t = Instant::now();
    let (d, status) = Dataset::open_with_report(&a.path, &opts).with_context(|| format!("opening {}", a.path.display()))?;
    bar.finish_and_clear();
    let took = t.elapsed().as_secs_f64();
    // Written, not printed: a closed pipe (`| head`) ends the report quietly.
    let mut out = std::io::stdout().lock();
    let head = match status {
        CacheStatus::Hit(f) => writeln!(out, "loaded from cache {} in {took:.2} s", f.display()),
        CacheStatus::Written(f) => writeln!(out, "decoded in {took:.2} s, cached to {}", f.display()),
        CacheStatus::Rebuilt(f, why) => writeln!(out, "cache {} was corrupt ({why}); decoded again in {took:.2} s", f.display()),
        CacheStatus::Off => writeln!(out, "decoded in {took:.2} s (no cache)"),
        CacheStatus::WriteFailed(f, why) => writeln!(out, "decoded in {took:.2} s; could not write cache {}: {why}", f.display()),
    };
    head.and_then(|_| write!(out, "{}", Summary::of(&d)))
    .or_else(|e| if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) })?;
    drop(out);
    let dir = a.out.unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let png = dir.join(format!("inspect-{}.png", d.name()));
    contact_sheet(&d, a.per_class.max(1)).save(&png).with_context(|| format!("writing {}", png.display()))?;
    eprintln!("contact sheet: {}", png.display());
    let bad = d.unreadable().len();
    anyhow::ensure!(bad == 0, "{}: {bad} image file{} not decode (listed above as unreadable)", a.path.display(), if bad == 1 { " does" } else { "s do" });
    Ok(())
}
