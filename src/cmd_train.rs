//! `pretext train` (placeholder until implemented).
use clap::Args;

#[derive(Args)]
pub struct TrainArgs {}

pub fn run(_a: TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("`pretext train` is not implemented yet")
}
