//! pretext trainer
pub fn smoke() -> f64 { tch::Tensor::from_slice(&[1f32, 2., 3.]).sum(tch::Kind::Float).double_value(&[]) }
#[cfg(test)]
mod tests { #[test] fn libtorch_links() { assert_eq!(super::smoke(), 6.0); } }
