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

use super::attention::{self as core, AttentionShape, Heads};
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

/// Multi-head attention with grouped keys and values on prefsmith's kernel
/// ([`super::attention`]): `q` is `[batch, heads, queries, head_dim]`, `k` and `v` are
/// `[batch, kv_heads, keys, head_dim]`, scores scaled by `1 / √head_dim`, and the result has
/// its heads merged, `[batch, queries, heads · head_dim]`. Under autodiff it records its own
/// backward step.
///
/// `None` where it does not run — another backend, a CPU without the kernel, tensors other
/// than f32 (or with negative strides), fewer queries than a tile at f32 (a decoded token) —
/// and the caller runs burn's attention instead.
pub fn attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    causal: bool,
    precision: MatmulPrecision,
) -> Option<Tensor<3>> {
    if !supports(precision) || (precision == MatmulPrecision::F32 && q.dims()[2] < super::MR) {
        return None;
    }
    let options = AttentionOptions { causal, precision };
    if let (Ok(q), Ok(k), Ok(v)) = (
        q.clone().try_into_primitive::<Autodiff<Flex>>(),
        k.clone().try_into_primitive::<Autodiff<Flex>>(),
        v.clone().try_into_primitive::<Autodiff<Flex>>(),
    ) {
        return tracked_attention(q, k, v, options).map(Tensor::from_primitive::<Autodiff<Flex>>);
    }
    if let (Ok(q), Ok(k), Ok(v)) = (
        q.clone().try_into_primitive::<Flex>(),
        k.clone().try_into_primitive::<Flex>(),
        v.clone().try_into_primitive::<Flex>(),
    ) {
        let (output, _) = flex_attention(&q, &k, &v, options)?;
        return Some(Tensor::from_primitive::<Flex>(output));
    }
    None
}

/// What an attention call computes besides its inputs.
#[derive(Debug, Clone, Copy)]
struct AttentionOptions {
    causal: bool,
    precision: MatmulPrecision,
}

/// A rank-4 f32 flex tensor as [`Heads`], if its strides are non-negative and it lies in its
/// storage.
fn heads_view(tensor: &FlexTensor) -> Option<Heads<'_>> {
    let layout = tensor.layout();
    if tensor.dtype() != DType::F32 || layout.num_dims() != 4 {
        return None;
    }
    let shape = layout.shape();
    let strides = layout.strides();
    let mut dims = [0; 4];
    let mut steps = [0; 4];
    for i in 0..4 {
        dims[i] = shape[i];
        steps[i] = usize::try_from(strides[i]).ok()?;
    }
    let heads = Heads {
        data: tensor.storage::<f32>(),
        offset: layout.start_offset(),
        dims,
        strides: steps,
    };
    core::check_views(&heads).then_some(heads)
}

fn scale_of(shape: &AttentionShape) -> f32 {
    (shape.head_dim as f32).sqrt().recip()
}

/// The forward pass on flex tensors: the merged output and the probabilities.
fn flex_attention(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    options: AttentionOptions,
) -> Option<(FlexTensor, FlexTensor)> {
    let (qv, kv, vv) = (heads_view(q)?, heads_view(k)?, heads_view(v)?);
    let shape = AttentionShape::of(&qv, &kv, &vv, options.causal).ok()?;
    let out = core::forward(shape, (&qv, &kv, &vv), scale_of(&shape), options.precision);
    let AttentionShape {
        batch,
        heads,
        queries,
        keys,
        head_dim,
        ..
    } = shape;
    Some((
        FlexTensor::from_data(TensorData::new(
            out.output,
            [batch, queries, heads * head_dim],
        )),
        FlexTensor::from_data(TensorData::new(
            out.probabilities,
            [batch, heads, queries, keys],
        )),
    ))
}

/// The backward step of [`attention`]: gradients of the query, key and value.
#[derive(Debug)]
struct AttentionBackward(AttentionOptions);

impl Backward<Flex, 3> for AttentionBackward {
    /// The query, key and value, and the probabilities of the forward pass.
    type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let options = self.0;
        let grad = grads.consume::<Flex>(&ops.node);
        let (q, k, v, probabilities) = ops.state;
        let views = (heads_view(&q), heads_view(&k), heads_view(&v));
        let (Some(qv), Some(kv), Some(vv)) = views else {
            unreachable!("the forward pass took these views");
        };
        let shape = AttentionShape::of(&qv, &kv, &vv, options.causal)
            .expect("the forward pass checked the shapes");
        // The merged output's gradient `[batch, queries, heads · d]` with its heads split out.
        let layout = grad.layout();
        let strides: Vec<usize> = layout
            .strides()
            .iter()
            .map(|&s| usize::try_from(s).expect("gradients have non-negative strides"))
            .collect();
        let grad_heads = Heads {
            data: grad.storage::<f32>(),
            offset: layout.start_offset(),
            dims: [shape.batch, shape.heads, shape.queries, shape.head_dim],
            strides: [
                strides[0],
                shape.head_dim * strides[2],
                strides[1],
                strides[2],
            ],
        };
        let probabilities = probabilities.storage::<f32>();
        let (dq, dk, dv) = core::backward(
            shape,
            (&qv, &kv, &vv),
            probabilities,
            &grad_heads,
            scale_of(&shape),
            options.precision,
        );
        let kv_dims = [shape.batch, shape.kv_heads, shape.keys, shape.head_dim];
        let q_dims = [shape.batch, shape.heads, shape.queries, shape.head_dim];
        let [q_node, k_node, v_node] = ops.parents;
        for (node, values, dims) in [
            (q_node, dq, q_dims),
            (k_node, dk, kv_dims),
            (v_node, dv, kv_dims),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(
                    node.id,
                    FlexTensor::from_data(TensorData::new(values, dims)),
                );
            }
        }
    }
}

/// [`flex_attention`] on autodiff tensors, recorded with [`AttentionBackward`].
fn tracked_attention(
    q: FloatTensor<Autodiff<Flex>>,
    k: FloatTensor<Autodiff<Flex>>,
    v: FloatTensor<Autodiff<Flex>>,
    options: AttentionOptions,
) -> Option<FloatTensor<Autodiff<Flex>>> {
    let (qp, kp, vp) = (
        q.primitive().clone(),
        k.primitive().clone(),
        v.primitive().clone(),
    );
    let (output, probabilities) = flex_attention(&qp, &kp, &vp, options)?;
    let prepared = AttentionBackward(options)
        .prepare::<NoCheckpointing>([q.node(), k.node(), v.node()])
        .compute_bound()
        .stateful();
    Some(match prepared {
        OpsKind::Tracked(prep) => prep.finish((qp, kp, vp, probabilities), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    })
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

    /// Output and gradients of `sum(weights ⊙ attention(q, k, v))` (two batch rows, 4 query
    /// heads over 2 key/value heads, `cached` keys before the 19 queries, causal) through
    /// prefsmith's attention and through burn's (keys and values widened per query head, the
    /// causal mask explicit when keys are cached), with the query and key heads split out of
    /// `[batch, positions, heads · d]` as in the model.
    fn attention_and_gradients(
        precision: MatmulPrecision,
        cached: usize,
    ) -> [(Tensor<4>, Tensor<4>); 4] {
        use burn::tensor::module::attention as burn_attention;
        use burn::tensor::ops::AttentionModuleOptions;
        use burn::tensor::{Bool, TensorData};
        let device = Device::flex().autodiff();
        let (b, h, kvh, t, d) = (2, 4, 2, 19, 16);
        let s = cached + t;
        let uniform = Distribution::Uniform(-1.0, 1.0);
        let q = Tensor::<4>::random([b, t, h, d], uniform, &device);
        let k = Tensor::<4>::random([b, s, kvh, d], uniform, &device);
        let v = Tensor::<4>::random([b, kvh, s, d], uniform, &device);
        let weights = Tensor::<3>::random([b, t, h * d], uniform, &device);
        let run = |ours: bool| {
            let (q0, k0, v0) = (
                q.clone().detach().require_grad(),
                k.clone().detach().require_grad(),
                v.clone().detach().require_grad(),
            );
            let (qh, kh) = (q0.clone().swap_dims(1, 2), k0.clone().swap_dims(1, 2));
            let out = if ours {
                attention(&qh, &kh, &v0, true, precision).expect("the kernel runs here")
            } else {
                let widen = |y: Tensor<4>| {
                    y.unsqueeze_dim::<5>(2)
                        .expand([b, kvh, h / kvh, s, d])
                        .reshape([b, h, s, d])
                };
                let mask = (cached > 0).then(|| {
                    let data: Vec<bool> = (0..t)
                        .flat_map(|i| (0..s).map(move |j| j > cached + i))
                        .collect();
                    Tensor::<4, Bool>::from_data(TensorData::new(data, [1, 1, t, s]), &device)
                        .expand([b, h, t, s])
                });
                let options = AttentionModuleOptions {
                    scale: None,
                    softcap: None,
                    is_causal: cached == 0,
                };
                burn_attention(qh, widen(kh), widen(v0.clone()), mask, None, options)
                    .swap_dims(1, 2)
                    .reshape([b, t, h * d])
            };
            let grads = (out.clone() * weights.clone()).sum().backward();
            (
                out.inner(),
                q0.grad(&grads).unwrap(),
                k0.grad(&grads).unwrap(),
                v0.grad(&grads).unwrap(),
            )
        };
        let (ours, burn) = (run(true), run(false));
        let [out_ours, out_burn] = [ours.0, burn.0].map(|o: Tensor<3>| o.reshape([b, t, h, d]));
        [
            (out_ours, out_burn),
            (ours.1, burn.1),
            (ours.2, burn.2),
            (ours.3, burn.3),
        ]
    }

    fn close4(got: Tensor<4>, want: Tensor<4>, tolerance: f32) {
        let [a, b, c, d] = got.dims();
        assert_eq!(got.dims(), want.dims());
        close(
            got.reshape([a * b * c, d]),
            want.reshape([a * b * c, d]),
            tolerance,
        );
    }

    #[test]
    fn attention_and_its_gradients_equal_burns() {
        if !supports(MatmulPrecision::F32) {
            eprintln!("skipped: no avx512f on this CPU (burn's attention runs instead)");
            return;
        }
        for cached in [0, 5] {
            for (ours, burn) in attention_and_gradients(MatmulPrecision::F32, cached) {
                close4(ours, burn, 1e-5);
            }
        }
    }

    #[test]
    fn bf16_attention_stays_within_bf16_rounding_of_f32() {
        if !supports(MatmulPrecision::Bf16) {
            eprintln!("skipped: no avx512bf16 on this CPU (the precision is refused there)");
            return;
        }
        for (ours, burn) in attention_and_gradients(MatmulPrecision::Bf16, 3) {
            close4(ours, burn, 2e-2);
        }
    }

    #[test]
    fn attention_declines_what_the_kernel_does_not_take() {
        let device = Device::flex();
        let q = Tensor::<4>::random([1, 2, 1, 8], Distribution::Default, &device);
        let kv = Tensor::<4>::random([1, 1, 6, 8], Distribution::Default, &device);
        // One f32 query (a decoded token) goes to burn's attention.
        assert!(attention(&q, &kv, &kv, true, MatmulPrecision::F32).is_none());
        // Mismatched heads are declined, not mis-read.
        let q = Tensor::<4>::random([1, 3, 20, 8], Distribution::Default, &device);
        let kv = Tensor::<4>::random([1, 2, 20, 8], Distribution::Default, &device);
        assert!(attention(&q, &kv, &kv, true, MatmulPrecision::F32).is_none());
    }
}
