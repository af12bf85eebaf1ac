//! `pretext colorize <run> <images...> --out DIR`: a PNG strip per image
//! (gray input | colourised | original) from a colorization run; the logic is
//! `pretext_trainer::colorize`.
use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct ColorizeArgs {
    /// A colorization run directory (or its checkpoint.safetensors).
    run: PathBuf,
    /// JPEG/PNG images, resized to the backbone's input size.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Folder for the strips `<image stem>.png`.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: ColorizeArgs) -> anyhow::Result<()> {
    let written = pretext_trainer::colorize::colorize_files(&a.run, &a.images, &a.out)?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    Ok(())
}
