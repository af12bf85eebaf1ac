//! `pretext data` (placeholder until implemented).
use clap::Args;

#[derive(Args)]
pub struct DataArgs {}

pub fn run(_a: DataArgs) -> anyhow::Result<()> {
    anyhow::bail!("`pretext data` is not implemented yet")
}
