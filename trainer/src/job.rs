//! The model stages of a job (`sample`, `reward`, `score`, `train`) behind the pipeline's
//! [`ModelStages`] hook, under the same contract as every other stage: a stage is up to date
//! when its output's manifest records the same settings (the model's content hash included)
//! and the same input files (paths, sizes, ETags); otherwise it runs again.
//!
//! `train` writes a local directory (checkpoints, `model/`, `metrics.jsonl`, `summary.json`).
//! In a job it also gets a `_manifest.json`, written last, so that a rerun knows it finished;
//! an unfinished run resumes from its newest checkpoint. A train output on S3 is trained in a
//! local staging directory and uploaded (model, metrics, summary, then the manifest). A
//! model named by a URL (`model = "s3://…/seed/model"`) is downloaded to a local cache first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use prefsmith_model::DeviceSpec;
use prefsmith_model::lm::{LanguageModel, TINY_PREFIX, hash_model_files};
use prefsmith_model::pretrained::models_dir;
use prefsmith_model::settings::ModelSettings;
use prefsmith_pipeline::config::ModelStageConfig;
use prefsmith_pipeline::input::{self, FileInfo};
use prefsmith_pipeline::job::ModelStages;
use prefsmith_pipeline::manifest::{InputInfo, MANIFEST_FILE, Manifest};
use prefsmith_pipeline::stages::{now_unix, stage_hash};
use prefsmith_pipeline::storage::{self, Location};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use crate::error::{Error, Result};
use crate::stages::{reward, sample, score, stable_hash64};
use crate::train::config::TrainConfig;
use crate::train::{self, TrainOptions};

/// Runs model stages for `prefsmith run`.
#[derive(Debug, Default)]
pub struct TrainerStages;

impl ModelStages for TrainerStages {
    fn run<'a>(
        &'a self,
        kind: &'static str,
        config: &'a ModelStageConfig,
        input: Option<String>,
        output: &'a str,
        key: &'a str,
        force: bool,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<(Manifest, bool)>> {
        Box::pin(async move {
            run_stage(kind, config, input, output, key, force)
                .await
                .map_err(|e| match e {
                    Error::Pipeline(e) => e,
                    Error::Config(message) => prefsmith_pipeline::Error::config(key, message),
                    other => prefsmith_pipeline::Error::InvalidData {
                        context: key.to_string(),
                        message: other.to_string(),
                    },
                })
        })
    }
}

/// The stage's settings as `T` (unknown keys are named).
fn settings<T: DeserializeOwned>(config: &ModelStageConfig, key: &str) -> Result<T> {
    let text =
        toml::to_string(&config.settings).map_err(|e| Error::Config(format!("{key}: {e}")))?;
    Ok(prefsmith_pipeline::config::parse_toml(&text, key)?)
}

fn need_input(input: Option<String>, key: &str) -> Result<String> {
    input.ok_or_else(|| Error::Config(format!("{key}: the first stage needs an 'input'")))
}

/// A model named by URL is fetched into a local cache (keyed by the URL and the objects'
/// sizes and ETags); a local path or alias stays as it is.
async fn local_model(spec: &str) -> Result<String> {
    if !storage::is_remote(spec) {
        return Ok(spec.to_string());
    }
    let root = Location::parse(spec)?;
    let objects = root.list().await?;
    if objects.is_empty() {
        return Err(Error::Input(format!("{spec}: no model files there")));
    }
    let mut identity = spec.to_string();
    for (location, meta) in &objects {
        identity.push_str(&format!("|{location}:{}:{:?}", meta.size, meta.e_tag));
    }
    let digest = stable_hash64(&identity);
    let dir = models_dir().join("remote").join(format!("{digest:016x}"));
    if !dir.join(".complete").is_file() {
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        for (location, _) in &objects {
            let name = root.relative_name(location).unwrap_or_default();
            let target = dir.join(&name);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
            }
            let bytes = location.read_bytes().await?;
            std::fs::write(&target, bytes).map_err(Error::io(&target))?;
        }
        std::fs::write(dir.join(".complete"), b"").map_err(Error::io(&dir))?;
        info!(model = spec, local = %dir.display(), "model fetched");
    }
    Ok(dir.display().to_string())
}

/// The content hash the stage will record for its model.
fn model_hash(model: &ModelSettings) -> Result<String> {
    let spec = model.resolved_model()?;
    if spec.starts_with(TINY_PREFIX) {
        let cpu = DeviceSpec::Cpu.device().map_err(Error::Config)?;
        return Ok(LanguageModel::load(&spec, &cpu)?.hash);
    }
    Ok(hash_model_files(Path::new(&spec))?)
}

fn same_inputs(recorded: &[InputInfo], current: &[FileInfo]) -> bool {
    recorded.len() == current.len()
        && recorded.iter().zip(current).all(|(r, c)| {
            r.path == c.location.to_string() && r.bytes == c.bytes && r.etag == c.etag
        })
}

async fn input_infos(input: &str) -> Result<Vec<FileInfo>> {
    // A JSONL prompts file has no footer; its bytes decide (the stage records their digest).
    if input.ends_with(".jsonl") || input.ends_with(".json") {
        return Ok(Vec::new());
    }
    Ok(input::resolve(input).await?.infos().await?)
}

/// The output's manifest, unless `force` asks to rerun regardless.
async fn existing_manifest(output: &str, force: bool) -> Result<Option<Manifest>> {
    if force {
        return Ok(None);
    }
    Ok(Manifest::read_dir(&Location::parse(output)?).await?)
}

/// Whether `manifest` records `stage`, `config` and `inputs`: the stage is up to date.
fn records(manifest: &Manifest, stage: &str, config: &impl Serialize, inputs: &[FileInfo]) -> bool {
    let config = serde_json::to_value(config).expect("stage configs serialize");
    manifest.stage == stage && manifest.config == config && same_inputs(&manifest.inputs, inputs)
}

async fn run_stage(
    kind: &'static str,
    config: &ModelStageConfig,
    input: Option<String>,
    output: &str,
    key: &str,
    force: bool,
) -> Result<(Manifest, bool)> {
    let input = need_input(input, key)?;
    let infos = input_infos(&input).await?;
    macro_rules! model_stage {
        ($config:ty, $module:ident) => {{
            let mut stage: $config = settings(config, key)?;
            stage.model.model = local_model(&stage.model.model).await?;
            let mut expected = stage.clone();
            expected.model_hash = Some(model_hash(&stage.model)?);
            if let Some(manifest) = existing_manifest(output, force).await?
                && records(&manifest, kind, &expected, &infos)
            {
                return Ok((manifest, true));
            }
            Ok(($module::run(&stage, &input, output).await?, false))
        }};
    }
    match kind {
        "sample" => model_stage!(sample::SampleConfig, sample),
        "reward" => model_stage!(reward::RewardConfig, reward),
        "score" => model_stage!(score::ScoreConfig, score),
        "train" => run_train(config, &input, &infos, output, key, force).await,
        other => Err(Error::Config(format!(
            "{key}: unknown model stage '{other}'"
        ))),
    }
}

/// Where a remote train output is trained before upload: `PREFSMITH_STAGING` or a cache
/// folder beside the models, one directory per output URL (so that a rerun resumes there).
fn staging_dir(output: &str) -> PathBuf {
    let digest = stable_hash64(output);
    let root = std::env::var_os("PREFSMITH_STAGING")
        .map(PathBuf::from)
        .unwrap_or_else(|| models_dir().with_file_name("train-staging"));
    root.join(format!("{digest:016x}"))
}

async fn run_train(
    config: &ModelStageConfig,
    input: &str,
    infos: &[FileInfo],
    output: &str,
    key: &str,
    force: bool,
) -> Result<(Manifest, bool)> {
    let mut table = config.settings.clone();
    let section = |table: &mut toml::Table, name: &str| -> Result<toml::Table> {
        match table.remove(name) {
            None => Ok(toml::Table::new()),
            Some(toml::Value::Table(t)) => Ok(t),
            Some(_) => Err(Error::Config(format!("{key}: '{name}' must be a table"))),
        }
    };
    let mut data = section(&mut table, "data")?;
    if data.contains_key("pairs") {
        return Err(Error::Config(format!(
            "{key}: in a job, train reads its stage input; give 'input', not data.pairs"
        )));
    }
    data.insert("pairs".into(), toml::Value::String(input.to_string()));
    table.insert("data".into(), toml::Value::Table(data));
    let local_output = if storage::is_remote(output) {
        staging_dir(output)
    } else {
        PathBuf::from(output)
    };
    let mut run = section(&mut table, "run")?;
    if run.contains_key("output") {
        return Err(Error::Config(format!(
            "{key}: in a job, train writes its stage output; give 'output', not run.output"
        )));
    }
    run.insert(
        "output".into(),
        toml::Value::String(local_output.display().to_string()),
    );
    table.insert("run".into(), toml::Value::Table(run));
    let mut model = section(&mut table, "model")?;
    if let Some(toml::Value::String(spec)) = model.get("model").cloned() {
        model.insert(
            "model".into(),
            toml::Value::String(local_model(&spec).await?),
        );
    }
    if let Some(toml::Value::String(spec)) = model.get("reference").cloned() {
        model.insert(
            "reference".into(),
            toml::Value::String(local_model(&spec).await?),
        );
    }
    table.insert("model".into(), toml::Value::Table(model));
    let text = toml::to_string(&table).map_err(|e| Error::Config(format!("{key}: {e}")))?;
    let train_config = TrainConfig::parse(&text, key)?;
    // What decides the result: the settings (output excluded: a staging path is not a
    // setting), the input files and the starting weights.
    let mut recorded = serde_json::to_value(&train_config).expect("configs serialize");
    recorded["run"]["output"] = serde_json::Value::String(output.to_string());
    let model_settings = ModelSettings {
        model: train_config.model.model.clone(),
        device: "cpu".into(),
        max_batch_tokens: 1,
    };
    recorded["model"]["model_hash"] = serde_json::Value::String(model_hash(&model_settings)?);
    let out_dir = Location::parse(output)?;
    let existing = Manifest::read_dir(&out_dir).await?;
    if !force
        && let Some(manifest) = existing.clone()
        && records(&manifest, "train", &recorded, infos)
    {
        return Ok((manifest, true));
    }
    let started = std::time::Instant::now();
    let started_unix = now_unix();
    // A finished run with other settings or inputs (or a forced rerun) starts over; a run
    // without a manifest was interrupted and resumes from its newest checkpoint.
    let finished_before = existing.is_some();
    out_dir.child(MANIFEST_FILE).delete().await?;
    if (force || finished_before) && local_output.exists() {
        std::fs::remove_dir_all(&local_output).map_err(Error::io(&local_output))?;
    }
    let report = train::train(
        &train_config,
        TrainOptions {
            resume: true,
            stop_after_step: None,
        },
    )
    .await?;
    if !report.completed {
        return Err(Error::Input(format!(
            "{key}: training stopped after {} of {} steps",
            report.steps, report.total_steps
        )));
    }
    if storage::is_remote(output) {
        upload_dir(&local_output, &out_dir, &["checkpoints"]).await?;
    }
    let stats: BTreeMap<String, serde_json::Value> = [
        ("steps", serde_json::json!(report.steps)),
        (
            "data",
            serde_json::to_value(&report.data).expect("stats serialize"),
        ),
        ("last_metrics", serde_json::json!(report.last_metrics)),
        ("eval_metrics", serde_json::json!(report.eval_metrics)),
        ("model", serde_json::json!(format!("{output}/model"))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let hash = stage_hash("train", &recorded, infos);
    let mut manifest = Manifest::new(
        "train",
        hash,
        &recorded,
        infos.iter().map(InputInfo::from).collect(),
        stats,
        started_unix,
    );
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    let mut text = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
    text.push('\n');
    out_dir
        .child(MANIFEST_FILE)
        .write_bytes(text.into_bytes())
        .await?;
    Ok((manifest, false))
}

/// Uploads the files below `dir` (except the `skip` sub-directories) to `target`.
async fn upload_dir(dir: &Path, target: &Location, skip: &[&str]) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).map_err(Error::io(&current))? {
            let path = entry.map_err(Error::io(&current))?.path();
            let relative = path
                .strip_prefix(dir)
                .expect("below dir")
                .to_string_lossy()
                .replace('\\', "/");
            if skip
                .iter()
                .any(|s| relative == *s || relative.starts_with(&format!("{s}/")))
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
                target.child(&relative).write_bytes(bytes).await?;
            }
        }
    }
    Ok(())
}
