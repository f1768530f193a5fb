//! The model stages of a job (`sample`, `reward`, `score`, `train`) as [`Stage`]s of the
//! pipeline's one contract: typed configs, registered beside the SQL stages
//! ([`stage_registry`]), run by the pipeline's one runner. What decides "up to date" for a
//! model stage is its resolved settings with the model's content hash, so a model rewritten
//! in place makes the stage rerun.
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
use prefsmith_pipeline::job::is_json_lines;
use prefsmith_pipeline::manifest::{InputInfo, MANIFEST_FILE, Manifest};
use prefsmith_pipeline::stage::{Stage, StageContext, StageRegistry};
use prefsmith_pipeline::stages::now_unix;
use prefsmith_pipeline::storage::{self, Location};
use serde::{Deserialize, Deserializer, Serialize};
use tracing::info;

use crate::error::{Error, Result};
use crate::stages::reward::{self, RewardConfig};
use crate::stages::sample::{self, SampleConfig};
use crate::stages::score::{self, ScoreConfig};
use crate::stages::stable_hash64;
use crate::train::config::TrainConfig;
use crate::train::{self, TrainOptions};

/// Every stage a `prefsmith` job can run: the pipeline's and the model stages.
pub fn stage_registry() -> StageRegistry {
    let mut registry = prefsmith_pipeline::stages::pipeline_stages();
    register_model_stages(&mut registry);
    registry
}

/// Adds `sample`, `reward`, `score` and `train` to `registry`.
pub fn register_model_stages(registry: &mut StageRegistry) {
    registry.register::<SampleConfig>("sample");
    registry.register::<RewardConfig>("reward");
    registry.register::<ScoreConfig>("score");
    registry.register::<TrainStage>("train");
    crate::experiment::register_task_stages(registry);
}

/// The trainer's error as the pipeline's, keeping its text and whether the data is at fault.
pub(crate) fn to_pipeline(error: Error) -> prefsmith_pipeline::Error {
    match error {
        Error::Pipeline(e) => e,
        other => prefsmith_pipeline::Error::Stage {
            data_problem: other.is_data_problem(),
            error: Box::new(other),
        },
    }
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

/// What `sample`, `reward` and `score` have in common: one model, whose content hash is part
/// of the stage's settings.
trait ModelStageConfig: Serialize + Clone + Send + Sync {
    fn model_mut(&mut self) -> &mut ModelSettings;
    fn set_model_hash(&mut self, hash: String);
}

macro_rules! model_stage_config {
    ($config:ty) => {
        impl ModelStageConfig for $config {
            fn model_mut(&mut self) -> &mut ModelSettings {
                &mut self.model
            }
            fn set_model_hash(&mut self, hash: String) {
                self.model_hash = Some(hash);
            }
        }
    };
}
model_stage_config!(SampleConfig);
model_stage_config!(RewardConfig);
model_stage_config!(ScoreConfig);

/// The config as it runs: a model named by URL fetched locally, and its content hash filled
/// in (as the stage records it in its manifest).
async fn resolved<C: ModelStageConfig>(config: &C) -> Result<C> {
    let mut config = config.clone();
    let model = config.model_mut();
    model.model = local_model(&model.model).await?;
    let hash = model_hash(model)?;
    config.set_model_hash(hash);
    Ok(config)
}

/// The same with the model fetched only (the stage fills the hash in from the model it loads).
async fn with_local_model<C: ModelStageConfig>(config: &C) -> Result<C> {
    let mut config = config.clone();
    let model = config.model_mut();
    model.model = local_model(&model.model).await?;
    Ok(config)
}

fn to_json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("stage configs serialize")
}

impl Stage for SampleConfig {
    fn kind(&self) -> &'static str {
        "sample"
    }
    fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }
    fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }
    /// The resolved config, the input's name and, for a JSON Lines prompts file (which has no
    /// footer to list), the digest of its bytes.
    fn settings<'a>(
        &'a self,
        ctx: &'a StageContext<'a>,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<serde_json::Value>> {
        Box::pin(async move {
            let input = ctx.input()?;
            let digest = match is_json_lines(input) {
                true => Some(sample::prompts_digest(input).await.map_err(to_pipeline)?),
                false => None,
            };
            let config = resolved(self).await.map_err(to_pipeline)?;
            Ok(serde_json::json!([config, input, digest]))
        })
    }
    fn run<'a>(
        &'a self,
        ctx: &'a StageContext<'a>,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<Manifest>> {
        Box::pin(async move {
            let config = with_local_model(self).await;
            let run = async { sample::run(&config?, ctx.input()?, ctx.output, ctx.hash).await };
            run.await.map_err(to_pipeline)
        })
    }
}

/// `reward` and `score`: the resolved config alone (their inputs are tables, listed by the
/// runner).
macro_rules! table_model_stage {
    ($config:ty, $kind:literal, $module:ident) => {
        impl Stage for $config {
            fn kind(&self) -> &'static str {
                $kind
            }
            fn input(&self) -> Option<&str> {
                self.input.as_deref()
            }
            fn output(&self) -> Option<&str> {
                self.output.as_deref()
            }
            fn settings<'a>(
                &'a self,
                _: &'a StageContext<'a>,
            ) -> BoxFuture<'a, prefsmith_pipeline::Result<serde_json::Value>> {
                Box::pin(async move {
                    let config = resolved(self).await.map_err(to_pipeline)?;
                    Ok(to_json(&config))
                })
            }
            fn run<'a>(
                &'a self,
                ctx: &'a StageContext<'a>,
            ) -> BoxFuture<'a, prefsmith_pipeline::Result<Manifest>> {
                Box::pin(async move {
                    let config = with_local_model(self).await;
                    let run =
                        async { $module::run(&config?, ctx.input()?, ctx.output, ctx.hash).await };
                    run.await.map_err(to_pipeline)
                })
            }
        }
    };
}
table_model_stage!(RewardConfig, "reward", reward);
table_model_stage!(ScoreConfig, "score", score);

/// The `train` stage of a job: the training config of `prefsmith train --config` without
/// `data.pairs` and `run.output`, which are the stage's `input` (default: the previous
/// table) and `output`. Checked in full when the job is parsed.
#[derive(Debug, Clone)]
pub struct TrainStage {
    /// The pair table (default: the previous stage's output).
    pub input: Option<String>,
    /// The output directory (local or a URL: then trained in a staging directory and
    /// uploaded).
    pub output: Option<String>,
    /// Every other setting; `data.pairs` and `run.output` are filled in when the stage runs.
    pub config: TrainConfig,
}

impl<'de> Deserialize<'de> for TrainStage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(deserializer)?;
        Self::from_table(table).map_err(serde::de::Error::custom)
    }
}

impl TrainStage {
    /// The stage from a job's table (without `kind`).
    pub fn from_table(mut table: toml::Table) -> std::result::Result<Self, String> {
        let mut path = |name: &str| match table.remove(name) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("'{name}' must be a string")),
        };
        let input = path("input")?;
        let output = path("output")?;
        let mut section = |name: &str| match table.remove(name) {
            None => Ok(toml::Table::new()),
            Some(toml::Value::Table(t)) => Ok(t),
            Some(_) => Err(format!("'{name}' must be a table")),
        };
        let mut data = section("data")?;
        let mut run = section("run")?;
        let model = section("model")?;
        if data.contains_key("pairs") {
            return Err(
                "in a job, train reads its stage input; give 'input', not data.pairs".into(),
            );
        }
        if run.contains_key("output") {
            return Err(
                "in a job, train writes its stage output; give 'output', not run.output".into(),
            );
        }
        // Filled in with the stage's input and output when it runs.
        data.insert("pairs".into(), toml::Value::String(String::new()));
        run.insert("output".into(), toml::Value::String(String::new()));
        table.insert("data".into(), toml::Value::Table(data));
        table.insert("run".into(), toml::Value::Table(run));
        table.insert("model".into(), toml::Value::Table(model));
        let config: TrainConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().trim_end().to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(Self {
            input,
            output,
            config,
        })
    }

    /// The config as it trains (pairs, a local output directory, models fetched locally) and
    /// the settings that decide whether an existing output is up to date: the same with the
    /// stage's own output and the starting weights' content hash.
    async fn resolve(&self, ctx: &StageContext<'_>) -> Result<(TrainConfig, serde_json::Value)> {
        let mut config = self.config.clone();
        config.data.pairs = ctx.input()?.to_string();
        config.run.output = if storage::is_remote(ctx.output) {
            staging_dir(ctx.output)
        } else {
            PathBuf::from(ctx.output)
        };
        config.model.model = local_model(&config.model.model).await?;
        if let Some(reference) = &config.model.reference {
            config.model.reference = Some(local_model(reference).await?);
        }
        // A staging path is not a setting: the stage's output is recorded instead.
        let mut recorded = to_json(&config);
        recorded["run"]["output"] = serde_json::Value::String(ctx.output.to_string());
        let starting_weights = ModelSettings {
            model: config.model.model.clone(),
            device: "cpu".into(),
            max_batch_tokens: 1,
        };
        recorded["model"]["model_hash"] = serde_json::Value::String(model_hash(&starting_weights)?);
        Ok((config, recorded))
    }

    async fn train(&self, ctx: &StageContext<'_>) -> Result<Manifest> {
        let (config, recorded) = self.resolve(ctx).await?;
        let local_output = config.run.output.clone();
        let out_dir = Location::parse(ctx.output)?;
        let started = std::time::Instant::now();
        let started_unix = now_unix();
        // The runner calls this only when the output is not up to date: a finished run with
        // other settings or inputs (or a forced rerun) starts over; a run without a manifest
        // was interrupted and resumes from its newest checkpoint.
        let finished_before = Manifest::read_dir(&out_dir).await?.is_some();
        out_dir.child(MANIFEST_FILE).delete().await?;
        if (ctx.force || finished_before) && local_output.exists() {
            std::fs::remove_dir_all(&local_output).map_err(Error::io(&local_output))?;
        }
        let report = train::train(
            &config,
            TrainOptions {
                resume: true,
                stop_after_step: None,
            },
        )
        .await?;
        if !report.completed {
            return Err(Error::Input(format!(
                "{}: training stopped after {} of {} steps",
                ctx.key, report.steps, report.total_steps
            )));
        }
        if storage::is_remote(ctx.output) {
            upload_dir(&local_output, &out_dir, &["checkpoints"]).await?;
        }
        let stats: BTreeMap<String, serde_json::Value> = [
            ("steps", serde_json::json!(report.steps)),
            ("data", to_json(&report.data)),
            ("last_metrics", serde_json::json!(report.last_metrics)),
            ("eval_metrics", serde_json::json!(report.eval_metrics)),
            ("model", serde_json::json!(format!("{}/model", ctx.output))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut manifest = Manifest::new(
            "train",
            ctx.hash.to_string(),
            &recorded,
            ctx.inputs.iter().map(InputInfo::from).collect(),
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
        Ok(manifest)
    }
}

impl Stage for TrainStage {
    fn kind(&self) -> &'static str {
        "train"
    }
    fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }
    fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }
    /// `train` writes a model: the stage after it reads the last table before it.
    fn writes_table(&self) -> bool {
        false
    }
    fn settings<'a>(
        &'a self,
        ctx: &'a StageContext<'a>,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<serde_json::Value>> {
        Box::pin(async move {
            let resolved = self.resolve(ctx).await.map_err(to_pipeline)?;
            Ok(resolved.1)
        })
    }
    fn run<'a>(
        &'a self,
        ctx: &'a StageContext<'a>,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<Manifest>> {
        Box::pin(async move { self.train(ctx).await.map_err(to_pipeline) })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> prefsmith_pipeline::Result<Box<dyn Stage>> {
        prefsmith_pipeline::job::Job::parse(text, "job.toml", &stage_registry())
            .map(|job| job.stages.into_iter().next().expect("one stage"))
    }

    #[test]
    fn model_stages_are_typed_when_the_job_is_parsed() {
        let err = parse(
            "[[stages]]\nkind = \"train\"\noutput = \"o\"\n[stages.model]\nmodel = \"tiny:0\"\n[stages.loss]\ntypo = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("stages[0] (train)") && err.contains("typo"),
            "{err}"
        );
        let err =
            parse("[[stages]]\nkind = \"sample\"\nmodel = \"tiny:0\"\nn = 2\ntemprature = 1.0\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("stages[0] (sample)") && err.contains("temprature"),
            "{err}"
        );
        let err = parse(
            "[[stages]]\nkind = \"train\"\noutput = \"o\"\n[stages.model]\nmodel = \"tiny:0\"\n[stages.data]\npairs = \"p\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("give 'input', not data.pairs"), "{err}");
        let stage = parse(
            "[[stages]]\nkind = \"train\"\ninput = \"pairs\"\noutput = \"o\"\n[stages.model]\nmodel = \"tiny:0\"\n",
        )
        .unwrap();
        assert_eq!(
            (
                stage.kind(),
                stage.input(),
                stage.output(),
                stage.writes_table()
            ),
            ("train", Some("pairs"), Some("o"), false)
        );
    }
}
