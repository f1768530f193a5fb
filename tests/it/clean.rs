//! Label cleaning (robust PCA, `docs/ALGORITHMS.md` §5): the solver against an independent numpy
//! implementation, and recovery of true rankings from synthetic corrupted and incomplete
//! comparisons.

use prefsmith_udfs::cleaning::clean_matrix;
use prefsmith_udfs::rpca::{RpcaOptions, pcp, score_matrix};

use std::process::Command;

use crate::common::{data, fails, manifest, ok, prefsmith, python, python_script, repo, tempdir};

/// A small deterministic generator (SplitMix64), so the synthetic data is the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// A synthetic prompt: true scores, its corrupted matrix, Ω and the flipped pairs.
type Corrupted = (Vec<f64>, Vec<f64>, Vec<bool>, Vec<(usize, usize)>);

/// A Bradley–Terry logit matrix of true scores with a fraction of pairs flipped (sign
/// reversed, magnitude doubled) and a fraction missing.
fn corrupted(n: usize, flip: f64, missing: f64, rng: &mut Rng) -> Corrupted {
    let truth: Vec<f64> = (0..n).map(|_| 1.5 * rng.normal()).collect();
    let mut x = score_matrix(&truth, 1.0);
    let mut observed = vec![true; n * n];
    let mut flipped = Vec::new();
    for i in 0..n {
        observed[i * n + i] = false;
        for j in i + 1..n {
            if rng.uniform() < missing {
                observed[i * n + j] = false;
                observed[j * n + i] = false;
                x[i * n + j] = 0.0;
                x[j * n + i] = 0.0;
            } else if rng.uniform() < flip {
                x[i * n + j] *= -2.0;
                x[j * n + i] = -x[i * n + j];
                flipped.push((i, j));
            }
        }
    }
    (truth, x, observed, flipped)
}

/// Kendall's τ between two score vectors (no ties expected).
fn kendall_tau(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len();
    let mut sum = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            sum += ((a[i] - a[j]) * (b[i] - b[j])).signum();
        }
    }
    sum / (n * (n - 1) / 2) as f64
}

/// Row means over Ω: the uncleaned Borda scores.
fn raw_borda(x: &[f64], n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| x[i * n..(i + 1) * n].iter().sum::<f64>() / n as f64)
        .collect()
}

#[test]
fn recovery_beats_the_uncleaned_ranking() {
    let mut rng = Rng(20_261_128);
    println!("   n  flip  miss  tau_raw  tau_clean  recall  precision  converged");
    let mut corrupted_cases = 0;
    let (mut sum_raw, mut sum_clean) = (0.0, 0.0);
    for n in [8, 16, 32] {
        for flip in [0.0, 0.05, 0.1, 0.2] {
            for missing in [0.0, 0.15, 0.3] {
                let (mut tau_raw, mut tau_clean, mut found, mut flags, mut flips) =
                    (0.0, 0.0, 0usize, 0usize, 0usize);
                let mut converged = 0;
                let seeds = 5;
                for _ in 0..seeds {
                    let (truth, x, observed, flipped) = corrupted(n, flip, missing, &mut rng);
                    let full = missing == 0.0;
                    let cleaned = clean_matrix(
                        &x,
                        n,
                        if full { None } else { Some(&observed) },
                        RpcaOptions::default(),
                    );
                    converged += usize::from(cleaned.converged);
                    tau_raw += kendall_tau(&raw_borda(&x, n), &truth) / seeds as f64;
                    tau_clean += kendall_tau(&cleaned.scores, &truth) / seeds as f64;
                    found += cleaned
                        .flagged
                        .iter()
                        .filter(|p| flipped.contains(p))
                        .count();
                    flags += cleaned.flagged.len();
                    flips += flipped.len();
                }
                let recall = if flips == 0 {
                    1.0
                } else {
                    found as f64 / flips as f64
                };
                let precision = if flags == 0 {
                    1.0
                } else {
                    found as f64 / flags as f64
                };
                println!(
                    "{n:>4}  {flip:>4.2}  {missing:>4.2}  {tau_raw:>7.3}  {tau_clean:>9.3}  {recall:>6.2}  {precision:>9.2}  {converged}/{seeds}"
                );
                assert_eq!(converged, seeds, "n {n}, flip {flip}, missing {missing}");
                assert!(
                    tau_clean >= tau_raw,
                    "cleaning made the ranking worse: n {n}, flip {flip}, missing {missing}"
                );
                if flip > 0.0 {
                    assert!(
                        recall >= 0.9,
                        "recall {recall}: n {n}, flip {flip}, missing {missing}"
                    );
                    corrupted_cases += 1;
                    sum_raw += tau_raw;
                    sum_clean += tau_clean;
                }
            }
        }
    }
    let (mean_raw, mean_clean) = (
        sum_raw / corrupted_cases as f64,
        sum_clean / corrupted_cases as f64,
    );
    println!("mean tau over corrupted cases: raw {mean_raw:.3}, cleaned {mean_clean:.3}");
    assert!(mean_clean > mean_raw, "{mean_clean} vs {mean_raw}");
}

#[test]
fn solver_matches_the_numpy_reference() {
    let mut rng = Rng(7);
    let mut cases = Vec::new();
    for (n, flip, missing) in [
        (8, 0.1, 0.0),
        (16, 0.1, 0.0),
        (16, 0.1, 0.3),
        (32, 0.05, 0.2),
    ] {
        let (_, x, observed, _) = corrupted(n, flip, missing, &mut rng);
        let mask = (missing > 0.0).then_some(observed);
        let result = pcp(&x, n, mask.as_deref(), RpcaOptions::default());
        cases.push(serde_json::json!({
            "n": n, "x": x, "observed": mask, "low_rank": result.low_rank,
            "sparse": result.sparse, "iterations": result.iterations, "converged": result.converged,
        }));
    }
    // A dense random matrix, not low rank at all.
    let n = 12;
    let x: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
    let result = pcp(&x, n, None, RpcaOptions::default());
    cases.push(serde_json::json!({
        "n": n, "x": x, "observed": null, "low_rank": result.low_rank,
        "sparse": result.sparse, "iterations": result.iterations, "converged": result.converged,
    }));
    let dir = tempdir();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::to_string(&cases).expect("json")).expect("write");
    let stdout = ok(&python_script(
        "reference_rpca.py",
        &[path.to_str().expect("utf-8")],
    ));
    println!("{stdout}");
    assert!(stdout.contains("rpca matches on 5 matrices"), "{stdout}");
}

/// Every method of `prefsmith clean` against the independent numpy reference
/// (`tests/python/reference_clean_methods.py`, written from `docs/ALGORITHMS.md` §5 alone) on
/// random and hand-made prompts.
#[test]
fn every_method_matches_the_numpy_reference() {
    let stdout = ok(&python_script(
        "check_clean_methods.py",
        &[
            "--prefsmith",
            env!("CARGO_BIN_EXE_prefsmith"),
            "--prompts",
            "60",
        ],
    ));
    assert!(
        stdout.contains("clean methods match the reference on 64 prompts"),
        "{stdout}"
    );
    let stdout = ok(&python_script(
        "reference_clean_methods.py",
        &["--self-test"],
    ));
    assert!(stdout.contains("ok ("), "{stdout}");
}

/// The reduced recovery grid (`benches/clean_grid.py --reduced`, `docs/ALGORITHMS.md` §5.14)
/// through the stage: the default must obey the no-harm rule on fixed seeds.
#[test]
fn the_default_method_does_no_harm_on_the_reduced_grid() {
    let output = Command::new(python())
        .arg(repo().join("benches/clean_grid.py"))
        .args([
            "--prefsmith",
            env!("CARGO_BIN_EXE_prefsmith"),
            "--reduced",
            "--check",
        ])
        .output()
        .expect("python runs");
    let stdout = ok(&output);
    println!("{stdout}");
    assert!(
        stdout.contains("No-harm failures (bt-trim): 0 of 24; gain failures: 0 of 4"),
        "{stdout}"
    );
}

#[test]
fn clean_then_select_on_the_arena_data() {
    let dir = tempdir();
    let cleaned = dir.path().join("cleaned");
    let pairs = dir.path().join("pairs");
    let stdout = ok(&prefsmith(&[
        "clean",
        "--input",
        &data("arena_bench_v1_scored.parquet"),
        "--output",
        cleaned.to_str().expect("utf-8"),
    ]));
    assert!(
        stdout.contains("clean: 300 rows") && stdout.contains("(wide layout, method pcp)"),
        "{stdout}"
    );
    let m = manifest(&cleaned);
    assert_eq!(m["stats"]["prompts"], 300);
    assert_eq!(m["stats"]["non_converged"], 0);
    // What cleaning can and cannot find on scores is said in the manifest and on stdout.
    let note = m["stats"]["note"].as_str().unwrap_or("");
    assert!(
        note.contains("rank-2") && note.contains("cannot find a single wrong comparison"),
        "{note}"
    );
    assert_eq!(m["stats"]["method"], "pcp");
    assert!(
        stdout.contains("clean: note: scores give a rank-2 matrix"),
        "{stdout}"
    );
    let stdout = ok(&prefsmith(&[
        "select",
        "--input",
        cleaned.to_str().expect("utf-8"),
        "--output",
        pairs.to_str().expect("utf-8"),
        "--reward-column",
        "clean_scores",
    ]));
    assert!(stdout.contains("select: 299 pairs"), "{stdout}");
    // Invalid rewards stay out: the cleaned lists hold nulls exactly where the rewards are
    // not finite, and every finite reward has a cleaned score.
    let stdout = ok(&prefsmith(&[
        "sql",
        "SELECT sum(CASE WHEN (s IS NULL OR isnan(s) OR s IN ('inf'::double, '-inf'::double)) = (c IS NULL) THEN 0 ELSE 1 END) AS mismatched, count(*) AS n \
         FROM (SELECT unnest(all_rm_scores) AS s, unnest(clean_scores) AS c FROM t)",
        "--table",
        &format!("t={}", cleaned.display()),
    ]));
    assert!(stdout.contains("| 0          | 4200 |"), "{stdout}");
}

#[test]
fn long_layout_and_comparisons_with_edge_cases() {
    let dir = tempdir();
    let long = dir.path().join("long.parquet");
    // Prompt a: an outlier response (index 3); b: two responses (passed through); c: all equal;
    // d: a NaN score (left out).
    ok(&prefsmith(&[
        "sql",
        "SELECT * FROM (VALUES \
         ('a', 'pa', 0, 'r', 1.0), ('a', 'pa', 1, 'r', 2.0), ('a', 'pa', 2, 'r', 3.0), ('a', 'pa', 3, 'r', -40.0), ('a', 'pa', 4, 'r', 4.0), \
         ('b', 'pb', 0, 'r', 1.0), ('b', 'pb', 1, 'r', 5.0), \
         ('c', 'pc', 0, 'r', 2.0), ('c', 'pc', 1, 'r', 2.0), ('c', 'pc', 2, 'r', 2.0), \
         ('d', 'pd', 0, 'r', 1.0), ('d', 'pd', 1, 'r', 'NaN'::double), ('d', 'pd', 2, 'r', 3.0), ('d', 'pd', 3, 'r', 2.0)) \
         AS t(prompt_id, prompt, response_index, response, reward)",
        "--output",
        long.to_str().expect("utf-8"),
    ]));
    let cleaned = dir.path().join("cleaned");
    let stdout = ok(&prefsmith(&[
        "clean",
        "--input",
        long.to_str().expect("utf-8"),
        "--output",
        cleaned.to_str().expect("utf-8"),
    ]));
    // d (n = 3 after the NaN is left out) is degenerate: the solver would call every
    // comparison corrupt, so it is passed through instead.
    assert!(
        stdout.contains("prompts 4, cleaned 1, passed through 3 (degenerate 1)"),
        "{stdout}"
    );
    let m = manifest(&cleaned);
    assert_eq!(m["stats"]["excluded_non_finite_scores"], 1);
    let stdout = ok(&prefsmith(&[
        "sql",
        "SELECT prompt_id || ':' || response_index || '=' || coalesce(CAST(round(clean_score, 6) AS VARCHAR), 'null') \
         || '/' || coalesce(CAST(clean_rank AS VARCHAR), 'null') || '/' || coalesce(CAST(flagged_comparisons AS VARCHAR), 'null') AS r \
         FROM t ORDER BY prompt_id, response_index",
        "--table",
        &format!("t={}", cleaned.display()),
    ]));
    for row in [
        // The outlier of a is flagged against each of the other four responses.
        "a:3=-2.491431/5/4",
        "a:4=1.822858/1/1",
        // b passes through: Borda of X = (s_i − mean)/T.
        "b:0=-2.0/2/0",
        // c: all equal, ranks by index.
        "c:2=0.0/3/0",
        // d: the NaN response has no score, the others their uncleaned Borda scores.
        "d:1=null/null/null",
        "d:2=1.0/1/0",
        "d:0=-1.0/3/0",
    ] {
        assert!(stdout.contains(row), "missing {row} in\n{stdout}");
    }
    let pairs = dir.path().join("pairs");
    let stdout = ok(&prefsmith(&[
        "select",
        "--input",
        cleaned.to_str().expect("utf-8"),
        "--output",
        pairs.to_str().expect("utf-8"),
        "--reward-column",
        "clean_score",
    ]));
    assert!(stdout.contains("select: 3 pairs"), "{stdout}");

    // Comparisons: two judgments of one pair averaged; an out-of-range outcome is named.
    let judgments = dir.path().join("judgments.parquet");
    ok(&prefsmith(&[
        "sql",
        "SELECT * FROM (VALUES ('p', 0, 1, 0.9), ('p', 1, 2, 0.8), ('p', 0, 2, 0.95), ('p', 2, 3, 0.7), ('p', 0, 3, 0.99), ('p', 1, 3, 0.1), ('p', 3, 1, 0.2)) AS t(prompt_id, i, j, outcome)",
        "--output",
        judgments.to_str().expect("utf-8"),
    ]));
    let out = dir.path().join("from-judgments");
    let stdout = ok(&prefsmith(&[
        "clean",
        "--input",
        judgments.to_str().expect("utf-8"),
        "--output",
        out.to_str().expect("utf-8"),
    ]));
    assert!(
        stdout.contains("clean: 4 rows") && stdout.contains("(comparisons layout, method bt-trim)"),
        "{stdout}"
    );
    let bad = dir.path().join("bad.parquet");
    ok(&prefsmith(&[
        "sql",
        "SELECT 'p' AS prompt_id, 0 AS i, 1 AS j, 1.5 AS outcome",
        "--output",
        bad.to_str().expect("utf-8"),
    ]));
    let stderr = fails(
        &prefsmith(&[
            "clean",
            "--input",
            bad.to_str().expect("utf-8"),
            "--output",
            dir.path().join("x").to_str().expect("utf-8"),
        ]),
        1,
    );
    assert!(
        stderr.contains("row 0") && stderr.contains("outcome must be in [0, 1]"),
        "{stderr}"
    );
    // Each bad judgment is named by its row (the second row: row 1).
    for (k, (row, message)) in [
        (
            "('p', 2, 2, 1.0)",
            "i = j = 2: a response judged against itself",
        ),
        (
            "('p', -1, 2, 1.0)",
            "response indices are 0-based, got (-1, 2)",
        ),
        ("('p', 1, 2, 'NaN'::double)", "outcome is NaN"),
    ]
    .into_iter()
    .enumerate()
    {
        let bad = dir.path().join(format!("bad-{k}.parquet"));
        ok(&prefsmith(&[
            "sql",
            &format!(
                "SELECT * FROM (VALUES ('p', 0, 1, 1.0), {row}) AS t(prompt_id, i, j, outcome)"
            ),
            "--output",
            bad.to_str().expect("utf-8"),
        ]));
        let stderr = fails(
            &prefsmith(&[
                "clean",
                "--input",
                bad.to_str().expect("utf-8"),
                "--output",
                dir.path().join(format!("x-{k}")).to_str().expect("utf-8"),
            ]),
            1,
        );
        assert!(
            stderr.contains("row 1") && stderr.contains(message),
            "{row}: {stderr}"
        );
    }
    // A judgment-only method on scores is refused by name.
    let stderr = fails(
        &prefsmith(&[
            "clean",
            "--input",
            cleaned.to_str().expect("utf-8"),
            "--method",
            "bt-mle",
            "--output",
            dir.path().join("scores-bt").to_str().expect("utf-8"),
        ]),
        2,
    );
    assert!(
        stderr.contains("method") && stderr.contains("needs pairwise judgments"),
        "{stderr}"
    );
}

/// `synth` (long layout) into `dir/synth`, then `clean` into `dir/<output>`; clean's stdout.
fn synth_then_clean(dir: &std::path::Path, prompts: u32, responses: u32, output: &str) -> String {
    let path = |name: &str| dir.join(name).display().to_string();
    let (prompts, responses) = (prompts.to_string(), responses.to_string());
    ok(&prefsmith(&[
        "synth",
        "--prompts",
        &prompts,
        "--responses",
        &responses,
        "--output",
        &path("synth"),
    ]));
    ok(&prefsmith(&[
        "clean",
        "--input",
        &path("synth"),
        "--output",
        &path(output),
    ]))
}

#[test]
fn synthetic_corrupted_data_clean_then_select() {
    // synth's rewards carry 2 % degenerate low outliers: exactly what cleaning flags.
    let dir = tempdir();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let stdout = synth_then_clean(dir.path(), 200, 8, "cleaned");
    assert!(
        stdout.contains("prompts 200") && stdout.contains("not converged 0"),
        "{stdout}"
    );
    let flagged = manifest(&dir.path().join("cleaned"))["stats"]["flagged_comparisons"]
        .as_u64()
        .expect("a count");
    assert!(flagged > 0, "{stdout}");
    let stdout = ok(&prefsmith(&[
        "select",
        "--input",
        &path("cleaned"),
        "--output",
        &path("pairs"),
        "--reward-column",
        "clean_score",
    ]));
    assert!(stdout.contains("select: 200 pairs"), "{stdout}");
}

#[test]
fn large_inputs_stream_in_prompt_order_and_equal_a_whole_read() {
    // 5,000 prompts × 16 = 80,000 rows: more than one 65,536-row chunk, cut mid-batch at a
    // prompt boundary. The same rows interleaved across prompts must take the whole-input
    // path and give the same cleaning, row for row.
    let dir = tempdir();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let stdout = synth_then_clean(dir.path(), 5000, 16, "streamed");
    assert!(
        stdout.contains("prompts 5000") && stdout.contains("not converged 0"),
        "{stdout}"
    );
    let streamed = manifest(&dir.path().join("streamed"));
    assert_eq!(streamed["stats"]["plan"], "streaming", "{streamed}");
    ok(&prefsmith(&[
        "sql",
        "SELECT * FROM synth ORDER BY response_index, prompt_id",
        "--table",
        &format!("synth={}", path("synth")),
        "--output",
        &path("interleaved.parquet"),
    ]));
    ok(&prefsmith(&[
        "clean",
        "--input",
        &path("interleaved.parquet"),
        "--output",
        &path("whole"),
    ]));
    let whole = manifest(&dir.path().join("whole"));
    assert_eq!(whole["stats"]["plan"], "whole", "{whole}");
    for key in [
        "prompts",
        "solved",
        "flagged_comparisons",
        "mean_iterations",
        "max_residual",
    ] {
        assert_eq!(streamed["stats"][key], whole["stats"][key], "{key}");
    }
    let compared = same_cleaning(&dir.path().join("streamed"), &dir.path().join("whole"));
    assert!(compared.contains("| 80000 | 80000 |"), "{compared}");
    // The streamed output records that it is in prompt id order: select streams it in turn.
    ok(&prefsmith(&[
        "select",
        "--input",
        &path("streamed"),
        "--output",
        &path("pairs"),
        "--reward-column",
        "clean_score",
    ]));
    assert_eq!(
        manifest(&dir.path().join("pairs"))["stats"]["plan"],
        "long-streaming"
    );
}

#[test]
fn judgments_in_prompt_order_stream_and_equal_a_whole_read() {
    // 1,500 prompts × 8 responses × 28 pairs × 2 judgments = 84,000 rows: more than one chunk.
    // The same judgments shuffled across prompts take the whole-input path; both give the same
    // rows, and a bad row in a later chunk is named by its row over the whole input.
    let dir = tempdir();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let judgments = "SELECT 'p' || lpad(CAST(p AS VARCHAR), 5, '0') AS prompt_id, a AS i, b AS j, \
         CASE WHEN (p * 7 + a * 3 + b * 5 + k) % 10 < 7 + (CASE WHEN a < b THEN 1 ELSE -1 END) \
              THEN 1.0 ELSE 0.0 END AS outcome \
         FROM generate_series(0, 1499) AS x(p), generate_series(0, 7) AS y(a), \
              generate_series(0, 7) AS z(b), generate_series(0, 1) AS w(k) WHERE a < b";
    ok(&prefsmith(&[
        "sql",
        &format!("SELECT * FROM ({judgments}) ORDER BY prompt_id, i, j"),
        "--output",
        &path("ordered.parquet"),
    ]));
    ok(&prefsmith(&[
        "sql",
        &format!("SELECT * FROM ({judgments}) ORDER BY i, j, prompt_id"),
        "--output",
        &path("shuffled.parquet"),
    ]));
    for (input, output) in [
        ("ordered.parquet", "streamed"),
        ("shuffled.parquet", "whole"),
    ] {
        ok(&prefsmith(&[
            "clean",
            "--input",
            &path(input),
            "--output",
            &path(output),
        ]));
    }
    let streamed = manifest(&dir.path().join("streamed"));
    let whole = manifest(&dir.path().join("whole"));
    assert_eq!(streamed["stats"]["plan"], "streaming", "{streamed}");
    assert_eq!(whole["stats"]["plan"], "whole", "{whole}");
    for key in [
        "prompts",
        "solved",
        "flagged_comparisons",
        "mean_iterations",
    ] {
        assert_eq!(streamed["stats"][key], whole["stats"][key], "{key}");
    }
    assert_eq!(streamed["stats"]["prompts"], 1500);
    let compared = same_cleaning(&dir.path().join("streamed"), &dir.path().join("whole"));
    assert!(compared.contains("| 12000 | 12000 |"), "{compared}");
    // A bad judgment past the first chunk: named by its row over the whole input.
    ok(&prefsmith(&[
        "sql",
        &format!(
            "SELECT prompt_id, i, CASE WHEN prompt_id = 'p01400' AND i = 0 AND j = 1 THEN 0 ELSE j END AS j, outcome \
             FROM ({judgments}) ORDER BY prompt_id, i, j"
        ),
        "--output",
        &path("bad.parquet"),
    ]));
    let stderr = fails(
        &prefsmith(&[
            "clean",
            "--input",
            &path("bad.parquet"),
            "--output",
            &path("bad"),
        ]),
        1,
    );
    // Prompt p01400 starts at row 1400 × 56; its first two rows are (0, 1) judged twice.
    assert!(
        stderr.contains("row 78400") && stderr.contains("i = j = 0"),
        "{stderr}"
    );
}

/// Joins two clean outputs on (prompt_id, response_index): the `rows | same` table, `same`
/// counting the rows whose score, rank and flags are equal.
fn same_cleaning(a: &std::path::Path, b: &std::path::Path) -> String {
    ok(&prefsmith(&[
        "sql",
        "SELECT count(*) AS rows, \
         sum(CASE WHEN a.clean_score = b.clean_score AND a.clean_rank = b.clean_rank \
             AND a.flagged_comparisons = b.flagged_comparisons THEN 1 ELSE 0 END) AS same \
         FROM a JOIN b ON a.prompt_id = b.prompt_id AND a.response_index = b.response_index",
        "--table",
        &format!("a={}", a.display()),
        "--table",
        &format!("b={}", b.display()),
    ]))
}
