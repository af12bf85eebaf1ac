//! The tch reference of an exported graph: the eval-mode forward of the same
//! checkpoint through the same model code, output by output in the
//! exporter's order (features, then each head). `pretext export --verify`
//! and the parity tests compare tract and ONNX Runtime against it
//! (`pretext_runtime::verify`).
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use pretext_exporter::{Checkpoint, ExportError, ExportOptions, Head, Resolved};
use pretext_models::{Backbone, BackboneConfig, HeadSpec};
use tch::Tensor;

use crate::{Params, TchOps, TensorFileError};

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Weights(#[from] TensorFileError),
    #[error("output {output}: {reason}")]
    Output { output: String, reason: String },
}

/// A fixed MAE mask for a batch, the graph inputs `ids_keep` (B, K) and
/// `ids_restore` (B, N) of an exported MAE decoder.
#[derive(Debug, Clone)]
pub struct Mask {
    pub keep: ArrayD<i64>,
    pub restore: ArrayD<i64>,
}

/// A seeded random shuffle per image, as MAE's `random_masking` draws one:
/// the first `keep` patches of the shuffle are visible, `restore` inverts it.
pub fn fixed_mask(batch: usize, n: usize, keep: usize, seed: u64) -> Mask {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut k, mut r) = (ArrayD::<i64>::zeros(IxDyn(&[batch, keep])), ArrayD::<i64>::zeros(IxDyn(&[batch, n])));
    for b in 0..batch {
        let mut shuffle: Vec<usize> = (0..n).collect();
        shuffle.shuffle(&mut rng);
        for (i, &p) in shuffle.iter().enumerate() {
            if i < keep {
                k[[b, i]] = p as i64;
            }
            r[[b, p]] = i as i64;
        }
    }
    Mask { keep: k, restore: r }
}

/// The mask fed when the export has an MAE decoder head, else `None`.
pub fn mask_for(resolved: &Resolved, batch: usize) -> Option<Mask> {
    resolved.heads.iter().find_map(|(_, h)| match h {
        Head::Spec(HeadSpec::MaeDecoder(d)) => Some(fixed_mask(batch, d.num_patches() as usize, d.visible() as usize, 97)),
        _ => None,
    })
}

fn tensor<T: tch::kind::Element + Clone>(a: &ArrayD<T>) -> Tensor {
    let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    let v: Vec<T> = a.iter().cloned().collect();
    Tensor::from_slice(&v).reshape(&shape)
}

fn array(output: &str, t: &Tensor) -> Result<ArrayD<f32>, ReferenceError> {
    let bad = |reason: String| ReferenceError::Output { output: output.into(), reason };
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let v = Vec::<f32>::try_from(t.to_kind(tch::Kind::Float).contiguous().flatten(0, -1)).map_err(|e| bad(e.to_string()))?;
    ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| bad(e.to_string()))
}

/// The tch forward (eval mode) of what the exporter exports from
/// `ckpt_path` with `opts`: features, then each head's output, in the
/// exporter's output order. An MAE decoder head runs on the mask of [`mask_for`].
///
/// # Shapes
/// x: (batch, 3, size, size) -> one array per output, batch first
pub fn tch_forward(ckpt_path: &Path, config: &BackboneConfig, opts: &ExportOptions, x: &ArrayD<f32>) -> Result<Vec<(String, ArrayD<f32>)>, ReferenceError> {
    let resolved = pretext_exporter::resolve(config, &Checkpoint::load(ckpt_path)?, opts)?;
    let mask = mask_for(&resolved, x.shape()[0]);
    let Resolved { backbone, heads, prefix, .. } = resolved;
    let mut specs = backbone.params();
    specs.extend(heads.iter().flat_map(|(_, h)| h.params()));
    let p = Params::new(specs, tch::Device::Cpu);
    p.load_safetensors(ckpt_path, &prefix, false)?;
    let xt = tensor(x);
    tch::no_grad(|| {
        let mut o = TchOps::new(&p, false);
        let f = backbone.forward_features(&mut o, &xt);
        let mut outs = vec![(pretext_exporter::FEATURES_OUTPUT.to_string(), array(pretext_exporter::FEATURES_OUTPUT, &f)?)];
        for (name, h) in &heads {
            let y = match (h, &backbone, &mask) {
                (Head::Classifier(l), _, _) => l.forward(&mut o, &f),
                (Head::Spec(HeadSpec::Mlp(m)), _, _) => m.forward(&mut o, &f),
                (Head::Spec(HeadSpec::MaeDecoder(d)), Backbone::Vit(v), Some(m)) => d.forward(&mut o, v, &xt, &tensor(&m.keep), &tensor(&m.restore)),
                (Head::Spec(HeadSpec::MaeDecoder(_)), ..) => return Err(ReferenceError::Output { output: name.clone(), reason: "an MAE decoder needs a ViT backbone".into() }),
            };
            outs.push((name.clone(), array(name, &y)?));
        }
        Ok(outs)
    })
}

#[cfg(test)]
mod tests {
    /// Every row of `keep` is distinct patches, and `restore` inverts the shuffle:
    /// patch `keep[b, i]` sits at position `i`.
    #[test]
    fn fixed_mask_restore_inverts_keep() {
        let m = super::fixed_mask(3, 16, 4, 7);
        assert_eq!((m.keep.shape(), m.restore.shape()), (&[3, 4][..], &[3, 16][..]));
        for b in 0..3 {
            let mut seen: Vec<i64> = (0..16).map(|p| m.restore[[b, p]]).collect();
            seen.sort();
            assert_eq!(seen, (0..16).collect::<Vec<_>>());
            for i in 0..4 {
                assert_eq!(m.restore[[b, m.keep[[b, i]] as usize]], i as i64);
            }
        }
    }
}
