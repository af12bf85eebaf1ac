//! `pretext export` (placeholder until implemented).
use clap::Args;

#[derive(Args)]
pub struct ExportArgs {}

pub fn run(_a: ExportArgs) -> anyhow::Result<()> {
    anyhow::bail!("`pretext export` is not implemented yet")
}
