//! `pretext extract` (placeholder until implemented).
use clap::Args;

#[derive(Args)]
pub struct ExtractArgs {}

pub fn run(_a: ExtractArgs) -> anyhow::Result<()> {
    anyhow::bail!("`pretext extract` is not implemented yet")
}
