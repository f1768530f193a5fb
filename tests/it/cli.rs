//! The binary end to end: the quickstart job, resumable jobs, `select` output contract,
//! `sql` (and its function reference), `synth` determinism, `inspect`.

use std::path::Path;

use crate::common::{data, manifest, ok, prefsmith, prefsmith_in, repo, tempdir};

/// `configs/arena-pairs.toml` with its output redirected into `dir`.
fn quickstart_in(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("configs/arena-pairs.toml"))
        .expect("quickstart config");
    assert!(
        text.contains("out/arena/pairs"),
        "the quickstart writes out/arena/pairs"
    );
    let text = text
        .replace("out/arena/pairs", &dir.join("pairs").display().to_string())
        .replace("\"data/", &format!("\"{}/data/", repo().display()));
    let job = dir.join("quickstart.toml");
    std::fs::write(&job, text).expect("write job");
    job
}

#[test]
fn quickstart_job_writes_pairs_and_summary() {
    let dir = tempdir();
    let job = quickstart_in(dir.path());
    let stdout = ok(&prefsmith(&["run", job.to_str().expect("utf-8")]));
    assert!(stdout.contains("select: 299 pairs written"), "{stdout}");
    assert!(stdout.contains("zero-std 1"), "{stdout}");
    assert!(stdout.contains("mean score: chosen"), "{stdout}");
    let m = manifest(&dir.path().join("pairs"));
    assert_eq!(m["stats"]["pairs_written"], 299);
    assert_eq!(m["stats"]["invalid_rewards"], 37);
    assert_eq!(m["parts"][0]["path"], "part-00000.parquet");

    // Rerun: up to date, not recomputed (the manifest is untouched).
    let before = std::fs::read(dir.path().join("pairs/_manifest.json")).expect("manifest");
    let stdout = ok(&prefsmith(&["run", job.to_str().expect("utf-8")]));
    assert!(stdout.contains("up to date"), "{stdout}");
    assert_eq!(
        before,
        std::fs::read(dir.path().join("pairs/_manifest.json")).expect("manifest")
    );

    // --force recomputes, with identical parts.
    let part_before = std::fs::read(dir.path().join("pairs/part-00000.parquet")).expect("part");
    ok(&prefsmith(&[
        "run",
        "--force",
        job.to_str().expect("utf-8"),
    ]));
    assert_eq!(
        part_before,
        std::fs::read(dir.path().join("pairs/part-00000.parquet")).expect("part")
    );
}

#[test]
fn rerun_removes_stale_parts_and_is_deterministic() {
    let dir = tempdir();
    let out = dir.path().join("pairs");
    let out_s = out.to_str().expect("utf-8");
    let arena = data("arena_bench_v1_scored.parquet");
    ok(&prefsmith(&[
        "select",
        "--input",
        &arena,
        "--output",
        out_s,
        "--max-rows-per-file",
        "50",
    ]));
    assert_eq!(manifest(&out)["parts"].as_array().expect("parts").len(), 6);
    let first = std::fs::read(out.join("part-00000.parquet")).expect("part");
    ok(&prefsmith(&[
        "select",
        "--input",
        &arena,
        "--output",
        out_s,
        "--max-rows-per-file",
        "100",
    ]));
    let m = manifest(&out);
    assert_eq!(m["parts"].as_array().expect("parts").len(), 3);
    assert!(
        !out.join("part-00005.parquet").exists(),
        "a stale part survived the rerun"
    );
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "_manifest.json",
            "part-00000.parquet",
            "part-00001.parquet",
            "part-00002.parquet"
        ]
    );
    // Same config, same rows: the first 50 rows are the start of the first 100.
    ok(&prefsmith(&[
        "select",
        "--input",
        &arena,
        "--output",
        out_s,
        "--max-rows-per-file",
        "50",
    ]));
    assert_eq!(
        first,
        std::fs::read(out.join("part-00000.parquet")).expect("part")
    );
}

#[test]
fn pair_table_contract_columns_and_order() {
    let dir = tempdir();
    let out = dir.path().join("pairs");
    ok(&prefsmith(&[
        "select",
        "--input",
        &data("arena_bench_v1_scored.parquet"),
        "--output",
        out.to_str().expect("utf-8"),
    ]));
    let query = "SELECT count(*) AS n, count(DISTINCT prompt_id) AS ids, min(rating_gap) > 0 AS positive_gaps, \
                 bool_and(length(prompt_id) = 64) AS sha_ids, min(strategy) AS s, max(strategy) AS s2 FROM pairs";
    let stdout = ok(&prefsmith(&[
        "sql",
        query,
        "--table",
        &format!("pairs={}", out.display()),
    ]));
    assert!(
        stdout.contains("| 299 | 299 | true          | true    | sweet-spot | sweet-spot |"),
        "{stdout}"
    );
    let columns = ok(&prefsmith(&[
        "sql",
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'pairs'",
        "--table",
        &format!("pairs={}", out.display()),
    ]));
    for column in [
        "prompt_id",
        "prompt",
        "chosen",
        "rejected",
        "score_chosen",
        "score_rejected",
        "rating_gap",
        "chosen_index",
        "rejected_index",
        "reward_mean",
        "reward_std",
        "n_valid",
        "strategy",
    ] {
        assert!(
            columns.contains(&format!("| {column} ")),
            "missing {column}:\n{columns}"
        );
    }
}

#[test]
fn sql_command_runs_udfs_on_the_data() {
    let arena = format!("arena={}", data("arena_bench_v1_scored.parquet"));
    let stdout = ok(&prefsmith(&[
        "sql",
        "SELECT p['skip_reason'] AS reason, count(*) AS n FROM \
         (SELECT select_pair_list(all_rm_scores, '+inf', -2) AS p FROM arena) GROUP BY 1 ORDER BY 1 NULLS FIRST",
        "--table",
        &arena,
    ]));
    assert!(
        stdout.contains("| 299 |") && stdout.contains("| zero-std | 1   |"),
        "{stdout}"
    );

    // --output writes Parquet or CSV.
    let dir = tempdir();
    let csv = dir.path().join("stats.csv");
    let stdout = ok(&prefsmith(&[
        "sql",
        "SELECT hf_prompt_id(prompt) AS id, reward_stats(s)['mean'] AS mean \
         FROM (SELECT prompt, unnest(all_rm_scores) AS s FROM arena) GROUP BY 1 ORDER BY 1 LIMIT 3",
        "--table",
        &arena,
        "--output",
        csv.to_str().expect("utf-8"),
    ]));
    assert!(stdout.contains("3 rows written"), "{stdout}");
    let text = std::fs::read_to_string(&csv).expect("csv");
    assert!(text.starts_with("id,mean\n"), "{text}");
    assert_eq!(text.lines().count(), 4);
}

#[test]
fn sql_functions_prints_every_function_with_its_description() {
    let stdout = ok(&prefsmith(&["sql", "--functions"]));
    // The reference wraps its prose: compare with runs of whitespace collapsed.
    let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let printed = flat(&stdout);
    let registered: Vec<(String, &str, String)> = prefsmith_udfs::scalar_functions()
        .iter()
        .map(|f| {
            (
                f.name().to_string(),
                "scalar",
                f.documentation().map(|d| d.description.clone()),
            )
        })
        .chain(prefsmith_udfs::aggregate_functions().iter().map(|f| {
            (
                f.name().to_string(),
                "aggregate",
                f.documentation().map(|d| d.description.clone()),
            )
        }))
        .chain(prefsmith_udfs::window_functions().iter().map(|f| {
            (
                f.name().to_string(),
                "window",
                f.documentation().map(|d| d.description.clone()),
            )
        }))
        .map(|(name, kind, description)| {
            let description = description.unwrap_or_else(|| panic!("{name} has no documentation"));
            (name, kind, description)
        })
        .collect();
    assert_eq!(registered.len(), 17);
    let mut positions = Vec::new();
    for (name, kind, description) in &registered {
        let heading = format!("\n{name} ({kind}, ");
        let at = stdout
            .find(&heading)
            .unwrap_or_else(|| panic!("no entry for {name}:\n{stdout}"));
        positions.push((at, name.as_str()));
        assert!(
            printed.contains(&flat(description)),
            "the description of {name} is missing:\n{stdout}"
        );
        assert!(stdout.contains(&format!("{name}(")), "no syntax for {name}");
    }
    // Sorted by name.
    positions.sort_unstable();
    let order: Vec<&str> = positions.iter().map(|&(_, name)| name).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted);
}

#[test]
fn synth_is_deterministic_and_layouts_agree() {
    let dir = tempdir();
    let run = |name: &str, layout: &str, shards: &str| {
        let out = dir.path().join(name);
        ok(&prefsmith(&[
            "synth",
            "--prompts",
            "500",
            "--responses",
            "6",
            "--shards",
            shards,
            "--layout",
            layout,
            "--seed",
            "4",
            "--output",
            out.to_str().expect("utf-8"),
        ]));
        out
    };
    let a = run("a", "long", "2");
    let b = run("b", "long", "2");
    for part in ["part-00000.parquet", "part-00001.parquet"] {
        assert_eq!(
            std::fs::read(a.join(part)).expect("part"),
            std::fs::read(b.join(part)).expect("part"),
            "{part}"
        );
    }
    let wide = run("w", "wide", "1");
    // The same data in both layouts gives the same pairs.
    let pairs = |input: &Path, name: &str| {
        let out = dir.path().join(name);
        ok(&prefsmith(&[
            "select",
            "--input",
            input.to_str().expect("utf-8"),
            "--output",
            out.to_str().expect("utf-8"),
        ]));
        let m = manifest(&out);
        assert_eq!(m["stats"]["prompts"], 500);
        ok(&prefsmith(&[
            "sql",
            "SELECT prompt_id, chosen, rejected, score_chosen, score_rejected, reward_std FROM t ORDER BY prompt_id",
            "--table",
            &format!("t={}", out.display()),
        ]))
    };
    let long_pairs = pairs(&a, "pa");
    assert_eq!(long_pairs, pairs(&wide, "pw"));
    assert_eq!(
        manifest(&dir.path().join("pa"))["stats"]["plan"],
        "long-streaming"
    );
}

#[test]
fn inspect_summarises_datasets() {
    let stdout = ok(&prefsmith(&[
        "inspect",
        &data("arena_bench_v1_scored.parquet"),
    ]));
    assert!(stdout.contains("layout wide"), "{stdout}");
    assert!(stdout.contains("prompts 300"), "{stdout}");
    assert!(
        stdout.contains("responses 4200 | per prompt min 14 median 14 max 14"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rewards: null 37, NaN 0, ±inf 0"),
        "{stdout}"
    );
    assert!(stdout.contains("p50 "), "{stdout}");
    let dir = tempdir();
    let out = dir.path().join("pairs");
    ok(&prefsmith(&[
        "select",
        "--input",
        &data("arena_bench_v1_scored.parquet"),
        "--output",
        out.to_str().expect("utf-8"),
    ]));
    let stdout = ok(&prefsmith(&["inspect", out.to_str().expect("utf-8")]));
    assert!(
        stdout.contains("complete (stage select, 1 part)") && stdout.contains("layout pairs"),
        "{stdout}"
    );
}

#[test]
fn job_chains_stages_and_resumes_after_a_failed_stage() {
    let dir = tempdir();
    let job = dir.path().join("job.toml");
    let write_job = |strategy: &str| {
        std::fs::write(
            &job,
            format!(
                "name = \"chain\"\n\n[[stages]]\nkind = \"synth\"\noutput = \"data\"\nprompts = 200\nresponses = 5\n\n\
                 [[stages]]\nkind = \"select\"\noutput = \"pairs\"\nstrategy = \"{strategy}\"\n\n\
                 [[stages]]\nkind = \"route\"\noutput = \"routed\"\nroute-percentile = 10\n"
            ),
        )
        .expect("write job");
    };
    write_job("no-such-strategy");
    let stderr = String::from_utf8_lossy(&prefsmith_in(dir.path(), &["run", "job.toml"]).stderr)
        .into_owned();
    assert!(stderr.contains("no-such-strategy"), "{stderr}");
    write_job("max-min");
    let stdout = ok(&prefsmith_in(dir.path(), &["run", "job.toml"]));
    assert!(
        stdout.contains("synth: 1000 rows") && stdout.contains("strategy max-min"),
        "{stdout}"
    );
    let synth_manifest = std::fs::read(dir.path().join("data/_manifest.json")).expect("manifest");
    // Change only the select stage: synth is up to date and not rerun.
    write_job("sweet-spot");
    let stdout = ok(&prefsmith_in(dir.path(), &["run", "job.toml"]));
    assert!(
        stdout.contains("synth: 1000 rows in data (up to date, not rerun)"),
        "{stdout}"
    );
    assert!(stdout.contains("strategy sweet-spot"), "{stdout}");
    // The route stage read the new pairs (its input changed), so it ran again too.
    assert!(
        stdout.contains("route: ") && stdout.contains("(percentile 10, margin column rating_gap)"),
        "{stdout}"
    );
    assert!(!stdout.contains("not rerun)\nroute"), "{stdout}");
    assert_eq!(
        synth_manifest,
        std::fs::read(dir.path().join("data/_manifest.json")).expect("manifest")
    );
}

#[test]
fn ultrafeedback_bees_job_runs_every_pair_stage() {
    // The shipped job, with its paths moved into a temporary directory.
    let dir = tempdir();
    let job = std::fs::read_to_string(repo().join("configs/ultrafeedback-bees.toml"))
        .expect("configs/ultrafeedback-bees.toml")
        .replace(
            "data/ultrafeedback_binarized_1k.parquet",
            &data("ultrafeedback_binarized_1k.parquet"),
        );
    let job_path = dir.path().join("job.toml");
    std::fs::write(&job_path, job).expect("write the job");
    let stdout = ok(&prefsmith_in(
        dir.path(),
        &["run", job_path.to_str().expect("utf-8")],
    ));
    for line in [
        "select-margin: 500 of 1000 pairs",
        "route: 500 pairs written to out/uf-bees/routed: dpo 450, sft 50",
        "augment: 1000 rows written to out/uf-bees/augmented from 500 pairs",
        "export: 1000 pairs written to out/uf-bees/trl as trl-conversational",
    ] {
        assert!(stdout.contains(line), "missing '{line}' in:\n{stdout}");
    }
    let trl = dir.path().join("out/uf-bees/trl");
    let m = manifest(&trl);
    assert_eq!(m["stage"], "export");
    // Every column added on the way survives to the trainer's layout.
    let stdout = ok(&prefsmith(&[
        "sql",
        "SELECT count(*) AS n, count(DISTINCT copy) AS copies, min(selected_rank) AS best, \
         sum(CASE WHEN route = 'sft' THEN 1 ELSE 0 END) AS sft_rows \
         FROM t WHERE prompt[1]['role'] = 'system' AND chosen[1]['role'] = 'assistant'",
        "--table",
        &format!("t={}", trl.display()),
    ]));
    assert!(
        stdout.contains("| 1000 | 2      | 1    | 100      |"),
        "{stdout}"
    );
}
