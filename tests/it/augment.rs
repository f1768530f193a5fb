//! The `augment` stage on the shipped UltraFeedback pairs, checked row by row (template byte for
//! byte, roles, scores, order) by an independent pyarrow script.

use std::process::Command;

use crate::common::{data, fails, manifest, ok, prefsmith, python, tempdir};

/// The released template, written out here independently of the Rust constant.
const TEMPLATE: &str = "You are an assistant that generates responses for the instruction while implicitly achieving the following target scores (on a scale of 1-10, where 1 is lowest and 10 is highest):\\nOverall score: {score}.";

#[test]
fn ultrafeedback_two_copies_per_untied_pair() {
    let dir = tempdir();
    let out = dir.path().join("augmented");
    let stdout = ok(&prefsmith(&[
        "augment",
        "--input",
        &data("ultrafeedback_binarized_1k.parquet"),
        "--output",
        out.to_str().expect("utf-8"),
    ]));
    // 1000 pairs, 111 with equal scores: 2 × 889 rows.
    assert!(
        stdout.contains("augment: 1778 rows") && stdout.contains("111 dropped"),
        "{stdout}"
    );
    assert_eq!(manifest(&out)["stats"]["dropped_equal_scores"], 111);
    let script = format!(
        "import glob, pyarrow.parquet as pq, pyarrow as pa\n\
         TEMPLATE = \"{TEMPLATE}\"\n\
         def fmt(s):\n    return str(int(s)) if float(s).is_integer() else repr(float(s))\n\
         def last_assistant(msgs):\n    return [m['content'] for m in msgs if m['role'] == 'assistant'][-1]\n\
         src = pq.read_table({src:?}).to_pylist()\n\
         src = [r for r in src if r['score_chosen'] != r['score_rejected']]\n\
         src.sort(key=lambda r: r['prompt_id'].encode())\n\
         expected = []\n\
         for r in src:\n\
         \x20   c, j = last_assistant(r['chosen']), last_assistant(r['rejected'])\n\
         \x20   expected.append((r['prompt_id'], TEMPLATE.replace('{{score}}', fmt(r['score_chosen'])) + '\\n\\n' + r['prompt'], c, j, r['score_chosen'], r['score_rejected'], 'positive'))\n\
         \x20   expected.append((r['prompt_id'], TEMPLATE.replace('{{score}}', fmt(r['score_rejected'])) + '\\n\\n' + r['prompt'], j, c, r['score_rejected'], r['score_chosen'], 'negative'))\n\
         out = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob({out:?} + '/part-*.parquet'))]).to_pylist()\n\
         actual = [(r['prompt_id'], r['prompt'], r['chosen'], r['rejected'], r['score_chosen'], r['score_rejected'], r['copy']) for r in out]\n\
         assert len(actual) == len(expected) == 1778, (len(actual), len(expected))\n\
         bad = [i for i, (a, e) in enumerate(zip(actual, expected)) if a != e]\n\
         assert not bad, (bad[:3], actual[bad[0]][:2] if bad else None, expected[bad[0]][:2] if bad else None)\n\
         print('augment matches on', len(actual), 'rows')\n",
        src = data("ultrafeedback_binarized_1k.parquet"),
        out = out.display().to_string(),
    );
    let stdout = ok(&Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("python"));
    assert!(stdout.contains("augment matches on 1778 rows"), "{stdout}");
}

#[test]
fn pair_table_swaps_every_chosen_rejected_column() {
    let dir = tempdir();
    let pairs = dir.path().join("pairs");
    ok(&prefsmith(&[
        "select",
        "--input",
        &data("arena_bench_v1_scored.parquet"),
        "--output",
        pairs.to_str().expect("utf-8"),
    ]));
    let out = dir.path().join("augmented");
    ok(&prefsmith(&[
        "augment",
        "--input",
        pairs.to_str().expect("utf-8"),
        "--output",
        out.to_str().expect("utf-8"),
    ]));
    let stdout = ok(&prefsmith(&[
        "sql",
        "SELECT count(*) AS n, \
         sum(CASE WHEN p.copy = 'negative' AND p.chosen_index = s.rejected_index AND p.rejected_index = s.chosen_index \
                  AND p.chosen = s.rejected AND p.rating_gap = -s.rating_gap THEN 1 ELSE 0 END) AS swapped, \
         sum(CASE WHEN p.copy = 'positive' AND p.chosen_index = s.chosen_index AND p.chosen = s.chosen THEN 1 ELSE 0 END) AS kept \
         FROM p JOIN s ON p.prompt_id = s.prompt_id",
        "--table",
        &format!("p={}", out.display()),
        "--table",
        &format!("s={}", pairs.display()),
    ]));
    assert!(stdout.contains("| 598 | 299     | 299  |"), "{stdout}");
}

#[test]
fn missing_scores_are_named() {
    let dir = tempdir();
    let out = dir.path().join("augmented");
    let stderr = fails(
        &prefsmith(&[
            "augment",
            "--input",
            &data("arena_bench_v1_scored.parquet"),
            "--output",
            out.to_str().expect("utf-8"),
        ]),
        1,
    );
    assert!(
        stderr.contains("missing column 'prompt_id'") || stderr.contains("missing column 'chosen'"),
        "{stderr}"
    );
    assert!(!out.join("_manifest.json").exists());
}
