//! Optimizers on tch tensors: SGD with momentum, LARS and AdamW, with two
//! parameter groups: weights (decayed) and norms/biases/tokens
//! (`ParamKind::NoDecay`: neither decayed nor LARS-adapted).
//!
//! State lives in named tensors (`momentum.<param>`, `exp_avg.<param>`, ...)
//! so it can be checkpointed next to the weights.

use std::collections::BTreeMap;

use pretext_models::ParamKind;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Lars,
    Adamw,
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sgd" => Ok(Self::Sgd),
            "lars" => Ok(Self::Lars),
            "adamw" => Ok(Self::Adamw),
            _ => Err(format!("unknown optimizer '{s}': expected sgd, lars or adamw")),
        }
    }
}

/// One trainable tensor the optimizer updates.
pub struct Slot {
    pub name: String,
    pub param: Tensor,
    pub decay: bool,
    /// Skipped by [`Optimizer::step`] (no update, no decay, no state change),
    /// like a PyTorch parameter whose `.grad` is `None`. Set per step by [`Optimizer::freeze`].
    pub frozen: bool,
}

impl Slot {
    pub fn new(name: String, param: Tensor, kind: ParamKind) -> Self {
        Self { name, param, decay: kind == ParamKind::Weight, frozen: false }
    }
}

pub struct Optimizer {
    pub kind: OptimizerKind,
    pub momentum: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// LARS trust coefficient.
    pub eta: f64,
    pub slots: Vec<Slot>,
    pub state: BTreeMap<String, Tensor>,
    pub steps: i64,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, slots: Vec<Slot>) -> Self {
        Self { kind, momentum: 0.9, betas: (0.9, 0.999), eps: 1e-8, eta: 0.02, slots, state: BTreeMap::new(), steps: 0 }
    }

    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            let mut g = s.param.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Freezes exactly the slots named in `names` for the following steps.
    pub fn freeze(&mut self, names: &[String]) {
        for s in &mut self.slots {
            s.frozen = names.contains(&s.name);
        }
    }

    /// Global L2 norm of all gradients.
    pub fn grad_norm(&self) -> f64 {
        let mut sq = 0.0;
        for s in &self.slots {
            let g = s.param.grad();
            if g.defined() {
                sq += g.square().sum(Kind::Double).double_value(&[]);
            }
        }
        sq.sqrt()
    }

    /// Scales gradients so their global norm is at most `max_norm` (`clip_grad_norm_`). Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let n = self.grad_norm();
        if max_norm > 0.0 && n > max_norm {
            let c = max_norm / (n + 1e-6);
            for s in &mut self.slots {
                let mut g = s.param.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(c);
                }
            }
        }
        n
    }

    fn buf(&mut self, key: String, like: &Tensor) -> Tensor {
        let t = self.state.entry(key).or_insert_with(|| like.zeros_like());
        // State restored from a checkpoint is NCHW-contiguous while conv weights may be
        // channels-last (`Params::use_channels_last`): take the parameter's layout once,
        // so every later update runs on matching strides (vectorized, no gather).
        if t.stride() != like.stride() && t.size() == like.size() {
            let mut relaid = like.empty_like();
            relaid.copy_(t);
            *t = relaid;
        }
        t.shallow_clone()
    }

    /// One update with the given learning rate and weight decay.
    pub fn step(&mut self, lr: f64, wd: f64) {
        self.steps += 1;
        let t = self.steps;
        tch::no_grad(|| {
            for i in 0..self.slots.len() {
                let (name, mut p, decay) = {
                    let s = &self.slots[i];
                    if s.frozen {
                        continue;
                    }
                    (s.name.clone(), s.param.shallow_clone(), s.decay)
                };
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                match self.kind {
                    OptimizerKind::Sgd | OptimizerKind::Lars => {
                        // d = g + wd w (PyTorch's `d_p.add(p, alpha=wd)`) in one kernel;
                        // `addcmul` with a 0-d factor is libtorch's stand-in for `alpha`,
                        // which tch does not expose.
                        let mut d = if decay && wd != 0.0 { g.addcmul(&p, &scalar(wd, &p)) } else { g.shallow_clone() };
                        if self.kind == OptimizerKind::Lars && decay {
                            // You et al. 2017: local lr eta * ||w|| / ||g + wd w||.
                            let pn = p.norm().double_value(&[]);
                            let dn = d.norm().double_value(&[]);
                            if pn > 0.0 && dn > 0.0 {
                                d *= self.eta * pn / dn;
                            }
                        }
                        let mut m = self.buf(format!("momentum.{name}"), &p);
                        if t == 1 && self.momentum > 0.0 {
                            m.copy_(&d);
                        } else {
                            let _ = m.g_mul_scalar_(self.momentum);
                            let _ = m.g_add_(&d);
                        }
                        // w -= lr buf in place (PyTorch's `p.add_(buf, alpha=-lr)`), no temporary.
                        let _ = p.addcmul_(&m, &scalar(-lr, &p));
                    }
                    OptimizerKind::Adamw => {
                        if decay && wd != 0.0 {
                            let _ = p.g_mul_scalar_(1.0 - lr * wd);
                        }
                        let (b1, b2) = self.betas;
                        let mut m = self.buf(format!("exp_avg.{name}"), &p);
                        let mut v = self.buf(format!("exp_avg_sq.{name}"), &p);
                        let _ = m.g_mul_scalar_(b1);
                        let _ = m.g_add_(&(&g * (1.0 - b1)));
                        let _ = v.g_mul_scalar_(b2);
                        let _ = v.g_add_(&(g.square() * (1.0 - b2)));
                        // Steps this tensor was updated (PyTorch's per-parameter `state['step']`):
                        // differs from the global count when the slot was frozen.
                        let mut n = self.state.entry(format!("step.{name}")).or_insert_with(|| Tensor::zeros([1], (Kind::Float, p.device()))).shallow_clone();
                        let _ = n.g_add_scalar_(1.0);
                        let t = n.double_value(&[0]) as i32;
                        let bc1 = 1.0 - b1.powi(t);
                        let bc2 = 1.0 - b2.powi(t);
                        let denom = (v / bc2).sqrt() + self.eps;
                        let _ = p.g_sub_(&(m / denom * (lr / bc1)));
                    }
                }
            }
        });
    }
}

/// A 0-d tensor of `p`'s dtype and device: the scalar factor of an `addcmul`.
fn scalar(v: f64, p: &Tensor) -> Tensor {
    Tensor::scalar_tensor(v, (p.kind(), p.device()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn quad_step(kind: OptimizerKind, lr: f64, wd: f64, steps: usize) -> Vec<f32> {
        let p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32]).set_requires_grad(true);
        let mut o = Optimizer::new(kind, vec![Slot::new("w".into(), p.shallow_clone(), ParamKind::Weight), Slot::new("b".into(), b.shallow_clone(), ParamKind::NoDecay)]);
        for _ in 0..steps {
            o.zero_grad();
            let loss = p.square().sum(Kind::Float) * 0.5 + b.square().sum(Kind::Float);
            loss.backward();
            o.step(lr, wd);
        }
        let mut v: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        v.extend(Vec::<f32>::try_from(&b.detach()).unwrap());
        v
    }

    /// Against PyTorch's update rules written out by hand.
    #[test]
    fn sgd_and_adamw_follow_pytorch_rules() {
        // SGD momentum 0.9, wd 0.1 on w only: step 1 buf = g + wd w = 1.1 w; w1 = w - 0.1 * 1.1 w = 0.89 w.
        // step 2: g = 0.89 w, d = 1.1 * 0.89 w = 0.979 w, buf = 0.9 * 1.1 w + 0.979 w = 1.969 w; w2 = 0.89 w - 0.1969 w.
        let v = quad_step(OptimizerKind::Sgd, 0.1, 0.1, 2);
        assert!((v[0] - (0.89 - 0.1969)).abs() < 1e-6, "{v:?}");
        // b: no decay: g = 2b; buf1 = 1.0 -> b1 = 0.4; g2 = 0.8, buf2 = 0.9 + 0.8 = 1.7 -> b2 = 0.4 - 0.17.
        assert!((v[3] - 0.23).abs() < 1e-6, "{v:?}");
        // AdamW first step moves every coordinate by lr * sign(g) (bias-corrected), after decoupled decay.
        let v = quad_step(OptimizerKind::Adamw, 0.01, 0.5, 1);
        assert!((v[0] - (1.0 * (1.0 - 0.005) - 0.01)).abs() < 1e-6, "{v:?}");
        assert!((v[1] - (-2.0 * (1.0 - 0.005) + 0.01)).abs() < 1e-6, "{v:?}");
        assert!((v[3] - (0.5 - 0.01)).abs() < 1e-6, "{v:?}");
    }

    /// A frozen slot is left alone (no decay, no state), like a PyTorch
    /// parameter whose grad is None; once unfrozen, AdamW's bias correction
    /// counts that tensor's own steps, so its first update is lr * sign(g).
    #[test]
    fn frozen_slots_are_skipped_and_adamw_counts_steps_per_tensor() {
        let w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32]).set_requires_grad(true);
        let mut o = Optimizer::new(OptimizerKind::Adamw, vec![Slot::new("w".into(), w.shallow_clone(), ParamKind::Weight), Slot::new("b".into(), b.shallow_clone(), ParamKind::Weight)]);
        let step = |o: &mut Optimizer| {
            o.zero_grad();
            (w.square().sum(Kind::Float) + b.square().sum(Kind::Float) * 3.0).backward();
            o.step(0.01, 0.1);
        };
        o.freeze(&["b".to_string()]);
        for _ in 0..3 {
            step(&mut o);
        }
        assert_eq!(Vec::<f32>::try_from(&b.detach()).unwrap(), vec![0.5], "frozen: no update, no decay");
        assert!(!o.state.keys().any(|k| k.ends_with(".b")), "{:?}", o.state.keys().collect::<Vec<_>>());
        o.freeze(&[]);
        step(&mut o);
        let v = Vec::<f32>::try_from(&b.detach()).unwrap()[0];
        assert!((v - (0.5 * (1.0 - 0.001) - 0.01)).abs() < 1e-6, "{v}");
        assert_eq!(o.state["step.w"].double_value(&[0]), 4.0);
    }

    /// Momentum restored in NCHW order for a channels-last weight takes the
    /// weight's strides, and the update is the same as with matching layouts.
    #[test]
    fn restored_state_takes_the_parameter_layout() {
        let run = |channels_last: bool, restored: bool| {
            let w0 = Tensor::arange(24, (Kind::Float, Device::Cpu)).reshape([2, 3, 2, 2]) / 10.0;
            let w = if channels_last { w0.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]) } else { w0 }.set_requires_grad(true);
            let mut o = Optimizer::new(OptimizerKind::Sgd, vec![Slot::new("w".into(), w.shallow_clone(), ParamKind::Weight)]);
            o.steps = 1;
            let m = if restored { Tensor::ones([2, 3, 2, 2], (Kind::Float, Device::Cpu)) } else { w.ones_like() };
            o.state.insert("momentum.w".into(), m);
            (w.square().sum(Kind::Float) * 0.5).backward();
            o.step(0.1, 0.01);
            (o.state["momentum.w"].stride(), w.detach())
        };
        let (stride, a) = run(true, true);
        assert_eq!(stride, vec![12, 1, 6, 3], "momentum follows the weight's NHWC strides");
        let (_, b) = run(false, false);
        assert!(a.equal(&b), "same update whatever the layouts");
    }

    #[test]
    fn lars_scales_by_trust_ratio_and_clipping_bounds_norm() {
        // g = w, wd = 0: trust = eta * |w| / |w| = eta, so w1 = w - lr * eta * w.
        let v = quad_step(OptimizerKind::Lars, 1.0, 0.0, 1);
        assert!((v[0] - (1.0 - 0.02)).abs() < 1e-6, "{v:?}");
        // The bias is not adapted: plain SGD step.
        assert!((v[3] - (0.5 - 1.0)).abs() < 1e-6, "{v:?}");
        let p = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        let mut o = Optimizer::new(OptimizerKind::Sgd, vec![Slot::new("w".into(), p.shallow_clone(), ParamKind::Weight)]);
        (p.square().sum(Kind::Float) * 0.5).backward();
        let before = o.clip_grad_norm(1.0);
        assert!((before - 5.0).abs() < 1e-6);
        assert!((o.grad_norm() - 1.0).abs() < 1e-5);
        let _ = Device::Cpu;
    }
}
