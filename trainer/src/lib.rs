//! pretext trainer: self-supervised pretraining on libtorch (tch).
//!
//! - [`methods`]: SimCLR, MoCo v2, BYOL, SimSiam, DINO, MAE, Barlow Twins, VICReg behind one
//!   [`methods::Method`] trait and registry ([`methods::build`]);
//! - [`loss`]: the losses as pure functions; [`schedule`]: lr / weight decay /
//!   EMA tau / teacher temperature as pure functions of the step;
//! - [`optim`]: SGD, LARS, AdamW with no decay on norms, biases and tokens;
//! - [`train`]: the loop (seeded per-sample augmentation from
//!   `pretext_data::augment`, atomic checkpoints, exact `--resume`, metrics,
//!   plots); [`eval`] and [`finetune`]: k-NN, linear probe, fine-tuning;
//! - [`reference`]: the tch forward of an exported graph, what `--verify` compares against.
//!
//! # GPU build
//! The default setup links the CPU libtorch (`LIBTORCH` in `.cargo/config.toml`).
//! For `--device cuda`, point the build at a CUDA libtorch of the same version,
//! e.g. the one inside a CUDA PyTorch 2.11 wheel:
//! `LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 cargo build` with that
//! Python first on `PATH` (or `LIBTORCH=<site-packages>/torch`), and its
//! `torch/lib` on the rpath / `LD_LIBRARY_PATH`. `pretext train --device cuda`
//! then runs every tensor on GPU 0; augmentation stays on the CPU threads.
//! Without a CUDA libtorch it fails with a clear error instead of falling back.

pub mod backend;
pub mod checkpoint;
pub mod color;
pub mod colorize;
pub mod device;
pub mod eval;
pub mod finetune;
pub mod loss;
pub mod methods;
pub mod optim;
pub mod plot;
pub mod reference;
pub mod schedule;
pub mod train;

pub use backend::{Params, TchOps, TensorFileError};
