//! Throwaway: GFLOPS of burn flex matmul vs prefsmith's kernel.
use burn::tensor::{Device, Distribution, Tensor};
use prefsmith_model::gemm::{MatRef, MatmulPrecision, matmul};
use std::time::Instant;
fn main() {
    let d = Device::flex();
    let shapes: [(usize, usize, usize); 6] = [
        (1024, 576, 1536),
        (1024, 1536, 576),
        (1024, 576, 576),
        (1024, 576, 192),
        (1024, 576, 49152),
        (576, 1024, 1536),
    ];
    for (m, k, n) in shapes {
        let flops = 2.0 * (m * k * n) as f64;
        let a = Tensor::<2>::random([m, k], Distribution::Default, &d);
        let b = Tensor::<2>::random([k, n], Distribution::Default, &d);
        let _ = a.clone().matmul(b.clone()).into_data();
        let t = Instant::now();
        let r = 5;
        for _ in 0..r {
            let _ = a.clone().matmul(b.clone()).into_data();
        }
        let burn = flops / (t.elapsed().as_secs_f64() / r as f64) / 1e9;
        let av: Vec<f32> = a.into_data().to_vec().unwrap();
        let bv: Vec<f32> = b.into_data().to_vec().unwrap();
        let mut line = format!("{m}x{k}x{n}: burn {burn:.1}");
        for p in [MatmulPrecision::F32, MatmulPrecision::Bf16] {
            let (x, y) = (
                MatRef::row_major(&av, m, k).unwrap(),
                MatRef::row_major(&bv, k, n).unwrap(),
            );
            let _ = matmul(x, y, p);
            let t = Instant::now();
            for _ in 0..r {
                let _ = matmul(x, y, p);
            }
            line += &format!(
                " | {p} {:.1}",
                flops / (t.elapsed().as_secs_f64() / r as f64) / 1e9
            );
            // transposed B (backward dX = dY W^T)
            let bt: Vec<f32> = (0..n)
                .flat_map(|j| (0..k).map(move |p| (j, p)))
                .map(|(j, p)| bv[p * n + j])
                .collect();
            let yt = MatRef::row_major(&bt, n, k).unwrap().t();
            let t = Instant::now();
            for _ in 0..r {
                let _ = matmul(x, yt, p);
            }
            line += &format!(
                " (Bt {:.1})",
                flops / (t.elapsed().as_secs_f64() / r as f64) / 1e9
            );
        }
        println!("{line} GFLOPS");
    }
}
