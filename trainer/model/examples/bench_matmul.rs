//! GFLOPS of the linear layers' matrix products on this CPU: burn's product (the `gemm` crate
//! under the flex backend) against prefsmith's kernel ([`prefsmith_model::gemm`]) in f32 and
//! bf16, at SmolLM2's training shapes (1024 tokens; `Wᵀ` is the backward pass's transposed
//! weight). Run on an idle machine:
//!
//!     cargo run -p prefsmith-model --example bench_matmul
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use prefsmith_model::gemm::{MatRef, MatmulPrecision, matmul, supports};

/// Repetitions timed per product.
const REPEATS: u32 = 5;

fn gflops(flops: f64, mut run: impl FnMut()) -> f64 {
    run();
    let start = Instant::now();
    for _ in 0..REPEATS {
        run();
    }
    flops / (start.elapsed().as_secs_f64() / f64::from(REPEATS)) / 1e9
}

fn main() {
    let device = Device::flex();
    // (tokens or inputs, inner, outputs): q/o and k/v projections, the MLP, the head, dW.
    let shapes = [
        (1024, 576, 576),
        (1024, 576, 192),
        (1024, 576, 1536),
        (1024, 1536, 576),
        (1024, 576, 49152),
        (576, 1024, 1536),
    ];
    println!(
        "m x k x n: GFLOPS of burn | prefsmith f32 (with Wᵀ) [with Xᵀ] | prefsmith bf16 (with Wᵀ) [with Xᵀ]"
    );
    for (m, k, n) in shapes {
        let flops = 2.0 * (m * k * n) as f64;
        let a = Tensor::<2>::random([m, k], Distribution::Default, &device);
        let b = Tensor::<2>::random([k, n], Distribution::Default, &device);
        let burn = gflops(flops, || {
            let _ = a.clone().matmul(b.clone()).into_data();
        });
        let a: Vec<f32> = a.into_data().try_to_vec().unwrap();
        let b_data: Vec<f32> = b.into_data().try_to_vec().unwrap();
        let b_t: Vec<f32> = (0..n)
            .flat_map(|j| (0..k).map(move |p| (j, p)))
            .map(|(j, p)| b_data[p * n + j])
            .collect();
        let x = MatRef::row_major(&a, m, k).unwrap();
        let w = MatRef::row_major(&b_data, k, n).unwrap();
        let w_t = MatRef::row_major(&b_t, n, k).unwrap().t();
        // `A` stored transposed, as `Xᵀ` in the backward pass's `dW = Xᵀ · dY`.
        let a_t: Vec<f32> = (0..k)
            .flat_map(|p| (0..m).map(move |i| (i, p)))
            .map(|(i, p)| a[i * k + p])
            .collect();
        let x_t = MatRef::row_major(&a_t, k, m).unwrap().t();
        let mut line = format!("{m} x {k} x {n}: {burn:.1}");
        for precision in [MatmulPrecision::F32, MatmulPrecision::Bf16] {
            if !supports(precision) {
                line += &format!(" | {precision}: not on this CPU");
                continue;
            }
            let plain = gflops(flops, || drop(matmul(x, w, precision)));
            let transposed = gflops(flops, || drop(matmul(x, w_t, precision)));
            let activation = gflops(flops, || drop(matmul(x_t, w, precision)));
            line += &format!(" | {plain:.1} ({transposed:.1}) [{activation:.1}]");
        }
        println!("{line}");
    }
}
