//! Fine-tuning evaluation: the whole backbone plus a linear classifier
//! trained with labels (crop + flip augmentation, SGD, cosine schedule),
//! then top-1 on the test split with the shared eval preprocessing.

use pretext_data::augment::{Pipeline, ViewSpec};
use pretext_models::{Backbone, Init, ParamKind, ParamSpec};
use tch::{Device, Kind, Tensor};

use crate::backend::{Params, TchOps};
use crate::eval::ImageSet;
use crate::optim::{Optimizer, OptimizerKind, Slot};

pub struct FinetuneOpts {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub device: Device,
}

/// Fine-tunes `params` (modified in place) and returns test top-1 in %.
#[allow(clippy::too_many_arguments)]
pub fn finetune(backbone: &Backbone, params: &Params, train: ImageSet, train_labels: &[u32], test: ImageSet, test_labels: &[u32], size: usize, o: &FinetuneOpts) -> Result<f64, pretext_data::preprocess::PreprocessError> {
    let classes = train_labels.iter().chain(test_labels).copied().max().unwrap_or(0) as i64 + 1;
    let d = backbone.embed_dim();
    tch::manual_seed(o.seed as i64);
    let head = Params::new(
        vec![
            ParamSpec::new("fc.weight", &[classes, d], Init::UniformFanIn { fan_in: d }, ParamKind::Weight),
            ParamSpec::new("fc.bias", &[classes], Init::UniformFanIn { fan_in: d }, ParamKind::NoDecay),
        ],
        o.device,
    );
    let mut slots: Vec<Slot> = params.trainable().into_iter().map(|(s, t)| Slot::new(s.name.clone(), t.shallow_clone(), s.kind)).collect();
    slots.extend(head.trainable().into_iter().map(|(s, t)| Slot::new(s.name.clone(), t.shallow_clone(), s.kind)));
    let mut opt = Optimizer::new(OptimizerKind::Sgd, slots);
    let view = ViewSpec::crop_flip(size, (0.2, 1.0));
    let pipe = Pipeline { views: vec![view] };
    let spe = (train.n / o.batch_size) as u64;
    let total = spe * o.epochs as u64;
    let ytr = Tensor::from_slice(&train_labels.iter().map(|&v| v as i64).collect::<Vec<_>>());
    let mut step = 0;
    for epoch in 0..o.epochs as u64 {
        let perm: Vec<i64> = Vec::try_from(Tensor::randperm(train.n as i64, (Kind::Int64, Device::Cpu))).expect("perm");
        for b in 0..spe as usize {
            let idx: Vec<u64> = perm[b * o.batch_size..(b + 1) * o.batch_size].iter().map(|&i| i as u64).collect();
            let imgs: Vec<&[u8]> = idx.iter().map(|&i| train.image(i as usize)).collect();
            let v = pipe.batch(&imgs, train.h, train.w, o.seed, epoch, &idx).expect("sizes checked");
            let x = Tensor::from_slice(&v[0]).reshape([o.batch_size as i64, 3, size as i64, size as i64]).to_device(o.device);
            let x = crate::eval::backbone_input(backbone, x, pipe.views[0].mean, pipe.views[0].std);
            let y = ytr.index_select(0, &Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>())).to_device(o.device);
            let f = backbone.forward_features(&mut TchOps::new(params, true), &x);
            let logits = f.linear(head.get("fc.weight").expect("fc"), head.get("fc.bias"));
            let loss = logits.cross_entropy_for_logits(&y);
            opt.zero_grad();
            loss.backward();
            opt.step(crate::schedule::warmup_cosine(step, total, 0, o.lr, 0.0), o.weight_decay);
            step += 1;
        }
    }
    let t = crate::train::eval_transform(size as i64);
    let f = crate::eval::features(backbone, params, test, &t, 512, o.device)?;
    let logits = tch::no_grad(|| f.to_device(o.device).linear(head.get("fc.weight").expect("fc"), head.get("fc.bias")));
    let yte = Tensor::from_slice(&test_labels.iter().map(|&v| v as i64).collect::<Vec<_>>());
    let pred = logits.argmax(1, false).to_device(Device::Cpu);
    Ok(100.0 * pred.eq_tensor(&yte).sum(Kind::Int64).double_value(&[]) / test.n as f64)
}
