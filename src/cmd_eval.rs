//! `pretext eval` (placeholder until implemented).
use clap::Args;

#[derive(Args)]
pub struct EvalArgs {}

pub fn run(_a: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("`pretext eval` is not implemented yet")
}
