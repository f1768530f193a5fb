//! `prefsmith experiment`: every shipped experiment at CI size, end to end through the stages
//! (the figures checked against a second implementation in Python, the page rendered in a
//! browser, one run rerun alone with `prefsmith run`), the sampler's degenerate outputs, and
//! named errors for bad experiment files and bad task input.
//!
//! These check that the experiments run and that their figures are what the definitions say,
//! not which way the results come out (EXPERIMENTS.md has the full-size numbers).

use std::path::Path;

use crate::common::{fails, ok, prefsmith, prefsmith_in, python_script, repo, tempdir};

/// Runs `configs/experiments/{name}.toml --reduced` into a temporary directory and checks it.
fn reduced_experiment(name: &str) {
    let dir = tempdir();
    let output = dir.path().join(name);
    let config = repo().join(format!("configs/experiments/{name}.toml"));
    let stdout = ok(&prefsmith(&[
        "experiment",
        config.to_str().expect("utf-8"),
        "--reduced",
        "--output",
        output.to_str().expect("utf-8"),
    ]));
    let root = dir.path().join(format!("{name}-reduced"));
    assert!(stdout.contains("| SFT start |"), "{stdout}");
    let text: toml::Table = std::fs::read_to_string(&config)
        .expect("config")
        .parse()
        .expect("toml");
    let arms = text["arms"].as_array().expect("arms").len();
    let swept = text
        .get("sweep")
        .and_then(|s| s.get("n"))
        .and_then(|n| n.as_array())
        .map_or(1, Vec::len);
    let rows = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("| "))
        .count();
    // Header, one row per arm (× sweep values), the SFT start.
    assert_eq!(rows, 1 + arms * swept + 1, "{stdout}");

    let check = python_script("check_experiment.py", &[root.to_str().expect("utf-8")]);
    let said = ok(&check);
    assert!(said.starts_with("ok ("), "{said}");

    let report = root.join("report.html");
    let audit = crate::report::audit(&report, dir.path());
    assert_eq!(audit["errors"], serde_json::json!([]), "{audit}");
    let sections = audit["sections"].as_array().expect("sections");
    let summary: Vec<_> = sections
        .iter()
        .filter(|s| s["kind"] == "experiment-summary")
        .collect();
    assert_eq!(summary.len(), 1, "{audit}");
    assert!(summary[0]["plots"].as_u64() >= Some(2), "{audit}");
    for size in audit["plots"].as_array().expect("plots") {
        assert!(size[0].as_f64() > Some(100.0), "{audit}");
    }

    // Any run is an ordinary job: rerun alone, every stage is up to date.
    let job = std::fs::read_dir(&root)
        .expect("the output")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("seed-0/job.toml"))
        .find(|p| p.is_file())
        .expect("a run's job.toml");
    let rerun = ok(&prefsmith_in(
        dir.path(),
        &["run", job.to_str().expect("utf-8")],
    ));
    let stage_lines = rerun
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with("report:"))
        .count();
    let up_to_date = rerun.matches("up to date").count();
    assert!(stage_lines > 8 && up_to_date >= stage_lines, "{rerun}");
}

#[test]
fn sweet_spot_runs_at_ci_size() {
    reduced_experiment("sweet-spot");
}

#[test]
fn selection_runs_at_ci_size() {
    reduced_experiment("selection");
}

#[test]
fn chosen_rejected_runs_at_ci_size() {
    reduced_experiment("chosen-rejected");
}

#[test]
fn routing_runs_at_ci_size() {
    reduced_experiment("routing");
}

#[test]
fn ratings_runs_at_ci_size() {
    reduced_experiment("ratings");
}

#[test]
fn cleaning_runs_at_ci_size() {
    reduced_experiment("cleaning");
}

fn read_rows(dir: &Path) -> Vec<serde_json::Value> {
    let script = format!(
        "import json, pyarrow.parquet as pq, glob\n\
         rows = []\n\
         for f in sorted(glob.glob('{}/*.parquet')): rows += pq.read_table(f).to_pylist()\n\
         print(json.dumps(rows))",
        dir.display()
    );
    let out = std::process::Command::new(crate::common::python())
        .args(["-c", &script])
        .output()
        .expect("python");
    serde_json::from_str(&ok(&out)).expect("rows as JSON")
}

#[test]
fn the_sampler_makes_degenerate_outputs_at_its_rate_and_leaves_the_rest() {
    let dir = tempdir();
    let prompts: String = (0..16)
        .map(|i| format!("{{\"prompt_id\": \"p{i:02}\", \"prompt\": \"sort: dcba{i}\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("prompts.jsonl"), prompts).expect("write");
    let sample = |out: &str, rate: &str| {
        ok(&prefsmith_in(
            dir.path(),
            &[
                "sample",
                "--prompts",
                "prompts.jsonl",
                "--output",
                out,
                "--model",
                "tiny:0",
                "--n",
                "16",
                "--max-new-tokens",
                "6",
                "--degenerate-rate",
                rate,
            ],
        ))
    };
    sample("clean", "0");
    sample("faulty", "0.25");
    let clean = read_rows(&dir.path().join("clean"));
    let faulty = read_rows(&dir.path().join("faulty"));
    let (mut kinds, mut total) = (std::collections::BTreeMap::new(), 0);
    for (c, f) in clean.iter().zip(&faulty) {
        let texts = |r: &serde_json::Value| r["all_generated_responses"].as_array().cloned();
        for (i, reason) in f["finish_reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .enumerate()
        {
            let reason = reason.as_str().expect("string");
            let (ct, ft) = (&texts(c).expect("list")[i], &texts(f).expect("list")[i]);
            total += 1;
            match reason {
                "degenerate-empty" => assert_eq!(ft, ""),
                "degenerate-truncated" => {
                    let full: Vec<char> = ct.as_str().expect("text").chars().collect();
                    let kept: String = full[..full.len() / 3].iter().collect();
                    assert_eq!(ft.as_str(), Some(kept.as_str()));
                }
                "degenerate-garbled" => {
                    let g = ft.as_str().expect("text");
                    assert!(
                        g.len() >= 3 && g.bytes().all(|b| (b'!'..=b'~').contains(&b)),
                        "{g}"
                    );
                }
                _ => {
                    assert_eq!(ct, ft, "a response the fault did not touch changed");
                    continue;
                }
            }
            *kinds.entry(reason.to_string()).or_insert(0) += 1;
        }
    }
    let faults: usize = kinds.values().sum();
    assert_eq!(total, 256);
    // 25 % of 256: 64 expected, ±4 standard deviations of the binomial (σ ≈ 6.9).
    assert!(
        (36..=92).contains(&faults),
        "{faults} of {total}: {kinds:?}"
    );
    assert_eq!(kinds.len(), 3, "every kind of fault appears: {kinds:?}");
    let manifest = crate::common::manifest(&dir.path().join("faulty"));
    assert_eq!(manifest["stats"]["degenerate"], faults);
    // Rate 0 is the sampler as it was: the setting is not even in the recorded config.
    let clean_manifest = crate::common::manifest(&dir.path().join("clean"));
    assert!(clean_manifest["config"].get("degenerate-rate").is_none());
    let bad = fails(
        &prefsmith_in(
            dir.path(),
            &[
                "sample",
                "--prompts",
                "prompts.jsonl",
                "--output",
                "x",
                "--model",
                "tiny:0",
                "--degenerate-rate",
                "1.5",
            ],
        ),
        2,
    );
    assert!(bad.contains("degenerate-rate 1.5"), "{bad}");
}

#[test]
fn bad_experiment_files_and_task_inputs_are_named_errors() {
    let dir = tempdir();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let base = "name = \"x\"\noutput = \"out/x\"\nseeds = [0]\n";
    let cases = [
        (
            format!("{base}colour = 1\n[[arms]]\nname = \"a\"\n"),
            "unknown field `colour`",
        ),
        (
            "name = \"x\"\noutput = \"o\"\nseeds = []\n[[arms]]\nname = \"a\"\n".to_string(),
            "seeds",
        ),
        (
            format!("{base}[sampling]\nn = 8\n[[arms]]\nname = \"a\"\nn = 16\n"),
            "arm 'a': n = 16 exceeds sampling.n = 8",
        ),
        (
            format!("{base}[[arms]]\nname = \"a\"\nflip = 0.1\n"),
            "arm 'a': flip needs labels = \"judgments\"",
        ),
        (
            format!("{base}[[arms]]\nname = \"a b\"\n[[arms]]\nname = \"a-b\"\n"),
            "share the directory 'a-b'",
        ),
        (
            format!("{base}[[arms]]\nname = \"a\"\nn = 1\n"),
            "pairs need n ≥ 2",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write(&format!("bad-{i}.toml"), text);
        let err = fails(&prefsmith_in(dir.path(), &["experiment", &path]), 2);
        assert!(err.contains(expected), "case {i}: {err}");
        assert!(err.contains(&path), "case {i} names the file: {err}");
        assert!(!dir.path().join("out").exists(), "case {i} wrote output");
    }

    // task-reward on prompts that are not the task's: the row is named, nothing written.
    std::fs::write(
        dir.path().join("prompts.jsonl"),
        "{\"prompt_id\": \"q1\", \"prompt\": \"What is 2 + 2?\"}\n",
    )
    .expect("write");
    ok(&prefsmith_in(
        dir.path(),
        &[
            "sample",
            "--prompts",
            "prompts.jsonl",
            "--output",
            "s",
            "--model",
            "tiny:0",
            "--n",
            "2",
            "--max-new-tokens",
            "4",
        ],
    ));
    let job = write(
        "reward.toml",
        "[[stages]]\nkind = \"task-reward\"\ninput = \"s\"\noutput = \"r\"\n",
    );
    let err = fails(&prefsmith_in(dir.path(), &["run", &job]), 1);
    assert!(
        err.contains("row 0") && err.contains("is not a task prompt"),
        "{err}"
    );
    assert!(!dir.path().join("r/_manifest.json").exists());
    let job = write(
        "reward2.toml",
        "[[stages]]\nkind = \"task-reward\"\ninput = \"s\"\noutput = \"r\"\nflip = 0.1\n",
    );
    let err = fails(&prefsmith_in(dir.path(), &["run", &job]), 2);
    assert!(err.contains("set judgments ≥ 1"), "{err}");
}
