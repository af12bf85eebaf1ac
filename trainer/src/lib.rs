//! pretext trainer: self-supervised pretraining on libtorch (tch).

pub mod backend;

pub use backend::{Params, TchOps, WeightsError};
