//! `export` to the layouts trainers read (TRL standard and conversational, OpenRLHF, NeMo),
//! checked with pyarrow against the UltraFeedback source; and conversational round trips.

use std::path::Path;
use std::process::Command;

use crate::common::{data, fails, ok, prefsmith, python, tempdir};

fn export(input: &str, out: &Path, format: &str) {
    let stdout = ok(&prefsmith(&[
        "export",
        "--input",
        input,
        "--output",
        out.to_str().expect("utf-8"),
        "--format",
        format,
    ]));
    assert!(stdout.contains(&format!("as {format}")), "{stdout}");
}

fn python_ok(script: &str) -> String {
    ok(&Command::new(python())
        .args(["-c", script])
        .output()
        .expect("python"))
}

#[test]
fn every_format_from_ultrafeedback() {
    let dir = tempdir();
    let uf = data("ultrafeedback_binarized_1k.parquet");
    for format in ["trl-standard", "trl-conversational", "openrlhf", "nemo"] {
        export(&uf, &dir.path().join(format), format);
    }
    let script = format!(
        "import pyarrow.parquet as pq\n\
         src = pq.read_table({uf:?}).to_pylist()\n\
         def read(f):\n    return pq.read_table({dir:?} + '/' + f + '/part-00000.parquet')\n\
         def last(msgs, role):\n    return [m['content'] for m in msgs if m['role'] == role][-1]\n\
         std, conv, orl, nemo = (read(f) for f in ['trl-standard', 'trl-conversational', 'openrlhf', 'nemo'])\n\
         assert std.column_names == ['prompt_id', 'prompt', 'chosen', 'rejected', 'score_chosen', 'score_rejected', 'source_index'], std.column_names\n\
         assert orl.column_names[:5] == ['prompt_id', 'prompt', 'chosen', 'rejected', 'margin'], orl.column_names\n\
         assert nemo.column_names[:6] == ['prompt_id', 'prompt', 'chosen_response', 'rejected_response', 'chosen_reward', 'rejected_reward'], nemo.column_names\n\
         assert 'score_chosen' in nemo.column_names and 'score_chosen' in conv.column_names\n\
         std, conv, orl, nemo = (t.to_pylist() for t in (std, conv, orl, nemo))\n\
         for r, s, c, o, n in zip(src, std, conv, orl, nemo):\n\
         \x20   prompt, chosen, rejected = last(r['chosen'], 'user'), last(r['chosen'], 'assistant'), last(r['rejected'], 'assistant')\n\
         \x20   assert (s['prompt_id'], s['prompt'], s['chosen'], s['rejected'], s['score_chosen'], s['score_rejected']) == (r['prompt_id'], prompt, chosen, rejected, r['score_chosen'], r['score_rejected'])\n\
         \x20   assert c['prompt'] == [{{'content': prompt, 'role': 'user'}}] and c['chosen'] == [{{'content': chosen, 'role': 'assistant'}}] and c['rejected'] == [{{'content': rejected, 'role': 'assistant'}}]\n\
         \x20   assert (o['prompt'], o['chosen'], o['margin']) == (prompt, chosen, r['score_chosen'] - r['score_rejected'])\n\
         \x20   assert (n['chosen_response'], n['rejected_response'], n['chosen_reward'], n['rejected_reward']) == (chosen, rejected, r['score_chosen'], r['score_rejected'])\n\
         print('exports match on', len(src), 'rows')\n",
        dir = dir.path().display().to_string(),
    );
    assert!(python_ok(&script).contains("exports match on 1000 rows"));
}

#[test]
fn conversational_round_trip_keeps_the_goal() {
    // augment(TRL conversational) exported as strings must equal augment(strings): the system
    // message becomes the prepended text.
    let dir = tempdir();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let uf = data("ultrafeedback_binarized_1k.parquet");
    export(&uf, &dir.path().join("conv"), "trl-conversational");
    export(&uf, &dir.path().join("std"), "trl-standard");
    for (input, output) in [("conv", "conv-aug"), ("std", "std-aug")] {
        ok(&prefsmith(&[
            "augment",
            "--input",
            &path(input),
            "--output",
            &path(output),
        ]));
    }
    export(
        &path("conv-aug"),
        &dir.path().join("conv-aug-std"),
        "trl-standard",
    );
    let script = format!(
        "import pyarrow.parquet as pq\n\
         a = pq.read_table({a:?} + '/part-00000.parquet').select(['prompt_id', 'prompt', 'chosen', 'rejected', 'copy']).to_pylist()\n\
         b = pq.read_table({b:?} + '/part-00000.parquet').select(['prompt_id', 'prompt', 'chosen', 'rejected', 'copy']).to_pylist()\n\
         assert a == b and len(a) == 1778, (len(a), len(b))\n\
         c = pq.read_table({c:?} + '/part-00000.parquet').to_pylist()[0]\n\
         assert c['prompt'][0]['role'] == 'system' and [m['role'] for m in c['chosen']] == ['assistant'], c['prompt']\n\
         print('round trip matches')\n",
        a = path("conv-aug-std"),
        b = path("std-aug"),
        c = path("conv-aug"),
    );
    assert!(python_ok(&script).contains("round trip matches"));
}

#[test]
fn unknown_format_and_responses_layout_are_named() {
    let dir = tempdir();
    let out = dir.path().join("x");
    let stderr = fails(
        &prefsmith(&[
            "export",
            "--input",
            &data("ultrafeedback_binarized_1k.parquet"),
            "--output",
            out.to_str().expect("utf-8"),
            "--format",
            "alpaca",
        ]),
        2,
    );
    assert!(
        stderr.contains("unknown export format 'alpaca'"),
        "{stderr}"
    );
    let stderr = fails(
        &prefsmith(&[
            "export",
            "--input",
            &data("arena_bench_v1_scored.parquet"),
            "--output",
            out.to_str().expect("utf-8"),
        ]),
        1,
    );
    assert!(stderr.contains("run `prefsmith select`"), "{stderr}");
    let stderr = fails(
        &prefsmith(&[
            "export",
            "--input",
            &data("ultrafeedback_binarized_1k.parquet"),
            "--output",
            out.to_str().expect("utf-8"),
            "--input-format",
            "plain",
        ]),
        1,
    );
    assert!(
        stderr.contains("'chosen'") && stderr.contains("input-format plain"),
        "{stderr}"
    );
    assert!(!out.join("_manifest.json").exists());
}
