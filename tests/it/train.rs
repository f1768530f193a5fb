//! The trainer (`prefsmith train`):
//!
//! * every loss and its gradients against an independent float64 numpy derivation
//!   (`tests/python/reference_losses.py`);
//! * a tiny random-init llama learns a synthetic preference (held-out `rewards/accuracies`
//!   ≥ 0.9), with reference log-probs taken from the table;
//! * MixDPO: the `dpo` pairs first in curriculum order, then SFT on the `sft` pairs, one
//!   schedule; SFT raises the chosen responses' log-probs (measured on the saved model, which
//!   the independent numpy forward pass reads too);
//! * resume: K steps, stop, resume K steps = 2K steps straight, bit for bit;
//! * bad input: clear errors before any training, nothing written.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use prefsmith_model::rng::Rng;
use prefsmith_model::scoring::{ScoreOptions, score_sequences};
use prefsmith_model::sequence::ScoreItem;
use prefsmith_model::{DeviceSpec, LanguageModel};
use prefsmith_trainer::losses::{LossKind, LossParams, PairBatch, PairLogps, per_pair};
use prefsmith_trainer::train::config::TrainConfig;
use prefsmith_trainer::train::{TrainOptions, train};
use serde_json::{Value, json};

use crate::common::{fails, ok, prefsmith, python_script, tempdir};

/// A pair table column.
enum Col {
    Text(Vec<String>),
    Float(Vec<Option<f64>>),
    Int(Vec<i64>),
}

fn write_table(path: &Path, columns: Vec<(&str, Col)>) {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, col) in columns {
        let (t, a): (DataType, ArrayRef) = match col {
            Col::Text(v) => (DataType::Utf8, Arc::new(StringArray::from(v))),
            Col::Float(v) => (DataType::Float64, Arc::new(Float64Array::from(v))),
            Col::Int(v) => (DataType::Int64, Arc::new(Int64Array::from(v))),
        };
        fields.push(Field::new(name, t, true));
        arrays.push(a);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn word(rng: &mut Rng, letters: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| letters[rng.below(letters.len() as u64) as usize] as char)
        .collect()
}

/// A synthetic preference task: the chosen answer is a polite lower-case sentence, the rejected
/// one a curt upper-case one, for `n` random prompts. Scores differ by 1–8 points.
struct Synthetic {
    prompt_id: Vec<String>,
    prompt: Vec<String>,
    chosen: Vec<String>,
    rejected: Vec<String>,
    score_chosen: Vec<Option<f64>>,
    score_rejected: Vec<Option<f64>>,
}

fn synthetic(n: usize, seed: u64) -> Synthetic {
    let mut rng = Rng::new(seed);
    let lower = b"abcdefghijklmnopqrstuvwxyz";
    let upper = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut s = Synthetic {
        prompt_id: vec![],
        prompt: vec![],
        chosen: vec![],
        rejected: vec![],
        score_chosen: vec![],
        score_rejected: vec![],
    };
    for i in 0..n {
        let len = 4 + rng.below(6) as usize;
        s.prompt_id.push(format!("p{i:04}"));
        s.prompt
            .push(format!("what is {}?", word(&mut rng, lower, len)));
        let len = 6 + rng.below(8) as usize;
        s.chosen
            .push(format!("sure, {}.", word(&mut rng, lower, len)));
        let len = 6 + rng.below(8) as usize;
        s.rejected
            .push(format!("NO. {}!", word(&mut rng, upper, len)));
        let sc = 5.0 + rng.below(5) as f64;
        s.score_chosen.push(Some(sc));
        s.score_rejected.push(Some(sc - 1.0 - rng.below(4) as f64));
    }
    s
}

impl Synthetic {
    fn columns(&self) -> Vec<(&'static str, Col)> {
        vec![
            ("prompt_id", Col::Text(self.prompt_id.clone())),
            ("prompt", Col::Text(self.prompt.clone())),
            ("chosen", Col::Text(self.chosen.clone())),
            ("rejected", Col::Text(self.rejected.clone())),
            ("score_chosen", Col::Float(self.score_chosen.clone())),
            ("score_rejected", Col::Float(self.score_rejected.clone())),
        ]
    }
}

fn config(pairs: &Path, output: &Path, extra: &str) -> TrainConfig {
    config_with(pairs, output, 0.2, extra)
}

/// A tiny-model config over `pairs`; `extra` adds keys to `[run]` (and may open later tables).
fn config_with(pairs: &Path, output: &Path, eval_fraction: f64, extra: &str) -> TrainConfig {
    let text = format!(
        r#"
        [model]
        model = "tiny:0"
        [data]
        pairs = "{}"
        max-length = 96
        eval-fraction = {eval_fraction}
        [optim]
        learning-rate = 3e-3
        warmup-ratio = 0.1
        [run]
        output = "{}"
        seed = 7
        {batch}
        {extra}
        "#,
        pairs.display(),
        output.display(),
        batch = if extra.contains("micro-batch-size") {
            ""
        } else {
            "micro-batch-size = 8"
        },
    );
    TrainConfig::parse(&text, "test.toml").unwrap()
}

fn metrics(output: &Path) -> Vec<Value> {
    std::fs::read_to_string(output.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn losses_and_gradients_equal_numpy() {
    let n = 12;
    let mut rng = Rng::new(11);
    let mut draw = |lo: f64, hi: f64| lo + (hi - lo) * rng.uniform();
    let pc: Vec<f64> = (0..n).map(|_| draw(-60.0, -5.0)).collect();
    let pr: Vec<f64> = (0..n).map(|_| draw(-60.0, -5.0)).collect();
    let rc: Vec<f64> = (0..n).map(|_| draw(-60.0, -5.0)).collect();
    let rr: Vec<f64> = (0..n).map(|_| draw(-60.0, -5.0)).collect();
    let lc: Vec<f64> = (0..n).map(|_| (draw(1.0, 40.0)).floor()).collect();
    let lr: Vec<f64> = (0..n).map(|_| (draw(1.0, 40.0)).floor()).collect();
    let gap: Vec<Option<f64>> = (0..n)
        .map(|i| (i % 4 != 0).then(|| draw(-1.0, 3.0)))
        .collect();
    let params = LossParams {
        beta: 0.2,
        cdpo_epsilon: 0.15,
        robust_epsilon: 0.2,
        rdpo_beta1: 0.5,
        ml_rdpo_lambda: 0.7,
    };
    let dir = tempdir();
    let input = dir.path().join("in.json");
    std::fs::write(
        &input,
        json!({
            "pc": pc, "pr": pr, "rc": rc, "rr": rr, "lc": lc, "lr": lr, "gap": gap,
            "beta": params.beta, "cdpo_epsilon": params.cdpo_epsilon,
            "robust_epsilon": params.robust_epsilon, "rdpo_beta1": params.rdpo_beta1,
            "ml_rdpo_lambda": params.ml_rdpo_lambda,
        })
        .to_string(),
    )
    .unwrap();
    let out = python_script("reference_losses.py", &[&input.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap();

    let device = DeviceSpec::Cpu.device().unwrap().autodiff();
    let t = |v: &[f64]| {
        burn::tensor::Tensor::<1>::from_floats(
            v.iter().map(|x| *x as f32).collect::<Vec<_>>().as_slice(),
            &device,
        )
    };
    let host = |x: burn::tensor::Tensor<1>| -> Vec<f64> {
        x.into_data().try_into_vec_as::<f64>().unwrap()
    };
    for kind in LossKind::ALL {
        let policy_chosen = t(&pc).require_grad();
        let policy_rejected = t(&pr).require_grad();
        let batch = PairBatch {
            logps: PairLogps {
                policy_chosen: policy_chosen.clone(),
                policy_rejected: policy_rejected.clone(),
                ref_chosen: t(&rc),
                ref_rejected: t(&rr),
            },
            chosen_tokens: t(&lc),
            rejected_tokens: t(&lr),
            rating_gap: t(&gap.iter().map(|g| g.unwrap_or(0.0)).collect::<Vec<_>>()),
            rated: t(&gap
                .iter()
                .map(|g| if g.is_some() { 1.0 } else { 0.0 })
                .collect::<Vec<_>>()),
        };
        let values = per_pair(kind, &batch, &params);
        let grads = values.clone().sum().backward();
        let ours = host(values);
        let d_chosen = policy_chosen
            .grad(&grads)
            .map(host)
            .unwrap_or_else(|| vec![0.0; n]);
        let d_rejected = policy_rejected
            .grad(&grads)
            .map(host)
            .unwrap_or_else(|| vec![0.0; n]);
        let want = &reference[kind.name()];
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
        for i in 0..n {
            let value = want["value"][i].as_f64().unwrap();
            assert!(
                close(ours[i], value),
                "{kind:?} pair {i}: {} vs {value}",
                ours[i]
            );
            let dpc = want["dpc"][i].as_f64().unwrap();
            let dpr = want["dpr"][i].as_f64().unwrap();
            assert!(
                close(d_chosen[i], dpc),
                "{kind:?} d/dpc {i}: {} vs {dpc}",
                d_chosen[i]
            );
            assert!(
                close(d_rejected[i], dpr),
                "{kind:?} d/dpr {i}: {} vs {dpr}",
                d_rejected[i]
            );
        }
    }
}

/// Scores `items` with the model in `spec` (summed log-probs).
fn logps(spec: &str, items: &[ScoreItem]) -> Vec<f64> {
    let lm = LanguageModel::load(spec, &DeviceSpec::Cpu.device().unwrap()).unwrap();
    score_sequences(&lm, items, ScoreOptions::default(), |_| {})
        .unwrap()
        .iter()
        .map(|s| s.logp)
        .collect()
}

#[test]
fn a_tiny_model_learns_a_synthetic_preference() {
    let dir = tempdir();
    let pairs = dir.path().join("pairs.parquet");
    let task = synthetic(160, 1);
    // Reference log-probs precomputed (as `prefsmith score --role reference` does): the
    // trainer must take them from the table.
    let device = DeviceSpec::Cpu.device().unwrap();
    let lm = LanguageModel::tiny(0, &device).unwrap();
    let user = |t: &str| vec![prefsmith_model::tokenizer::ChatMessage::new("user", t)];
    let mut items = Vec::new();
    for i in 0..task.prompt.len() {
        for response in [&task.chosen[i], &task.rejected[i]] {
            items.push(ScoreItem {
                prompt: lm.prompt_ids(&user(&task.prompt[i])).unwrap(),
                response: lm.response_ids(response).unwrap(),
            });
        }
    }
    let reference = logps("tiny:0", &items);
    let mut columns = task.columns();
    columns.push((
        "ref_logp_chosen",
        Col::Float(reference.iter().step_by(2).map(|v| Some(*v)).collect()),
    ));
    columns.push((
        "ref_logp_rejected",
        Col::Float(
            reference
                .iter()
                .skip(1)
                .step_by(2)
                .map(|v| Some(*v))
                .collect(),
        ),
    ));
    write_table(&pairs, columns);
    let output = dir.path().join("run");
    let config = config(&pairs, &output, "epochs = 2\neval-steps = 8");
    let report = runtime()
        .block_on(train(&config, TrainOptions::default()))
        .unwrap();
    assert!(report.completed);
    assert!(report.data.reference_from_table);
    assert_eq!((report.data.train_pairs, report.data.eval_pairs), (128, 32));
    assert_eq!(report.steps, 32);
    let lines = metrics(&output);
    // The first step starts from the reference: the rewards are zero.
    let first = &lines[0];
    assert!(
        first["rewards/chosen"].as_f64().unwrap().abs() < 1e-3,
        "{first}"
    );
    let eval = report.eval_metrics.expect("an evaluation at the end");
    let accuracy = eval["eval_rewards/accuracies"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "held-out accuracy {accuracy}: {eval}");
    assert!(eval["eval_rewards/margins"].as_f64().unwrap() > 0.0);
    for key in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "grad_norm",
        "learning_rate",
    ] {
        assert!(
            lines[5][key].is_number(),
            "metric {key} missing: {}",
            lines[5]
        );
    }
    // The summary and the final model are there; the model loads and scores.
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["steps"], 32);
    let trained = logps(&output.join("model").display().to_string(), &items[..2]);
    let margin = (trained[0] - reference[0]) - (trained[1] - reference[1]);
    assert!(
        margin > 0.0,
        "the trained model prefers the first chosen answer less: {margin}"
    );
}

#[test]
fn mixdpo_trains_dpo_pairs_in_curriculum_order_then_sft_raises_chosen_logps() {
    let dir = tempdir();
    let pairs = dir.path().join("pairs.parquet");
    let task = synthetic(60, 2);
    let margins: Vec<f64> = task
        .score_chosen
        .iter()
        .zip(&task.score_rejected)
        .map(|(c, r)| c.unwrap() - r.unwrap())
        .collect();
    // Curriculum rank by margin, descending, stable; the 20 smallest margins go to SFT.
    let mut order: Vec<usize> = (0..margins.len()).collect();
    order.sort_by(|&a, &b| margins[b].partial_cmp(&margins[a]).unwrap());
    let mut rank = vec![0i64; margins.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r as i64 + 1;
    }
    let route: Vec<String> = rank
        .iter()
        .map(|&r| if r > 40 { "sft" } else { "dpo" }.to_string())
        .collect();
    let mut columns = task.columns();
    columns.push(("route", Col::Text(route.clone())));
    columns.push(("curriculum_rank", Col::Int(rank.clone())));
    write_table(&pairs, columns);
    let output = dir.path().join("run");
    let config = config_with(&pairs, &output, 0.0, "micro-batch-size = 4");
    let report = runtime()
        .block_on(train(&config, TrainOptions::default()))
        .unwrap();
    assert!(report.data.mixdpo);
    assert_eq!(report.steps, 10 + 5);
    let lines = metrics(&output);
    let stages: Vec<&str> = lines.iter().map(|l| l["stage"].as_str().unwrap()).collect();
    assert_eq!(stages[..10], ["dpo"; 10]);
    assert_eq!(stages[10..], ["sft"; 5]);
    // One schedule across the switch: the learning rate follows the cosine over 15 steps.
    let s = prefsmith_trainer::train::optim::OptimSettings {
        learning_rate: 3e-3,
        ..Default::default()
    };
    for (k, line) in lines.iter().enumerate() {
        let lr = line["learning_rate"].as_f64().unwrap();
        let want = prefsmith_trainer::train::optim::learning_rate(&s, k, 15);
        assert!((lr - want).abs() < 1e-15, "step {k}: {lr} vs {want}");
    }
    // SFT steps carry no rewards (no reference in that stage), DPO steps do.
    assert!(lines[0]["rewards/accuracies"].is_number());
    assert!(lines[12].get("rewards/accuracies").is_none());

    // SFT raised the log-probs of the SFT-routed chosen responses: the trained model (loaded
    // from its Hugging Face directory) against the starting weights.
    let device = DeviceSpec::Cpu.device().unwrap();
    let lm = LanguageModel::tiny(0, &device).unwrap();
    let user = |t: &str| vec![prefsmith_model::tokenizer::ChatMessage::new("user", t)];
    let items: Vec<ScoreItem> = (0..task.prompt.len())
        .filter(|&i| route[i] == "sft")
        .map(|i| ScoreItem {
            prompt: lm.prompt_ids(&user(&task.prompt[i])).unwrap(),
            response: lm.response_ids(&task.chosen[i]).unwrap(),
        })
        .collect();
    let before: f64 = logps("tiny:0", &items).iter().sum();
    let model_dir = output.join("model");
    let after: f64 = logps(&model_dir.display().to_string(), &items).iter().sum();
    assert!(
        after > before + 10.0,
        "SFT pairs' chosen log-probs: {before} before, {after} after"
    );

    // The saved model is readable by an independent implementation: numpy's float64 forward
    // pass over the saved safetensors gives our logits.
    let sequences = vec![items[0].prompt.clone(), items[1].prompt.clone()];
    let expected = crate::model::numpy("logits", &model_dir, &json!({ "sequences": sequences }));
    let trained = LanguageModel::load(&model_dir.display().to_string(), &device).unwrap();
    for (s, reference) in sequences.iter().zip(expected["logits"].as_array().unwrap()) {
        let ours = prefsmith_model::scoring::next_token_logits(&trained, s).unwrap();
        for (a, b) in ours.iter().zip(reference.as_array().unwrap()) {
            let b = b.as_f64().unwrap();
            assert!((*a as f64 - b).abs() < 1e-3, "{a} vs {b}");
        }
    }
}

fn file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn resuming_after_a_stop_equals_training_straight_through() {
    let dir = tempdir();
    let pairs = dir.path().join("pairs.parquet");
    let task = synthetic(48, 3);
    write_table(&pairs, task.columns());
    let extra = "epochs = 2\nsave-steps = 3\neval-steps = 3\nmax-steps = 6\nmicro-batch-size = 4\n\
                 gradient-accumulation-steps = 2\n[loss]\ntypes = [\"rdpo\", \"sft\"]\n\
                 weights = [1.0, 0.1]";
    let straight = dir.path().join("straight");
    let resumed = dir.path().join("resumed");
    let rt = runtime();
    rt.block_on(train(
        &config(&pairs, &straight, extra),
        TrainOptions::default(),
    ))
    .unwrap();
    let first = rt
        .block_on(train(
            &config(&pairs, &resumed, extra),
            TrainOptions {
                resume: false,
                stop_after_step: Some(3),
            },
        ))
        .unwrap();
    assert!(!first.completed && first.steps == 3);
    assert!(
        !resumed.join("model").exists(),
        "a stopped run has no final model"
    );
    // A checkpoint directory a killed writer left half-written is ignored.
    std::fs::create_dir_all(resumed.join("checkpoints/.step-00000004.partial")).unwrap();
    // Without --resume an existing run is refused.
    let refused = rt
        .block_on(train(
            &config(&pairs, &resumed, extra),
            TrainOptions::default(),
        ))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("--resume"), "{refused}");
    // Resuming under another config is refused.
    let changed = extra.replace("weights = [1.0, 0.1]", "weights = [1.0, 0.2]");
    let refused = rt
        .block_on(train(
            &config(&pairs, &resumed, &changed),
            TrainOptions {
                resume: true,
                stop_after_step: None,
            },
        ))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("another configuration"), "{refused}");
    let second = rt
        .block_on(train(
            &config(&pairs, &resumed, extra),
            TrainOptions {
                resume: true,
                stop_after_step: None,
            },
        ))
        .unwrap();
    assert!(second.completed && second.steps == 6);
    for f in [
        "model/model.safetensors",
        "checkpoints/step-00000006/optimizer.safetensors",
        "checkpoints/step-00000006/trainer_state.json",
        "metrics.jsonl",
    ] {
        assert!(
            file(&straight.join(f)) == file(&resumed.join(f)),
            "{f} differs between the straight and the resumed run:\n{}\n---\n{}",
            String::from_utf8_lossy(&file(&straight.join(f)))
                .chars()
                .take(3000)
                .collect::<String>(),
            String::from_utf8_lossy(&file(&resumed.join(f)))
                .chars()
                .take(3000)
                .collect::<String>()
        );
    }
    // Two evaluations and six steps, each once.
    assert_eq!(metrics(&resumed).len(), 8);
}

#[test]
fn bad_input_is_refused_before_training() {
    let dir = tempdir();
    let run = |pairs: &Path, extra: &str| -> String {
        let output = dir.path().join("out");
        let result = runtime().block_on(train(
            &config(pairs, &output, extra),
            TrainOptions::default(),
        ));
        assert!(!output.exists(), "nothing may be written: {result:?}");
        result.unwrap_err().to_string()
    };
    let task = synthetic(10, 4);

    let no_rejected = dir.path().join("no_rejected.parquet");
    let mut columns = task.columns();
    columns.retain(|(n, _)| *n != "rejected");
    write_table(&no_rejected, columns);
    let e = run(&no_rejected, "");
    assert!(e.contains("rejected"), "{e}");

    let empty = dir.path().join("empty.parquet");
    write_table(
        &empty,
        vec![
            ("prompt_id", Col::Text(vec![])),
            ("prompt", Col::Text(vec![])),
            ("chosen", Col::Text(vec![])),
            ("rejected", Col::Text(vec![])),
        ],
    );
    let e = run(&empty, "");
    assert!(e.contains("no rows"), "{e}");

    let nan = dir.path().join("nan.parquet");
    let mut bad = synthetic(10, 4);
    bad.score_chosen[3] = Some(f64::NAN);
    bad.score_chosen[7] = Some(f64::INFINITY);
    write_table(&nan, bad.columns());
    let e = run(&nan, "[loss]\ntypes = [\"rdpo\"]");
    assert!(
        e.contains("NaN or infinite") && e.contains("prompt_id p0003") && e.contains("p0007"),
        "{e}"
    );
    // Without a rating-aware loss the gaps are not used, and training is fine with them.
    let unused = dir.path().join("unused-gaps");
    runtime()
        .block_on(train(
            &config(&nan, &unused, "max-steps = 1"),
            TrainOptions::default(),
        ))
        .unwrap();

    let too_long = dir.path().join("long.parquet");
    let mut long = synthetic(4, 5);
    long.prompt = vec!["x".repeat(500); 4];
    write_table(&too_long, long.columns());
    let e = run(&too_long, "");
    assert!(e.contains("data.max-length"), "{e}");

    // An unknown key in the config file: the CLI names it and exits 2.
    let config_path = dir.path().join("bad.toml");
    std::fs::write(
        &config_path,
        format!(
            "[model]\nmodel = \"tiny:0\"\n[data]\npairs = \"{}\"\n[run]\noutput = \"{}\"\nlearning-rate = 1.0\n",
            too_long.display(),
            dir.path().join("out").display()
        ),
    )
    .unwrap();
    let stderr = fails(
        &prefsmith(&["train", "--config", &config_path.display().to_string()]),
        2,
    );
    assert!(
        stderr.contains("learning-rate") && stderr.contains("bad.toml"),
        "{stderr}"
    );
}

#[test]
fn the_cli_trains_on_a_selected_pair_table_and_the_model_scores() {
    let dir = tempdir();
    let pairs = dir.path().join("pairs");
    ok(&prefsmith(&[
        "select",
        "--input",
        &crate::common::data("arena_bench_v1_scored.parquet"),
        "--output",
        &pairs.display().to_string(),
    ]));
    let output = dir.path().join("run");
    let config_path = dir.path().join("train.toml");
    let tiny = std::fs::read_to_string(crate::common::repo().join("configs/train-tiny.toml"))
        .unwrap()
        .replace(
            "\"out/arena/pairs\"",
            &format!("{:?}", pairs.display().to_string()),
        )
        .replace(
            "\"out/train-tiny\"",
            &format!("{:?}", output.display().to_string()),
        )
        .replace("epochs = 1", "epochs = 1\nmax-steps = 2");
    std::fs::write(&config_path, tiny).unwrap();
    let stdout = ok(&prefsmith(&[
        "train",
        "--config",
        &config_path.display().to_string(),
    ]));
    assert!(
        stdout.contains("train: 2 steps on 269 pairs (30 held out"),
        "{stdout}"
    );
    // `--resume` on a finished run has nothing left to do and keeps the model.
    let stdout = ok(&prefsmith(&[
        "train",
        "--config",
        &config_path.display().to_string(),
        "--resume",
    ]));
    assert!(stdout.contains("train: 2 steps"), "{stdout}");
    // The trained model is a model like any other for `prefsmith score`.
    let short = dir.path().join("short.parquet");
    write_table(&short, synthetic(6, 9).columns());
    let scored = dir.path().join("scored");
    ok(&prefsmith(&[
        "score",
        "--input",
        &short.display().to_string(),
        "--output",
        &scored.display().to_string(),
        "--role",
        "policy",
        "--model",
        &output.join("model").display().to_string(),
        "--no-cache",
    ]));
    assert!(scored.join("_manifest.json").is_file());

    // Reference log-probs precomputed by `prefsmith score` with the trainer's truncation are
    // used as they are; scored with other limits, they are refused with the rows named.
    let long = dir.path().join("long.parquet");
    let mut task = synthetic(20, 10);
    task.chosen = task.chosen.iter().map(|c| c.repeat(6)).collect();
    write_table(&long, task.columns());
    let reference = |max_length: &str, out: &str| {
        let path = dir.path().join(out);
        ok(&prefsmith(&[
            "score",
            "--input",
            &long.display().to_string(),
            "--output",
            &path.display().to_string(),
            "--role",
            "reference",
            "--model",
            "tiny:0",
            "--max-length",
            max_length,
            "--max-prompt-length",
            "32",
        ]));
        path
    };
    let matching = reference("96", "ref96");
    let other = reference("80", "ref80");
    let train_on = |pairs: &Path, name: &str| {
        let config_path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config_path,
            format!(
                "[model]\nmodel = \"tiny:0\"\n[data]\npairs = {:?}\nmax-length = 96\n\
                 max-prompt-length = 32\neval-fraction = 0.0\n[run]\noutput = {:?}\nmax-steps = 1\n",
                pairs.display().to_string(),
                dir.path().join(name).display().to_string()
            ),
        )
        .unwrap();
        prefsmith(&["train", "--config", &config_path.display().to_string()])
    };
    ok(&train_on(&matching, "run96"));
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run96/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["data"]["reference_from_table"], true);
    assert!(
        summary["data"]["truncated"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let stderr = fails(&train_on(&other, "run80"), 1);
    assert!(
        stderr.contains("--max-length") && stderr.contains("prompt_id p00"),
        "{stderr}"
    );
}

/// The same, with a real kill: the CLI is SIGKILLed once its third checkpoint exists, wherever
/// it is then (mid-step, mid-evaluation or mid-checkpoint), and `--resume` still ends with
/// the bytes of a run that was never killed.
#[test]
fn a_killed_training_job_resumes_to_the_same_bytes() {
    let dir = tempdir();
    let pairs = dir.path().join("pairs.parquet");
    write_table(&pairs, synthetic(200, 6).columns());
    let write_config = |name: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[model]\nmodel = \"tiny:0\"\n[data]\npairs = {:?}\nmax-length = 96\n\
                 eval-fraction = 0.1\n[optim]\nlearning-rate = 1e-3\n[run]\noutput = {:?}\n\
                 epochs = 3\nmicro-batch-size = 4\ngradient-accumulation-steps = 2\n\
                 save-steps = 3\neval-steps = 5\nkeep-checkpoints = 50\n",
                pairs.display().to_string(),
                dir.path().join(name).display().to_string()
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let straight = write_config("straight");
    ok(&prefsmith(&["train", "--config", &straight]));

    let killed = write_config("killed");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_prefsmith"))
        .args(["train", "--config", &killed])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let third = dir.path().join("killed/checkpoints/step-00000009");
    let started = std::time::Instant::now();
    while !third.exists() {
        assert!(
            started.elapsed().as_secs() < 120,
            "no third checkpoint after 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.path().join("killed/model").exists(),
        "the job finished before it was killed; the test needs a longer run"
    );
    ok(&prefsmith(&["train", "--config", &killed, "--resume"]));
    for f in ["model/model.safetensors", "metrics.jsonl"] {
        assert!(
            file(&dir.path().join("straight").join(f)) == file(&dir.path().join("killed").join(f)),
            "{f} differs between the straight run and the killed and resumed one"
        );
    }
}

/// Gradient accumulation is exact up to rounding: 2 steps of 8 pairs as one micro-batch or as
/// 4 micro-batches of 2 (losses normalised by the whole step) give the same weights.
#[test]
fn accumulated_micro_batches_equal_one_large_batch() {
    let dir = tempdir();
    let pairs = dir.path().join("pairs.parquet");
    write_table(&pairs, synthetic(40, 8).columns());
    let mut weights = Vec::new();
    for (name, extra) in [
        (
            "one",
            "micro-batch-size = 8\nmax-steps = 2\n[loss]\ntypes = [\"ipo\", \"sft\"]",
        ),
        (
            "four",
            "micro-batch-size = 2\ngradient-accumulation-steps = 4\nmax-steps = 2\n\
             [loss]\ntypes = [\"ipo\", \"sft\"]",
        ),
    ] {
        let output = dir.path().join(name);
        runtime()
            .block_on(train(
                &config(&pairs, &output, extra),
                TrainOptions::default(),
            ))
            .unwrap();
        weights.push(
            prefsmith_model::weight_set::WeightSet::load_safetensors(
                &output.join("model/model.safetensors"),
            )
            .unwrap(),
        );
    }
    let start = LanguageModel::tiny(0, &DeviceSpec::Cpu.device().unwrap())
        .unwrap()
        .model
        .to_weights()
        .unwrap();
    let (mut moved, mut differ) = (0.0f64, 0.0f64);
    for (name, (_, a)) in weights[0].tensors() {
        let b = &weights[1].tensors()[name].1;
        let s = &start.tensors()[name].1;
        for ((x, y), z) in a.iter().zip(b).zip(s) {
            moved = moved.max((x - z).abs() as f64);
            differ = differ.max((x - y).abs() as f64);
        }
    }
    assert!(moved > 1e-3, "training moved the weights by only {moved}");
    assert!(
        differ < 1e-5,
        "accumulated and single-batch weights differ by {differ}"
    );
}
