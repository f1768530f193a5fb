//! Bad input gets a clear error naming the file, column or key, exit code 1 (data) or 2
//! (usage), and never leaves an output that looks complete.

use std::path::Path;
use std::process::Output;

use crate::common::{data, fails, ok, prefsmith, python, tempdir};

/// Writes a Parquet file with pyarrow from a Python expression building `table`.
fn parquet(path: &Path, table_expr: &str) {
    let script = format!(
        "import pyarrow as pa, pyarrow.parquet as pq\ntable = {table_expr}\npq.write_table(table, {:?})\n",
        path.display().to_string()
    );
    let out = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("python");
    ok(&out);
}

fn select(input: &Path, output: &Path) -> Output {
    prefsmith(&[
        "select",
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        output.to_str().expect("utf-8"),
    ])
}

/// The stage failed: the message names what it must, and no manifest exists.
fn failed_cleanly(out: &Output, output_dir: &Path, code: i32, needles: &[&str]) {
    let stderr = fails(out, code);
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    assert!(
        !output_dir.join("_manifest.json").exists(),
        "a failed stage left a manifest"
    );
}

#[test]
fn missing_column_is_named() {
    let dir = tempdir();
    let input = dir.path().join("in.parquet");
    parquet(
        &input,
        "pa.table({'prompt_id': ['a'], 'prompt': ['p'], 'reward': [1.0]})",
    );
    let out = dir.path().join("out");
    failed_cleanly(
        &select(&input, &out),
        &out,
        1,
        &["in.parquet", "missing column 'response'"],
    );
}

#[test]
fn wrong_type_is_named() {
    let dir = tempdir();
    let input = dir.path().join("in.parquet");
    parquet(
        &input,
        "pa.table({'prompt_id': ['a'], 'prompt': ['p'], 'response': ['r'], 'reward': ['high']})",
    );
    let out = dir.path().join("out");
    failed_cleanly(
        &select(&input, &out),
        &out,
        1,
        &[
            "in.parquet",
            "column 'reward' has type Utf8",
            "expected a number",
        ],
    );
}

#[test]
fn list_length_mismatch_names_file_and_prompt() {
    let dir = tempdir();
    let shards = dir.path().join("shards");
    std::fs::create_dir(&shards).expect("mkdir");
    parquet(
        &shards.join("a.parquet"),
        "pa.table({'prompt_id': ['x'], 'prompt': ['p'], 'all_generated_responses': [['r1', 'r2']], 'all_rm_scores': [[1.0, 2.0]]})",
    );
    parquet(
        &shards.join("b.parquet"),
        "pa.table({'prompt_id': ['y'], 'prompt': ['q'], 'all_generated_responses': [['r1', 'r2', 'r3']], 'all_rm_scores': [[1.0, 2.0]]})",
    );
    let out = dir.path().join("out");
    failed_cleanly(
        &select(&shards, &out),
        &out,
        1,
        &[
            "b.parquet",
            "prompt_id y",
            "'all_generated_responses' has 3 entries but 'all_rm_scores' has 2",
        ],
    );
}

#[test]
fn corrupt_and_truncated_parquet_are_named() {
    let dir = tempdir();
    let not_parquet = dir.path().join("notes.parquet");
    std::fs::write(&not_parquet, "this is not parquet").expect("write");
    let out = dir.path().join("out");
    failed_cleanly(
        &select(&not_parquet, &out),
        &out,
        1,
        &["notes.parquet", "not a readable Parquet file"],
    );

    let truncated = dir.path().join("truncated.parquet");
    let bytes = std::fs::read(data("arena_bench_v1_scored.parquet")).expect("arena");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    failed_cleanly(
        &select(&truncated, &out),
        &out,
        1,
        &["truncated.parquet", "not a readable Parquet file"],
    );
}

#[test]
fn empty_and_missing_inputs() {
    let dir = tempdir();
    let empty = dir.path().join("empty.parquet");
    parquet(
        &empty,
        "pa.table({'prompt_id': pa.array([], pa.string()), 'prompt': pa.array([], pa.string()), 'response': pa.array([], pa.string()), 'reward': pa.array([], pa.float64())})",
    );
    let out = dir.path().join("out");
    failed_cleanly(
        &select(&empty, &out),
        &out,
        1,
        &["empty.parquet", "input has no rows"],
    );
    failed_cleanly(
        &select(&dir.path().join("nowhere"), &out),
        &out,
        1,
        &["nowhere", "no such file or directory"],
    );
    let empty_dir = dir.path().join("nothing");
    std::fs::create_dir(&empty_dir).expect("mkdir");
    failed_cleanly(
        &select(&empty_dir, &out),
        &out,
        1,
        &["nothing", "no Parquet files found"],
    );
}

#[test]
fn unknown_config_keys_and_bad_values() {
    let dir = tempdir();
    let config = dir.path().join("select.toml");
    std::fs::write(&config, "strategy = \"max-min\"\ntop-k = 5\n").expect("write");
    let out = dir.path().join("out");
    let arena = data("arena_bench_v1_scored.parquet");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "select",
            "--input",
            arena.as_str(),
            "--output",
            out.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        prefsmith(&args)
    };
    failed_cleanly(
        &run(&["--config", config.to_str().expect("utf-8")]),
        &out,
        2,
        &["select.toml", "top-k"],
    );
    std::fs::write(&config, "[columns]\nreward = \"score\"\nscore = \"x\"\n").expect("write");
    failed_cleanly(
        &run(&["--config", config.to_str().expect("utf-8")]),
        &out,
        2,
        &["select.toml", "score"],
    );
    failed_cleanly(
        &run(&["--strategy", "best"]),
        &out,
        2,
        &["unknown strategy 'best'"],
    );
    failed_cleanly(
        &run(&["--chosen-k", "1"]),
        &out,
        2,
        &["only apply to strategy 'positions'"],
    );
    failed_cleanly(
        &run(&[
            "--strategy",
            "positions",
            "--chosen-k",
            "up",
            "--rejected-k",
            "-2",
        ]),
        &out,
        2,
        &["'up' is not a position"],
    );
    failed_cleanly(&run(&["--ddof", "2"]), &out, 2, &["ddof"]);
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[[stages]]\nkind = \"select\"\ninput = \"x\"\noutput = \"y\"\nstratgy = \"max-min\"\n",
    )
    .expect("write");
    let stderr = fails(&prefsmith(&["run", job.to_str().expect("utf-8")]), 2);
    assert!(
        stderr.contains("job.toml") && stderr.contains("stratgy"),
        "{stderr}"
    );
}

#[test]
fn failed_rerun_leaves_no_complete_looking_output() {
    let dir = tempdir();
    let out = dir.path().join("pairs");
    let arena = data("arena_bench_v1_scored.parquet");
    ok(&prefsmith(&[
        "select",
        "--input",
        &arena,
        "--output",
        out.to_str().expect("utf-8"),
        "--max-rows-per-file",
        "10",
    ]));
    assert!(out.join("_manifest.json").exists());
    // A rerun that fails mid-way (the second shard has a bad row, found after parts were
    // written) must delete the old manifest first: the directory then reads as incomplete.
    let shards = dir.path().join("shards");
    std::fs::create_dir(&shards).expect("mkdir");
    std::fs::copy(&arena, shards.join("a.parquet")).expect("copy");
    parquet(
        &shards.join("b.parquet"),
        "pa.table({'question_id': ['zz'], 'prompt': ['\\uffff last'], 'models': [['m']], 'all_generated_responses': [['r1', 'r2']], 'all_rm_scores': [[1.0]], 'reference_answer': ['x']})",
    );
    let result = prefsmith(&[
        "select",
        "--input",
        shards.to_str().expect("utf-8"),
        "--output",
        out.to_str().expect("utf-8"),
        "--max-rows-per-file",
        "10",
    ]);
    failed_cleanly(&result, &out, 1, &["b.parquet"]);
    let stderr = fails(
        &prefsmith(&[
            "select",
            "--input",
            out.to_str().expect("utf-8"),
            "--output",
            dir.path().join("next").to_str().expect("utf-8"),
        ]),
        1,
    );
    assert!(stderr.contains("incomplete stage output"), "{stderr}");
    let stdout = ok(&prefsmith(&["inspect", out.to_str().expect("utf-8")]));
    assert!(stdout.contains("incomplete"), "{stdout}");
}
