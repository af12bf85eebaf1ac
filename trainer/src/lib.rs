//! pretext trainer: self-supervised pretraining on libtorch (tch).

pub mod backend;
pub mod checkpoint;
pub mod eval;
pub mod finetune;
pub mod loss;
pub mod methods;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod train;

pub use backend::{Params, TchOps, WeightsError};
