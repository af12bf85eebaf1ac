//! `pretext bench` (placeholder until implemented).
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {}

pub fn run(_a: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("`pretext bench` is not implemented yet")
}
