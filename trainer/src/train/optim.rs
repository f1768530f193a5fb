//! The optimizer side of a training step: AdamW with decoupled weight decay (PyTorch's
//! `torch.optim.AdamW`), the global gradient norm and clipping (`clip_grad_norm_`), and the
//! cosine learning-rate schedule with linear warmup (`get_cosine_schedule_with_warmup`).
//!
//! AdamW is written here rather than taken from burn so that its state is keyed by parameter
//! path (`layers.3.mlp.up_proj.weight`) instead of burn's random per-process parameter ids: a
//! checkpoint written by one process then loads into a model rebuilt by another, which is what
//! an exact `--resume` needs. As in the Hugging Face trainer, weight decay applies to matrices
//! only, never to norm gains or biases.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// AdamW hyper-parameters (PyTorch's defaults except the learning rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct OptimSettings {
    /// Peak learning rate. Default 5e-7 (the Zephyr DPO recipe).
    pub learning_rate: f64,
    /// Decoupled weight decay, matrices only. Default 0.
    pub weight_decay: f64,
    /// β₁. Default 0.9.
    pub adam_beta1: f64,
    /// β₂. Default 0.999.
    pub adam_beta2: f64,
    /// ε. Default 1e-8.
    pub adam_epsilon: f64,
    /// Fraction of the steps spent warming up linearly from 0. Default 0.1.
    pub warmup_ratio: f64,
    /// `cosine` (default) or `constant` (after warmup).
    pub lr_scheduler: Schedule,
    /// Clip the global gradient norm to this (0 = no clipping). Default 1.0.
    pub max_grad_norm: f64,
}

impl Default for OptimSettings {
    fn default() -> Self {
        Self {
            learning_rate: 5e-7,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            warmup_ratio: 0.1,
            lr_scheduler: Schedule::Cosine,
            max_grad_norm: 1.0,
        }
    }
}

impl OptimSettings {
    /// Checks the ranges, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Config(format!("optim.{key}: {why}")));
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning-rate", "must be a positive number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight-decay", "must be a non-negative number");
        }
        for (key, b) in [
            ("adam-beta1", self.adam_beta1),
            ("adam-beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return bad(key, "must be in [0, 1)");
            }
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0) {
            return bad("adam-epsilon", "must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return bad("warmup-ratio", "must be in [0, 1]");
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad("max-grad-norm", "must be a non-negative number (0 = off)");
        }
        Ok(())
    }
}

/// The learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Half a cosine from the peak down to 0 at the last step.
    Cosine,
    /// The peak rate throughout.
    Constant,
}

/// The learning rate of optimizer step `step` (0-based) out of `total`.
pub fn learning_rate(settings: &OptimSettings, step: usize, total: usize) -> f64 {
    let warmup = (settings.warmup_ratio * total as f64).ceil() as usize;
    let peak = settings.learning_rate;
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    match settings.lr_scheduler {
        Schedule::Constant => peak,
        Schedule::Cosine => {
            let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
            peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

/// Per-row sums of squares of every gradient, in visiting order.
struct GradSquares<'a> {
    grads: &'a GradientsParams,
    rows: Vec<Tensor<1>>,
}

impl ModuleVisitor for GradSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let dims = g.dims();
            let cols = dims.last().copied().unwrap_or(1).max(1);
            let rows = g.shape().num_elements() / cols;
            self.rows.push(
                g.reshape([rows, cols])
                    .powi_scalar(2)
                    .sum_dim(1)
                    .reshape([rows]),
            );
        }
    }
}

/// The global L2 norm of all gradients of `model`.
///
/// Deterministic by construction, because checkpoints resume bit for bit: each row is reduced
/// on the device (row reductions run sequentially within a row), and the row sums are added on
/// the host in a fixed order in f64. A whole-tensor `sum()` would not do: for large tensors the
/// CPU backend splits it across threads, and the order of the partial sums varies from run to
/// run. One read-back per step.
pub fn gradient_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    let mut visitor = GradSquares {
        grads,
        rows: Vec::new(),
    };
    model.visit(&mut visitor);
    if visitor.rows.is_empty() {
        return 0.0;
    }
    let all = Tensor::cat(visitor.rows, 0);
    let values = all.into_data().try_into_vec_as::<f64>().unwrap_or_default();
    values.iter().sum::<f64>().sqrt()
}

/// `clip_grad_norm_`'s factor: `min(1, max_norm / (norm + 1e-6))`, 1 when clipping is off.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// Host arrays by name.
pub type NamedArrays = Vec<(String, Vec<f32>)>;

/// The moments of one parameter, flattened.
#[derive(Debug, Clone)]
struct Moments {
    exp_avg: Tensor<1>,
    exp_avg_sq: Tensor<1>,
}

/// AdamW with its state keyed by parameter path.
#[derive(Debug, Clone)]
pub struct AdamW {
    settings: OptimSettings,
    steps: u64,
    moments: BTreeMap<String, Moments>,
}

impl AdamW {
    /// A fresh optimizer.
    pub fn new(settings: OptimSettings) -> Self {
        Self {
            settings,
            steps: 0,
            moments: BTreeMap::new(),
        }
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Applies one update with learning rate `lr`, gradients scaled by `grad_scale` (the
    /// clipping factor).
    pub fn step<M: Module>(
        &mut self,
        model: M,
        grads: GradientsParams,
        lr: f64,
        grad_scale: f64,
    ) -> M {
        self.steps += 1;
        let mut mapper = AdamWMapper {
            path: Vec::new(),
            grads,
            optimizer: self,
            lr,
            grad_scale,
        };
        model.map(&mut mapper)
    }

    /// The state as named host arrays (`{path}.exp_avg`, `{path}.exp_avg_sq`) and the step
    /// count, for checkpoints.
    pub fn export(&self) -> Result<(u64, NamedArrays)> {
        let mut out = Vec::with_capacity(self.moments.len() * 2);
        for (path, m) in &self.moments {
            for (suffix, t) in [("exp_avg", &m.exp_avg), ("exp_avg_sq", &m.exp_avg_sq)] {
                let values = t
                    .clone()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .map_err(|e| Error::Input(format!("reading optimizer state {path}: {e:?}")))?;
                out.push((format!("{path}.{suffix}"), values));
            }
        }
        Ok((self.steps, out))
    }

    /// Restores the state written by [`AdamW::export`].
    pub fn import(
        settings: OptimSettings,
        steps: u64,
        mut tensors: BTreeMap<String, Vec<f32>>,
        device: &burn::tensor::Device,
    ) -> Result<Self> {
        let mut moments = BTreeMap::new();
        let paths: Vec<String> = tensors
            .keys()
            .filter_map(|name| name.strip_suffix(".exp_avg").map(str::to_string))
            .collect();
        let tensor = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<1>::from_data(TensorData::new(v, [n]), device)
        };
        for path in paths {
            let exp_avg = tensors.remove(&format!("{path}.exp_avg")).expect("listed");
            let Some(exp_avg_sq) = tensors.remove(&format!("{path}.exp_avg_sq")) else {
                return Err(Error::Input(format!(
                    "optimizer state: {path}.exp_avg has no matching exp_avg_sq"
                )));
            };
            moments.insert(
                path,
                Moments {
                    exp_avg: tensor(exp_avg),
                    exp_avg_sq: tensor(exp_avg_sq),
                },
            );
        }
        Ok(Self {
            settings,
            steps,
            moments,
        })
    }
}

struct AdamWMapper<'a> {
    path: Vec<String>,
    grads: GradientsParams,
    optimizer: &'a mut AdamW,
    lr: f64,
    grad_scale: f64,
}

impl ModuleMapper for AdamWMapper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let s = self.optimizer.settings;
        let t = self.optimizer.steps as i32;
        let require_grad = tensor.is_require_grad();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let value = tensor.inner().reshape([n]);
        let mut grad = grad.reshape([n]);
        if self.grad_scale != 1.0 {
            grad = grad.mul_scalar(self.grad_scale);
        }
        let key = self.path.join(".");
        let (m, v) = match self.optimizer.moments.remove(&key) {
            Some(m) => (m.exp_avg, m.exp_avg_sq),
            None => (grad.zeros_like(), grad.zeros_like()),
        };
        let m = m.mul_scalar(s.adam_beta1) + grad.clone().mul_scalar(1.0 - s.adam_beta1);
        let v = v.mul_scalar(s.adam_beta2) + grad.powi_scalar(2).mul_scalar(1.0 - s.adam_beta2);
        let bias1 = 1.0 - s.adam_beta1.powi(t);
        let bias2 = 1.0 - s.adam_beta2.powi(t);
        // PyTorch: p ← p·(1 − lr·wd); p ← p − (lr / bias1) · m / (sqrt(v) / sqrt(bias2) + eps).
        let decayed = if D >= 2 && s.weight_decay > 0.0 {
            value.mul_scalar(1.0 - self.lr * s.weight_decay)
        } else {
            value
        };
        let denominator = v
            .clone()
            .sqrt()
            .div_scalar(bias2.sqrt())
            .add_scalar(s.adam_epsilon);
        let updated = decayed - (m.clone() / denominator).mul_scalar(self.lr / bias1);
        self.optimizer.moments.insert(
            key,
            Moments {
                exp_avg: m,
                exp_avg_sq: v,
            },
        );
        let mut restored = Tensor::<D>::from_inner(updated.reshape(shape));
        if require_grad {
            restored = restored.require_grad();
        }
        Param::from_mapped_value(id, restored, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_zero() {
        let s = OptimSettings {
            learning_rate: 1.0,
            warmup_ratio: 0.1,
            ..Default::default()
        };
        assert_eq!(learning_rate(&s, 0, 100), 0.0);
        assert!((learning_rate(&s, 5, 100) - 0.5).abs() < 1e-12);
        assert!((learning_rate(&s, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&s, 55, 100) - 0.5).abs() < 1e-12);
        assert!(learning_rate(&s, 99, 100) < 0.001);
    }

    #[test]
    fn clipping_factor_is_pytorchs() {
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert!((clip_factor(4.0, 1.0) - 1.0 / (4.0 + 1e-6)).abs() < 1e-12);
        assert_eq!(clip_factor(100.0, 0.0), 1.0);
    }
}
