//! DPO reward arithmetic on tensors of per-sequence summed log-probabilities (`[batch]`).
//!
//! * implicit reward (Decision 4): `r = β · (lp_θ − lp_ref)`;
//! * the DPO logit: `h = (lp_θ(y_w) − lp_ref(y_w)) − (lp_θ(y_l) − lp_ref(y_l))`;
//! * the sigmoid DPO loss: `−log σ(β·h)`, averaged over the batch.

use burn::tensor::Tensor;
use burn::tensor::activation::log_sigmoid;

/// `β · (policy − reference)` per sequence. Shapes: `[batch]` → `[batch]`.
pub fn implicit_reward(policy_logp: Tensor<1>, ref_logp: Tensor<1>, beta: f64) -> Tensor<1> {
    (policy_logp - ref_logp).mul_scalar(beta)
}

/// Log-probabilities of one side of each pair under the policy and the reference.
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

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;

    fn t(values: &[f32]) -> Tensor<1> {
        Tensor::from_floats(values, &Device::flex())
    }

    fn scalar(x: Tensor<1>) -> f32 {
        x.into_data().try_to_vec::<f32>().expect("f32 data")[0]
    }

    #[test]
    fn implicit_reward_is_scaled_log_ratio() {
        let r = implicit_reward(t(&[-10.0]), t(&[-12.0]), 0.1);
        assert!((scalar(r) - 0.2).abs() < 1e-6);
    }

    #[test]
    fn dpo_loss_hand_computed() {
        // h = (−10 − −12) − (−15 − −14) = 2 + 1 = 3; loss = −log σ(0.3) = log(1 + e^−0.3).
        let logps = PairLogps {
            policy_chosen: t(&[-10.0]),
            policy_rejected: t(&[-15.0]),
            ref_chosen: t(&[-12.0]),
            ref_rejected: t(&[-14.0]),
        };
        let expected = (1.0f32 + (-0.3f32).exp()).ln();
        assert!((scalar(logps.dpo_loss(0.1)) - expected).abs() < 1e-6);
        // At h = 0 the loss is ln 2.
        let even = PairLogps {
            policy_chosen: t(&[0.0]),
            policy_rejected: t(&[0.0]),
            ref_chosen: t(&[0.0]),
            ref_rejected: t(&[0.0]),
        };
        assert!((scalar(even.dpo_loss(0.1)) - std::f32::consts::LN_2).abs() < 1e-6);
    }
}
