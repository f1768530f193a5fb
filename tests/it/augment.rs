//! The `augment` stage on the shipped UltraFeedback pairs, checked row by row (template byte for
//! byte, roles, scores, order) by an independent pyarrow script.

use std::process::Command;

use crate::common::{data, fails, manifest, ok, prefsmith, python, tempdir};

/// The released template, written out here independently of the Rust constant.
const TEMPLATE: &str = "You are an assistant that generates responses for the instruction while implicitly achieving the following target scores (on a scale of 1-10, where 1 is lowest and 10 is highest):\\nOverall score: {score}.";

/// Where the goal is expected.
#[derive(Clone, Copy)]
enum Expect {
    /// Message lists with a system message in front (the default for conversational input).
    SystemMessage,
    /// Message lists with the goal prepended to the user turn, and to the prompt string.
    PrependToLists,
    /// Plain strings, the goal prepended to the prompt.
    PrependToString,
}

/// Augments `input` with `flags` and checks every row against the UltraFeedback source with
/// pyarrow: 2 × (1000 − 111 ties) rows, template byte for byte, roles swapped, sorted order.
fn augment_and_check(input: &str, flags: &[&str], expect: Expect) {
    let dir = tempdir();
    let out = dir.path().join("augmented");
    let mut args = vec![
        "augment",
        "--input",
        input,
        "--output",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(flags);
    let stdout = ok(&prefsmith(&args));
    // 1000 pairs, 111 with equal scores: 2 × 889 rows.
    assert!(
        stdout.contains("augment: 1778 rows") && stdout.contains("111 dropped"),
        "{stdout}"
    );
    assert_eq!(manifest(&out)["stats"]["dropped_equal_scores"], 111);
    let mode = match expect {
        Expect::SystemMessage => "system",
        Expect::PrependToLists => "prepend-lists",
        Expect::PrependToString => "prepend-string",
    };
    let script = format!(
        "import glob, pyarrow.parquet as pq, pyarrow as pa\n\
         TEMPLATE = \"{TEMPLATE}\"\n\
         MODE = {mode:?}\n\
         def fmt(s):\n    return str(int(s)) if float(s).is_integer() else repr(float(s))\n\
         def last_assistant(msgs):\n    return [m['content'] for m in msgs if m['role'] == 'assistant'][-1]\n\
         def cond(msgs, goal):\n\
         \x20   msgs = [dict(m) for m in msgs]\n\
         \x20   if MODE == 'system':\n        return [{{'content': goal, 'role': 'system'}}] + msgs\n\
         \x20   user = [m for m in msgs if m['role'] == 'user'][0]\n\
         \x20   user['content'] = goal + '\\n\\n' + user['content']\n\
         \x20   return msgs\n\
         def copy(r, score, c, j, sc, sj, name):\n\
         \x20   goal = TEMPLATE.replace('{{score}}', fmt(score))\n\
         \x20   if MODE == 'prepend-string':\n\
         \x20       return (r['prompt_id'], goal + '\\n\\n' + r['prompt'], last_assistant(c), last_assistant(j), sc, sj, name)\n\
         \x20   prompt = r['prompt'] if MODE == 'system' else goal + '\\n\\n' + r['prompt']\n\
         \x20   return (r['prompt_id'], prompt, cond(c, goal), cond(j, goal), sc, sj, name)\n\
         src = pq.read_table({src:?}).to_pylist()\n\
         src = [r for r in src if r['score_chosen'] != r['score_rejected']]\n\
         src.sort(key=lambda r: r['prompt_id'].encode())\n\
         expected = []\n\
         for r in src:\n\
         \x20   expected.append(copy(r, r['score_chosen'], r['chosen'], r['rejected'], r['score_chosen'], r['score_rejected'], 'positive'))\n\
         \x20   expected.append(copy(r, r['score_rejected'], r['rejected'], r['chosen'], r['score_rejected'], r['score_chosen'], 'negative'))\n\
         out = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob({out:?} + '/part-*.parquet'))]).to_pylist()\n\
         actual = [(r['prompt_id'], r['prompt'], r['chosen'], r['rejected'], r['score_chosen'], r['score_rejected'], r['copy']) for r in out]\n\
         assert len(actual) == len(expected) == 1778, (len(actual), len(expected))\n\
         bad = [i for i, (a, e) in enumerate(zip(actual, expected)) if a != e]\n\
         assert not bad, (bad[:3], actual[bad[0]][:3] if bad else None, expected[bad[0]][:3] if bad else None)\n\
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
fn ultrafeedback_conversational_gets_a_system_message() {
    augment_and_check(
        &data("ultrafeedback_binarized_1k.parquet"),
        &[],
        Expect::SystemMessage,
    );
}

#[test]
fn ultrafeedback_without_system_role_prepends_to_the_user_turn() {
    augment_and_check(
        &data("ultrafeedback_binarized_1k.parquet"),
        &["--no-system-role", "--input-format", "hf-binarized"],
        Expect::PrependToLists,
    );
}

#[test]
fn plain_strings_get_the_goal_in_front_of_the_prompt() {
    let dir = tempdir();
    let plain = dir.path().join("plain");
    ok(&prefsmith(&[
        "export",
        "--input",
        &data("ultrafeedback_binarized_1k.parquet"),
        "--output",
        plain.to_str().expect("utf-8"),
        "--format",
        "trl-standard",
    ]));
    augment_and_check(
        plain.to_str().expect("utf-8"),
        &["--input-format", "plain"],
        Expect::PrependToString,
    );
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
