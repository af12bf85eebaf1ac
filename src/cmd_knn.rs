//! `pretext knn` (placeholder until implemented).
use clap::Args;

#[derive(Args)]
pub struct KnnArgs {}

pub fn run(_a: KnnArgs) -> anyhow::Result<()> {
    anyhow::bail!("`pretext knn` is not implemented yet")
}
