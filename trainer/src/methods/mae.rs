//! MAE (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners"):
//! mask 75% of the patches at random, encode only the visible ones with the
//! ViT, reconstruct the normalized pixels of the masked ones with a light
//! decoder; the loss counts masked patches only.

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, MaeDecoder, Vit};
use tch::{Device, Kind, Tensor};

use super::{check_views, ConfigError, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "mae", aliases: [],
    summary: "MAE: mask most patches, encode the visible ones, reconstruct the masked pixels with a light decoder (He et al. 2021; ViT only)",
    reference: "MAE repo `models_mae.py` (masking by noise argsort, normalised pixels); no EMA",
    optimizer: OptimizerDefaults::ADAMW,
    config(d) {
        /// Fraction of patches masked (at least one patch stays visible).
        mask_ratio: f64 = 0.75, Range::half_open(0.0, 1.0);
        /// Decoder width.
        decoder_dim: i64 = 128, Range::at_least(1.0);
        /// Decoder blocks.
        decoder_depth: usize = 2, Range::at_least(1.0);
        /// Decoder attention heads (must divide decoder_dim).
        decoder_heads: i64 = 4, Range::at_least(1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        Pipeline::mae(res, size)
    }
    fn check(&self, backbone: &Backbone) -> Result<(), ConfigError> {
        if self.decoder_dim % self.decoder_heads != 0 {
            return Err(ConfigError::new("method.decoder_heads", self.decoder_heads, format!("a divisor of method.decoder_dim = {}", self.decoder_dim)));
        }
        let Backbone::Vit(v) = backbone else {
            let kind = if matches!(backbone, Backbone::Resnet(_)) { "a ResNet" } else { "a MobileNetV2" };
            return Err(ConfigError::new("backbone", kind, "a ViT for mae (vit-tiny-cifar, vit-small, ...): MAE masks patches"));
        };
        let n = v.config.grid() * v.config.grid();
        if kept_patches(n, self.mask_ratio) < 1 {
            return Err(ConfigError::new("method.mask_ratio", self.mask_ratio, format!("a ratio that keeps at least one of the {n} patches visible (below {})", 1.0 - 0.5 / n as f64)));
        }
        Ok(())
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Mae::new(self, backbone, device)?))
    }
}

/// Visible patches out of `n` at `ratio` (MAE's `int(L * (1 - mask_ratio))`, rounded here).
fn kept_patches(n: i64, ratio: f64) -> i64 {
    ((n as f64) * (1.0 - ratio)).round() as i64
}

pub struct Mae {
    /// Fixed masking noise for the next step (step-equivalence tests); consumed by `loss`.
    pub next_noise: Option<Tensor>,
    backbone: Backbone,
    vit: Vit,
    /// The decoder, its tensors under `decoder.` in the one student store.
    decoder: MaeDecoder,
    params: Params,
    mask_ratio: f64,
}

/// Random masking by argsort of uniform noise (MAE's `random_masking`).
/// Returns `(ids_keep (B, keep), ids_restore (B, N), mask (B, N) with 1 = masked)`.
pub fn random_masking(b: i64, n: i64, ratio: f64, device: Device) -> (Tensor, Tensor, Tensor) {
    masking_from_noise(&Tensor::rand([b, n], (Kind::Float, device)), ratio)
}

/// The masking of [`random_masking`] for given noise (B, N): the lowest-noise patches are kept.
pub fn masking_from_noise(noise: &Tensor, ratio: f64) -> (Tensor, Tensor, Tensor) {
    let (b, n) = noise.size2().expect("noise is (B, N)");
    let device = noise.device();
    let keep = kept_patches(n, ratio);
    let ids_shuffle = noise.argsort(1, false);
    let ids_restore = ids_shuffle.argsort(1, false);
    let ids_keep = ids_shuffle.narrow(1, 0, keep);
    let mask = Tensor::cat(&[Tensor::zeros([b, keep], (Kind::Float, device)), Tensor::ones([b, n - keep], (Kind::Float, device))], 1);
    let mask = mask.gather(1, &ids_restore, false);
    (ids_keep, ids_restore, mask)
}

/// (B, 3, H, W) -> (B, N, p*p*3), MAE's `patchify`.
pub fn patchify(x: &Tensor, p: i64) -> Tensor {
    let s = x.size();
    let (b, h, w) = (s[0], s[2] / p, s[3] / p);
    x.reshape([b, 3, h, p, w, p]).permute([0, 2, 4, 3, 5, 1]).reshape([b, h * w, p * p * 3])
}

impl Mae {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Result<Self, MethodError> {
        let vit = match &backbone {
            Backbone::Vit(v) => v.clone(),
            _ => return Err(MethodError::Backbone { method: "mae".into(), need: "ViT" }),
        };
        let decoder = MaeDecoder::new("decoder", &vit.config, c.decoder_dim, c.decoder_depth, c.decoder_heads, c.mask_ratio);
        let mut specs = backbone.params();
        specs.extend(decoder.params());
        let params = Params::new(specs, device);
        Ok(Self { next_noise: None, backbone, vit, decoder, params, mask_ratio: c.mask_ratio })
    }

    /// Loss and mask for one batch of images, with fresh random masks.
    pub fn forward_loss(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.forward_loss_with(x, None)
    }

    /// Loss and mask; `noise` (B, N) fixes the masking (the lowest values are kept).
    pub fn forward_loss_with(&self, x: &Tensor, noise: Option<&Tensor>) -> (Tensor, Tensor) {
        let (b, n) = (x.size()[0], self.decoder.num_patches());
        let (ids_keep, ids_restore, mask) = match noise {
            Some(z) => masking_from_noise(z, self.mask_ratio),
            None => random_masking(b, n, self.mask_ratio, x.device()),
        };
        let pred = self.decoder.forward(&mut TchOps::new(&self.params, true), &self.vit, x, &ids_keep, &ids_restore);
        let target = patchify(x, self.vit.config.patch_size);
        (loss::mae(&pred, &target, &mask, true), mask)
    }
}

impl Method for Mae {
    fn name(&self) -> &'static str {
        "mae"
    }
    fn backbone(&self) -> &Backbone {
        &self.backbone
    }
    fn students(&self) -> Vec<(&'static str, &Params)> {
        vec![("", &self.params)]
    }
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("decoder".into(), HeadSpec::MaeDecoder(self.decoder.clone()))]
    }
    fn set_mask_noise(&mut self, noise: Tensor) {
        self.next_noise = Some(noise);
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("mae", views, 1)?;
        let noise = self.next_noise.take();
        Ok(self.forward_loss_with(&views[0], noise.as_ref()).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_models::VitConfig;

    #[test]
    fn masking_keeps_exactly_the_ratio_and_restores_order() {
        tch::manual_seed(3);
        let (keep, restore, mask) = random_masking(5, 64, 0.75, Device::Cpu);
        assert_eq!(keep.size(), vec![5, 16]);
        let masked = mask.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        assert_eq!(Vec::<f32>::try_from(&masked).unwrap(), vec![48.0; 5]);
        // Kept ids are exactly the unmasked positions.
        for r in 0..5 {
            let m = mask.get(r);
            let k = keep.get(r);
            assert_eq!(m.index_select(0, &k).sum(Kind::Float).double_value(&[]), 0.0);
        }
        // ids_restore inverts the shuffle: a permutation of 0..N.
        let sorted = restore.sort(1, false).0;
        assert!(sorted.eq_tensor(&Tensor::arange(64, (Kind::Int64, Device::Cpu)).expand([5, 64], false)).all().int64_value(&[]) == 1);
    }

    #[test]
    fn mae_forward_masks_the_ratio_and_backpropagates() {
        tch::manual_seed(0);
        let cfg = VitConfig::vit_tiny_patch16_224().with_patch_and_size(4, 16).with_depth(1);
        let mut c = Config::defaults(192);
        c.decoder_depth = 1;
        c.decoder_dim = 32;
        c.decoder_heads = 2;
        let m = Mae::new(&c, Backbone::Vit(Vit::new(cfg)), Device::Cpu).unwrap();
        let x = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (l, mask) = m.forward_loss(&x);
        // 16 patches per image, 75% masked.
        assert_eq!(mask.sum(Kind::Float).double_value(&[]), 2.0 * 12.0);
        l.backward();
        assert!(x.grad().isfinite().all().int64_value(&[]) == 1);
        // A ResNet is refused with a clear error.
        let r = Backbone::new(&pretext_models::BackboneConfig::from_name("resnet18-cifar").unwrap());
        assert!(Mae::new(&c, r, Device::Cpu).err().unwrap().to_string().contains("needs a ViT backbone"));
    }
}
