//! The `route` stage (MixDPO's data side): hand-computed cases, an independent numpy ranking,
//! and bad input.

use std::path::Path;
use std::process::Command;

use crate::common::{data, fails, manifest, ok, prefsmith, python, tempdir};

fn write_pairs(path: &Path, prompt_ids: &str, gaps: &str) {
    let script = format!(
        "import pyarrow as pa, pyarrow.parquet as pq\n\
         ids = {prompt_ids}\n\
         pq.write_table(pa.table({{'prompt_id': ids, 'prompt': ['p'] * len(ids), 'chosen': ['c'] * len(ids), 'rejected': ['r'] * len(ids), 'rating_gap': pa.array({gaps}, pa.float64())}}), {:?})\n",
        path.display().to_string()
    );
    ok(&Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("python"));
}

/// `(prompt_id, route, curriculum_rank)` rows of a route output, in file order.
fn routed(dir: &Path) -> String {
    ok(&prefsmith(&[
        "sql",
        "SELECT prompt_id, route, curriculum_rank FROM t",
        "--table",
        &format!("t={}", dir.display()),
    ]))
}

#[test]
fn threshold_and_percentile_hand_computed() {
    let dir = tempdir();
    let input = dir.path().join("pairs.parquet");
    // Margins 1.0, 0.2, 1.0, 3.0, 0.5: ranks by margin descending, ties in input order.
    write_pairs(
        &input,
        "['a', 'b', 'c', 'd', 'e']",
        "[1.0, 0.2, 1.0, 3.0, 0.5]",
    );
    let out = dir.path().join("routed");
    let stdout = ok(&prefsmith(&[
        "route",
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        out.to_str().expect("utf-8"),
    ]));
    assert!(stdout.contains("dpo 4, sft 1 (threshold 0.5"), "{stdout}");
    let rows = routed(&out);
    for expected in [
        "| a         | dpo   | 2 ",
        "| b         | sft   | 5 ",
        "| c         | dpo   | 3 ",
        "| d         | dpo   | 1 ",
        "| e         | dpo   | 4 ",
    ] {
        assert!(rows.contains(expected), "missing {expected:?} in\n{rows}");
    }
    // 40 %: the two pairs last in curriculum order (e at 0.5, b at 0.2) go to SFT.
    let stdout = ok(&prefsmith(&[
        "route",
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        out.to_str().expect("utf-8"),
        "--route-percentile",
        "40",
    ]));
    assert!(stdout.contains("dpo 3, sft 2"), "{stdout}");
    let m = manifest(&out);
    assert_eq!(m["stats"]["min_dpo_margin"], 1.0);
}

#[test]
fn curriculum_matches_numpy_stable_argsort() {
    let dir = tempdir();
    let pairs = dir.path().join("pairs");
    ok(&prefsmith(&[
        "select",
        "--input",
        &data("arena_bench_v1_scored.parquet"),
        "--output",
        pairs.to_str().expect("utf-8"),
    ]));
    let out = dir.path().join("routed");
    ok(&prefsmith(&[
        "route",
        "--input",
        pairs.to_str().expect("utf-8"),
        "--output",
        out.to_str().expect("utf-8"),
        "--route-threshold",
        "6",
    ]));
    // numpy: rank = position in a stable argsort of -margin; route = margin >= 6; rows unchanged.
    let script = format!(
        "import glob, numpy as np, pyarrow.parquet as pq, pyarrow as pa\n\
         src = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob('{pairs}/part-*.parquet'))])\n\
         out = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob('{out}/part-*.parquet'))])\n\
         m = src.column('rating_gap').to_numpy()\n\
         order = np.argsort(-m, kind='stable')\n\
         rank = np.empty(len(m), dtype=np.int64); rank[order] = np.arange(1, len(m) + 1)\n\
         assert out.column('prompt_id').to_pylist() == src.column('prompt_id').to_pylist()\n\
         assert (out.column('curriculum_rank').to_numpy() == rank).all()\n\
         assert out.column('route').to_pylist() == ['dpo' if x >= 6 else 'sft' for x in m]\n\
         print('numpy agrees on', len(m), 'pairs')\n",
        pairs = pairs.display(),
        out = out.display()
    );
    let stdout = ok(&Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("python"));
    assert!(stdout.contains("numpy agrees on 299 pairs"), "{stdout}");
}

#[test]
fn bad_margins_and_settings_are_named() {
    let dir = tempdir();
    let input = dir.path().join("pairs.parquet");
    write_pairs(&input, "['a', 'b']", "[1.0, float('nan')]");
    let out = dir.path().join("routed");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "route",
            "--input",
            input.to_str().expect("utf-8"),
            "--output",
            out.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        prefsmith(&args)
    };
    let stderr = fails(&run(&[]), 1);
    assert!(
        stderr.contains("column 'rating_gap'")
            && stderr.contains("prompt_id b")
            && stderr.contains("NaN"),
        "{stderr}"
    );
    assert!(!out.join("_manifest.json").exists());
    let stderr = fails(&run(&["--margin-column", "gap"]), 1);
    assert!(stderr.contains("missing column 'gap'"), "{stderr}");
    let stderr = fails(&run(&["--route-percentile", "120"]), 2);
    assert!(stderr.contains("route-percentile"), "{stderr}");
    let stderr = fails(
        &run(&["--route-threshold", "1", "--route-percentile", "5"]),
        2,
    );
    assert!(stderr.contains("not both"), "{stderr}");
}
