//! The preference losses of the trainer (`docs/ALGORITHMS.md` §4, §7 and §9), on
//! tensors of per-sequence summed log-probabilities (`[pairs]`).
//!
//! With `h = (lp_θ(y_w) − lp_ref(y_w)) − (lp_θ(y_l) − lp_ref(y_l))`:
//!
//! | name | per-pair loss |
//! |---|---|
//! | `sigmoid` (DPO) | `−log σ(βh)` |
//! | `cdpo` (label smoothing ε) | `−(1−ε) log σ(βh) − ε log σ(−βh)` |
//! | `robust` (ε) | `[−(1−ε) log σ(βh) + ε log σ(−βh)] / (1 − 2ε)` |
//! | `ipo` | `(h̄ − 1/(2β))²`, `h̄` from per-token averaged log-ratios |
//! | `hinge` | `max(0, 1 − βh)` |
//! | `sft` | mean token cross-entropy of the chosen response |
//! | `rdpo` | `−log σ(βh − β·ĝ/β₁)` |
//! | `ml-rdpo` | `−log σ(βh) + λ·(βh − ĝ)²` |
//!
//! `ĝ` is the normalised rating gap; an unrated pair has `ĝ = 0` and no penalty term, so both
//! rating-aware losses fall back to plain DPO for it. Several losses combine as
//! `Σ_k w_k · mean(loss_k)` (TRL's `loss_weights`).
//!
//! Means are taken over a whole optimizer step, not a micro-batch: a micro-batch contributes
//! `Σ loss / pairs_in_step` (and the SFT term `Σ NLL / chosen_tokens_in_step`), so gradient
//! accumulation gives exactly the gradient of the step's mean however the step is split.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, relu};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `β · (policy − reference)` per sequence. Shapes: `[batch]` → `[batch]`.
pub fn implicit_reward(policy_logp: Tensor<1>, ref_logp: Tensor<1>, beta: f64) -> Tensor<1> {
    (policy_logp - ref_logp).mul_scalar(beta)
}

/// One of the losses the trainer offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// DPO: `−log σ(βh)`.
    Sigmoid,
    /// Conservative DPO (explicit label smoothing).
    Cdpo,
    /// Robust DPO.
    Robust,
    /// IPO on per-token averaged log-ratios.
    Ipo,
    /// SLiC hinge.
    Hinge,
    /// Chosen-response negative log-likelihood (mean per token).
    Sft,
    /// Rating-DPO: the rating gap shifts the margin.
    Rdpo,
    /// Maximum-likelihood rating DPO: DPO plus a squared penalty towards the rating gap.
    MlRdpo,
}

impl LossKind {
    /// Every loss, in the order of the docs.
    pub const ALL: [LossKind; 8] = [
        Self::Sigmoid,
        Self::Cdpo,
        Self::Robust,
        Self::Ipo,
        Self::Hinge,
        Self::Sft,
        Self::Rdpo,
        Self::MlRdpo,
    ];

    /// The name used in configs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sigmoid => "sigmoid",
            Self::Cdpo => "cdpo",
            Self::Robust => "robust",
            Self::Ipo => "ipo",
            Self::Hinge => "hinge",
            Self::Sft => "sft",
            Self::Rdpo => "rdpo",
            Self::MlRdpo => "ml-rdpo",
        }
    }

    /// Whether the loss reads the rating gap.
    pub fn uses_rating(self) -> bool {
        matches!(self, Self::Rdpo | Self::MlRdpo)
    }

    /// Whether the loss compares chosen and rejected (and so needs reference log-probs).
    pub fn is_preference(self) -> bool {
        self != Self::Sft
    }
}

/// The hyper-parameters of the losses (defaults of `docs/ALGORITHMS.md` §7.3 and §9.2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LossParams {
    /// β (IPO's τ). Default 0.1.
    pub beta: f64,
    /// cDPO's label-smoothing ε. Default 0.1.
    pub cdpo_epsilon: f64,
    /// Robust DPO's flip rate ε, in [0, 0.5). Default 0.1.
    pub robust_epsilon: f64,
    /// RDPO's trust in ratings β₁. Default 1.0.
    pub rdpo_beta1: f64,
    /// ML-RDPO's penalty weight λ. Default 1.0.
    pub ml_rdpo_lambda: f64,
}

impl Default for LossParams {
    fn default() -> Self {
        Self {
            beta: 0.1,
            cdpo_epsilon: 0.1,
            robust_epsilon: 0.1,
            rdpo_beta1: 1.0,
            ml_rdpo_lambda: 1.0,
        }
    }
}

impl LossParams {
    /// Checks the ranges, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Config(format!("loss.{key}: {why}")));
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return bad("beta", "must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.cdpo_epsilon) {
            return bad("cdpo-epsilon", "must be in [0, 1]");
        }
        if !(0.0..0.5).contains(&self.robust_epsilon) {
            return bad("robust-epsilon", "must be in [0, 0.5)");
        }
        if !(self.rdpo_beta1.is_finite() && self.rdpo_beta1 > 0.0) {
            return bad("rdpo-beta1", "must be a positive number");
        }
        if !(self.ml_rdpo_lambda.is_finite() && self.ml_rdpo_lambda >= 0.0) {
            return bad("ml-rdpo-lambda", "must be a non-negative number");
        }
        Ok(())
    }
}

/// Log-probabilities of both sides of each pair under the policy and the reference.
#[derive(Debug, Clone)]
pub struct PairLogps {
    /// Policy log-probabilities of the chosen responses, `[batch]`.
    pub policy_chosen: Tensor<1>,
    /// Policy log-probabilities of the rejected responses, `[batch]`.
    pub policy_rejected: Tensor<1>,
    /// Reference log-probabilities of the chosen responses, `[batch]`.
    pub ref_chosen: Tensor<1>,
    /// Reference log-probabilities of the rejected responses, `[batch]`.
    pub ref_rejected: Tensor<1>,
}

impl PairLogps {
    /// The DPO logit `h` per pair, `[batch]`.
    pub fn logit(&self) -> Tensor<1> {
        (self.policy_chosen.clone() - self.ref_chosen.clone())
            - (self.policy_rejected.clone() - self.ref_rejected.clone())
    }

    /// Mean sigmoid DPO loss `−log σ(β·h)`.
    pub fn dpo_loss(&self, beta: f64) -> Tensor<1> {
        log_sigmoid(self.logit().mul_scalar(beta)).neg().mean()
    }
}

/// Everything a batch of pairs gives the losses.
#[derive(Debug, Clone)]
pub struct PairBatch {
    /// Summed log-probs.
    pub logps: PairLogps,
    /// Chosen response lengths in tokens (at least 1), `[batch]`.
    pub chosen_tokens: Tensor<1>,
    /// Rejected response lengths in tokens (at least 1), `[batch]`.
    pub rejected_tokens: Tensor<1>,
    /// The normalised rating gap, 0 for unrated pairs, `[batch]`.
    pub rating_gap: Tensor<1>,
    /// 1 for rated pairs, 0 for unrated ones, `[batch]`.
    pub rated: Tensor<1>,
}

/// The per-pair values of one loss, `[batch]` (for `sft`: the chosen NLL summed over tokens).
pub fn per_pair(kind: LossKind, batch: &PairBatch, params: &LossParams) -> Tensor<1> {
    let beta = params.beta;
    let h = batch.logps.logit();
    let bh = h.clone().mul_scalar(beta);
    match kind {
        LossKind::Sigmoid => log_sigmoid(bh).neg(),
        LossKind::Cdpo => {
            let eps = params.cdpo_epsilon;
            log_sigmoid(bh.clone()).mul_scalar(-(1.0 - eps)) - log_sigmoid(bh.neg()).mul_scalar(eps)
        }
        LossKind::Robust => {
            let eps = params.robust_epsilon;
            (log_sigmoid(bh.clone()).mul_scalar(-(1.0 - eps))
                + log_sigmoid(bh.neg()).mul_scalar(eps))
            .div_scalar(1.0 - 2.0 * eps)
        }
        LossKind::Ipo => {
            let l = &batch.logps;
            let chosen = (l.policy_chosen.clone() - l.ref_chosen.clone())
                / batch.chosen_tokens.clone().clamp_min(1.0);
            let rejected = (l.policy_rejected.clone() - l.ref_rejected.clone())
                / batch.rejected_tokens.clone().clamp_min(1.0);
            (chosen - rejected)
                .sub_scalar(1.0 / (2.0 * beta))
                .powi_scalar(2)
        }
        LossKind::Hinge => relu(bh.neg().add_scalar(1.0)),
        LossKind::Sft => batch.logps.policy_chosen.clone().neg(),
        LossKind::Rdpo => {
            let shift = batch
                .rating_gap
                .clone()
                .mul_scalar(beta / params.rdpo_beta1);
            log_sigmoid(bh - shift).neg()
        }
        LossKind::MlRdpo => {
            let penalty =
                (bh.clone() - batch.rating_gap.clone()).powi_scalar(2) * batch.rated.clone();
            log_sigmoid(bh).neg() + penalty.mul_scalar(params.ml_rdpo_lambda)
        }
    }
}

/// A weighted sum of losses (TRL's `loss_type` + `loss_weights`).
#[derive(Debug, Clone, PartialEq)]
pub struct LossMix {
    /// The losses and their weights.
    pub terms: Vec<(LossKind, f64)>,
    /// Their hyper-parameters.
    pub params: LossParams,
}

/// How many pairs and chosen tokens the whole optimizer step holds (the denominators of the
/// step's means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTotals {
    /// Pairs in the step.
    pub pairs: usize,
    /// Chosen-response tokens in the step.
    pub chosen_tokens: usize,
}

impl LossMix {
    /// Builds the mix, checking names, weights and parameters.
    pub fn new(kinds: &[LossKind], weights: Option<&[f64]>, params: LossParams) -> Result<Self> {
        params.validate()?;
        if kinds.is_empty() {
            return Err(Error::Config("loss.types: name at least one loss".into()));
        }
        let weights = match weights {
            Some(w) if w.len() != kinds.len() => {
                return Err(Error::Config(format!(
                    "loss.weights has {} entries for {} loss types",
                    w.len(),
                    kinds.len()
                )));
            }
            Some(w) => w.to_vec(),
            None => vec![1.0; kinds.len()],
        };
        if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(Error::Config(format!(
                "loss.weights: {w} is not a non-negative number"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for kind in kinds {
            if !seen.insert(*kind) {
                return Err(Error::Config(format!(
                    "loss.types names '{}' twice",
                    kind.name()
                )));
            }
        }
        Ok(Self {
            terms: kinds.iter().copied().zip(weights).collect(),
            params,
        })
    }

    /// Plain SFT (MixDPO's second stage).
    pub fn sft() -> Self {
        Self {
            terms: vec![(LossKind::Sft, 1.0)],
            params: LossParams::default(),
        }
    }

    /// Whether any term reads the rating gap.
    pub fn uses_rating(&self) -> bool {
        self.terms.iter().any(|(k, _)| k.uses_rating())
    }

    /// Whether any term needs reference log-probs.
    pub fn needs_reference(&self) -> bool {
        self.terms.iter().any(|(k, _)| k.is_preference())
    }

    /// This micro-batch's share of the step loss, a `[1]` tensor:
    /// `Σ_k w_k · Σ_pairs loss_k / totals.pairs` (SFT: `/ totals.chosen_tokens`).
    pub fn step_share(&self, batch: &PairBatch, totals: StepTotals) -> Tensor<1> {
        let mut total: Option<Tensor<1>> = None;
        for &(kind, weight) in &self.terms {
            let denominator = match kind {
                LossKind::Sft => totals.chosen_tokens.max(1),
                _ => totals.pairs.max(1),
            } as f64;
            let term = per_pair(kind, batch, &self.params)
                .sum()
                .mul_scalar(weight / denominator);
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
        total.expect("a mix has at least one term")
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;
    use burn::tensor::activation::log_softmax;

    use super::*;

    fn t(values: &[f32]) -> Tensor<1> {
        Tensor::from_floats(values, &Device::flex())
    }

    fn values(x: Tensor<1>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    fn scalar(x: Tensor<1>) -> f32 {
        values(x)[0]
    }

    fn batch(pc: f32, pr: f32, rc: f32, rr: f32, gap: Option<f32>) -> PairBatch {
        PairBatch {
            logps: PairLogps {
                policy_chosen: t(&[pc]),
                policy_rejected: t(&[pr]),
                ref_chosen: t(&[rc]),
                ref_rejected: t(&[rr]),
            },
            chosen_tokens: t(&[4.0]),
            rejected_tokens: t(&[2.0]),
            rating_gap: t(&[gap.unwrap_or(0.0)]),
            rated: t(&[if gap.is_some() { 1.0 } else { 0.0 }]),
        }
    }

    #[test]
    fn implicit_reward_is_scaled_log_ratio() {
        let r = implicit_reward(t(&[-10.0]), t(&[-12.0]), 0.1);
        assert!((scalar(r) - 0.2).abs() < 1e-6);
    }

    #[test]
    fn every_loss_matches_its_hand_computed_value() {
        // h = (−10 − −12) − (−15 − −14) = 3; βh = 0.3.
        let b = batch(-10.0, -15.0, -12.0, -14.0, Some(2.0));
        let p = LossParams::default();
        let ls = |z: f64| -(1.0 + (-z).exp()).ln(); // log σ(z)
        let expected = [
            (LossKind::Sigmoid, -ls(0.3)),
            (LossKind::Cdpo, -0.9 * ls(0.3) - 0.1 * ls(-0.3)),
            (LossKind::Robust, (-0.9 * ls(0.3) + 0.1 * ls(-0.3)) / 0.8),
            // h̄ = 2/4 − (−1)/2 = 1.0; (1.0 − 5)² = 16.
            (LossKind::Ipo, 16.0),
            (LossKind::Hinge, 0.7),
            (LossKind::Sft, 10.0),
            // βh − βĝ/β₁ = 0.3 − 0.2 = 0.1.
            (LossKind::Rdpo, -ls(0.1)),
            // −log σ(0.3) + (0.3 − 2)².
            (LossKind::MlRdpo, -ls(0.3) + 1.7 * 1.7),
        ];
        for (kind, want) in expected {
            let got = scalar(per_pair(kind, &b, &p)) as f64;
            assert!((got - want).abs() < 1e-5, "{kind:?}: {got} vs {want}");
        }
        // At h = 0 DPO is ln 2.
        let even = batch(0.0, 0.0, 0.0, 0.0, None);
        let got = scalar(per_pair(LossKind::Sigmoid, &even, &p));
        assert!((got - std::f32::consts::LN_2).abs() < 1e-6);
    }

    #[test]
    fn unrated_pairs_fall_back_to_dpo() {
        let b = batch(-10.0, -15.0, -12.0, -14.0, None);
        let p = LossParams::default();
        let dpo = scalar(per_pair(LossKind::Sigmoid, &b, &p));
        for kind in [LossKind::Rdpo, LossKind::MlRdpo] {
            assert!(
                (scalar(per_pair(kind, &b, &p)) - dpo).abs() < 1e-7,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn step_share_divides_by_step_totals() {
        let b = batch(-10.0, -15.0, -12.0, -14.0, None);
        let mix = LossMix::new(
            &[LossKind::Sigmoid, LossKind::Sft],
            Some(&[1.0, 0.5]),
            LossParams::default(),
        )
        .unwrap();
        let totals = StepTotals {
            pairs: 2,
            chosen_tokens: 8,
        };
        let want = (1.0 + (-0.3f64).exp()).ln() / 2.0 + 0.5 * 10.0 / 8.0;
        assert!((scalar(mix.step_share(&b, totals)) as f64 - want).abs() < 1e-6);
    }

    #[test]
    fn bad_mixes_are_refused() {
        let p = LossParams::default();
        assert!(LossMix::new(&[], None, p).is_err());
        assert!(LossMix::new(&[LossKind::Sigmoid], Some(&[1.0, 2.0]), p).is_err());
        assert!(LossMix::new(&[LossKind::Sigmoid, LossKind::Sigmoid], None, p).is_err());
        let bad = LossParams {
            robust_epsilon: 0.5,
            ..p
        };
        assert!(LossMix::new(&[LossKind::Robust], None, bad).is_err());
    }

    /// The two-token toy: a "model" that is one vector of two logits, the chosen response is
    /// token 0 and the rejected one token 1, the reference is uniform. Every preference loss
    /// must push the chosen token's logit up and the rejected one's down; SFT must push the
    /// chosen one up.
    #[test]
    fn gradients_point_towards_the_chosen_token_on_a_two_token_toy() {
        let device = Device::flex().autodiff();
        let params = LossParams::default();
        for kind in LossKind::ALL {
            let logits = Tensor::<1>::from_floats([0.0, 0.0], &device).require_grad();
            let logp = log_softmax(logits.clone().reshape([1, 2]), 1).reshape([2]);
            let constant = |v: f32| Tensor::<1>::from_floats([v], &device);
            let b = PairBatch {
                logps: PairLogps {
                    policy_chosen: logp.clone().narrow(0, 0, 1),
                    policy_rejected: logp.narrow(0, 1, 1),
                    ref_chosen: constant(-std::f32::consts::LN_2),
                    ref_rejected: constant(-std::f32::consts::LN_2),
                },
                chosen_tokens: constant(1.0),
                rejected_tokens: constant(1.0),
                rating_gap: constant(1.0),
                rated: constant(1.0),
            };
            let loss = per_pair(kind, &b, &params).sum();
            let grads = loss.backward();
            let g = values(logits.grad(&grads).expect("a gradient"));
            assert!(g[0] < 0.0, "{kind:?}: d loss / d chosen logit = {}", g[0]);
            assert!(g[1] > 0.0, "{kind:?}: d loss / d rejected logit = {}", g[1]);
        }
    }

    /// Analytic gradients agree with central finite differences for every loss.
    #[test]
    fn gradients_match_finite_differences() {
        let device = Device::flex().autodiff();
        let params = LossParams::default();
        let at = [-10.0f32, -15.0, -12.0, -14.0];
        for kind in [
            LossKind::Sigmoid,
            LossKind::Cdpo,
            LossKind::Robust,
            LossKind::Ipo,
            LossKind::Hinge,
            LossKind::Rdpo,
            LossKind::MlRdpo,
        ] {
            let eval = |pc: f32, pr: f32| -> f64 {
                scalar(per_pair(kind, &batch(pc, pr, at[2], at[3], Some(2.0)), &params).sum())
                    as f64
            };
            let pc = Tensor::<1>::from_floats([at[0]], &device).require_grad();
            let pr = Tensor::<1>::from_floats([at[1]], &device).require_grad();
            let constant = |v: f32| Tensor::<1>::from_floats([v], &device);
            let b = PairBatch {
                logps: PairLogps {
                    policy_chosen: pc.clone(),
                    policy_rejected: pr.clone(),
                    ref_chosen: constant(at[2]),
                    ref_rejected: constant(at[3]),
                },
                chosen_tokens: constant(4.0),
                rejected_tokens: constant(2.0),
                rating_gap: constant(2.0),
                rated: constant(1.0),
            };
            let grads = per_pair(kind, &b, &params).sum().backward();
            let d = 0.01f32;
            let numeric_c = (eval(at[0] + d, at[1]) - eval(at[0] - d, at[1])) / (2.0 * d as f64);
            let numeric_r = (eval(at[0], at[1] + d) - eval(at[0], at[1] - d)) / (2.0 * d as f64);
            let gc = values(pc.grad(&grads).unwrap())[0] as f64;
            let gr = values(pr.grad(&grads).unwrap())[0] as f64;
            assert!(
                (gc - numeric_c).abs() < 2e-3,
                "{kind:?} chosen: {gc} vs {numeric_c}"
            );
            assert!(
                (gr - numeric_r).abs() < 2e-3,
                "{kind:?} rejected: {gr} vs {numeric_r}"
            );
        }
    }
}
