//! [`super::matmul`] under burn tensors: the matrix product of the model's linear layers and
//! head. On burn's CPU backend (`flex`) it runs prefsmith's kernel, and under autodiff it
//! records its own backward step, whose two products (`dY · Wᵀ` and `Xᵀ · dY`) run on the same
//! kernel through transposed views. On any other backend (CUDA, wgpu), on a CPU without the
//! kernel, or for tensors other than f32, it is burn's `matmul`, so no code path depends on
//! the CPU it was built for.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, DType, Flex};
use burn::tensor::{Tensor, TensorData};

use super::{MatRef, MatmulPrecision, supports};

/// `lhs · rhs` for `[m, k] · [k, n]`.
pub fn matmul(lhs: Tensor<2>, rhs: Tensor<2>, precision: MatmulPrecision) -> Tensor<2> {
    if !supports(precision) {
        return lhs.matmul(rhs);
    }
    // The CPU device compares equal with and without autodiff, so the tensors say which.
    if let (Ok(a), Ok(b)) = (
        lhs.clone().try_into_primitive::<Autodiff<Flex>>(),
        rhs.clone().try_into_primitive::<Autodiff<Flex>>(),
    ) {
        return Tensor::from_primitive::<Autodiff<Flex>>(tracked_matmul(a, b, precision));
    }
    if let (Ok(a), Ok(b)) = (
        lhs.clone().try_into_primitive::<Flex>(),
        rhs.clone().try_into_primitive::<Flex>(),
    ) {
        return Tensor::from_primitive::<Flex>(flex_matmul(a, b, precision));
    }
    lhs.matmul(rhs)
}

/// The product of two flex tensors through prefsmith's kernel, or burn's for what the kernel
/// does not take (dtypes other than f32, negative strides, ranks other than 2).
fn flex_matmul(lhs: FlexTensor, rhs: FlexTensor, precision: MatmulPrecision) -> FlexTensor {
    let (Some(a), Some(b)) = (view(&lhs), view(&rhs)) else {
        return Flex::float_matmul(lhs, rhs);
    };
    let (m, n) = (a.rows, b.cols);
    // Fewer rows than a tile (a decoded token) would waste most of the kernel's work; burn's
    // product has a path for those. bf16 always runs here, so its arithmetic never depends on
    // the shape.
    if precision == MatmulPrecision::F32 && m < super::MR {
        return Flex::float_matmul(lhs, rhs);
    }
    let out = super::matmul(a, b, precision);
    FlexTensor::from_data(TensorData::new(out, [m, n]))
}

/// The strided view of a rank-2 f32 flex tensor with non-negative strides.
fn view(tensor: &FlexTensor) -> Option<MatRef<'_>> {
    let layout = tensor.layout();
    if tensor.dtype() != DType::F32 || layout.num_dims() != 2 {
        return None;
    }
    let dims = layout.shape();
    let strides = layout.strides();
    let stride = |i: usize| usize::try_from(strides[i]).ok();
    MatRef::new(
        tensor.storage::<f32>(),
        layout.start_offset(),
        [dims[0], dims[1]],
        [stride(0)?, stride(1)?],
    )
}

/// The backward step: `dX = dY · Wᵀ` and `dW = Xᵀ · dY`, each only when that input is
/// tracked.
#[derive(Debug)]
struct MatmulBackward(MatmulPrecision);

impl Backward<Flex, 2> for MatmulBackward {
    /// The left input (kept when the right one needs a gradient) and the right input (kept
    /// when the left one does).
    type State = (Option<FlexTensor>, Option<FlexTensor>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let precision = self.0;
        let (lhs, rhs) = ops.state;
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                let rhs = rhs.expect("kept for the left gradient");
                flex_matmul(grad, rhs.transpose(0, 1), precision)
            },
            |grad| {
                let lhs = lhs.expect("kept for the right gradient");
                flex_matmul(lhs.transpose(0, 1), grad, precision)
            },
        );
    }
}

/// The product of two autodiff tensors, recorded with [`MatmulBackward`].
fn tracked_matmul(
    lhs: FloatTensor<Autodiff<Flex>>,
    rhs: FloatTensor<Autodiff<Flex>>,
    precision: MatmulPrecision,
) -> FloatTensor<Autodiff<Flex>> {
    let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
    let prepared = MatmulBackward(precision)
        .prepare::<NoCheckpointing>([lhs.node(), rhs.node()])
        .compute_bound()
        .stateful();
    let (lhs, rhs) = (lhs.into_primitive(), rhs.into_primitive());
    match prepared {
        OpsKind::Tracked(prep) => {
            let state = (
                rhs_tracked.then(|| lhs.clone()),
                lhs_tracked.then(|| rhs.clone()),
            );
            prep.finish(state, flex_matmul(lhs, rhs, precision))
        }
        OpsKind::UnTracked(prep) => prep.finish(flex_matmul(lhs, rhs, precision)),
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    fn close(got: Tensor<2>, want: Tensor<2>, tolerance: f32) {
        let (got, want): (Vec<f32>, Vec<f32>) = (
            got.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap(),
            want.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap(),
        );
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= tolerance * scale,
                "{g} vs {w} (scale {scale})"
            );
        }
    }

    /// Output and both gradients of `sum(weights ⊙ (x · w))` through prefsmith's product at
    /// `precision`, and through burn's.
    fn product_and_gradients(
        precision: MatmulPrecision,
        transposed_w: bool,
    ) -> [(Tensor<2>, Tensor<2>); 3] {
        let device = Device::flex().autodiff();
        let (m, k, n) = (37, 300, 70);
        let x = Tensor::<2>::random([m, k], Distribution::Uniform(-1.0, 1.0), &device);
        let w = if transposed_w {
            Tensor::<2>::random([n, k], Distribution::Uniform(-1.0, 1.0), &device)
        } else {
            Tensor::<2>::random([k, n], Distribution::Uniform(-1.0, 1.0), &device)
        };
        let weights = Tensor::<2>::random([m, n], Distribution::Uniform(-1.0, 1.0), &device);
        let run = |ours: bool| {
            let x = x.clone().detach().require_grad();
            let w = w.clone().detach().require_grad();
            let rhs = if transposed_w {
                w.clone().transpose()
            } else {
                w.clone()
            };
            let y = if ours {
                matmul(x.clone(), rhs, precision)
            } else {
                x.clone().matmul(rhs)
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            (y.inner(), x.grad(&grads).unwrap(), w.grad(&grads).unwrap())
        };
        let (ours, burn) = (run(true), run(false));
        // The forward product is the kernel's own, bit for bit: the tensors took its path.
        let raw =
            |t: &Tensor<2>| -> Vec<f32> { t.clone().inner().into_data().try_to_vec().unwrap() };
        let (xs, ws) = (raw(&x), raw(&w));
        let w_view = if transposed_w {
            MatRef::row_major(&ws, n, k).unwrap().t()
        } else {
            MatRef::row_major(&ws, k, n).unwrap()
        };
        let kernel = super::super::matmul(MatRef::row_major(&xs, m, k).unwrap(), w_view, precision);
        assert_eq!(
            ours.0.clone().into_data().try_to_vec::<f32>().unwrap(),
            kernel
        );
        [
            (ours.0, burn.0),
            (Tensor::from_inner(ours.1), Tensor::from_inner(burn.1)),
            (Tensor::from_inner(ours.2), Tensor::from_inner(burn.2)),
        ]
        .map(|(a, b): (Tensor<2>, Tensor<2>)| (a.inner(), b.inner()))
    }

    #[test]
    fn the_recorded_backward_step_gives_burns_gradients() {
        if !supports(MatmulPrecision::F32) {
            eprintln!("skipped: no avx512f on this CPU (burn's product runs instead)");
            return;
        }
        for transposed in [false, true] {
            for (ours, burn) in product_and_gradients(MatmulPrecision::F32, transposed) {
                close(ours, burn, 1e-5);
            }
        }
    }

    #[test]
    fn bf16_gradients_stay_within_bf16_rounding_of_f32() {
        if !supports(MatmulPrecision::Bf16) {
            eprintln!("skipped: no avx512bf16 on this CPU (the precision is refused there)");
            return;
        }
        for (ours, burn) in product_and_gradients(MatmulPrecision::Bf16, true) {
            close(ours, burn, 2e-2);
        }
    }

    #[test]
    fn inference_tensors_take_the_kernel_and_agree_with_burn() {
        let device = Device::flex();
        let x = Tensor::<2>::random([20, 300], Distribution::Default, &device);
        let w = Tensor::<2>::random([300, 40], Distribution::Default, &device);
        let want = x.clone().matmul(w.clone());
        let got = matmul(x.clone(), w.clone(), MatmulPrecision::F32);
        if supports(MatmulPrecision::F32) {
            // The kernel's own bits: the tensors took its path.
            let (xs, ws): (Vec<f32>, Vec<f32>) = (
                x.clone().into_data().try_to_vec().unwrap(),
                w.clone().into_data().try_to_vec().unwrap(),
            );
            let kernel = super::super::matmul(
                MatRef::row_major(&xs, 20, 300).unwrap(),
                MatRef::row_major(&ws, 300, 40).unwrap(),
                MatmulPrecision::F32,
            );
            assert_eq!(got.clone().into_data().try_to_vec::<f32>().unwrap(), kernel);
        }
        close(got, want.clone(), 1e-5);
        // One row goes to burn's product: the same values.
        let row = x.narrow(0, 3, 1);
        close(
            matmul(row.clone(), w.clone(), MatmulPrecision::F32),
            row.matmul(w),
            1e-5,
        );
    }
}
