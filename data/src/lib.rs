//! pretext data: datasets, decoding caches, preprocessing and augmentation.
//! Libtorch-free; shared by the trainer and the runtime.

pub mod preprocess;
