//! Jobs: a TOML list of stages run in order, each reading the previous stage's output unless
//! it names an input. A stage whose output already holds a manifest with the same stage and
//! config hash is up to date and is skipped (unless forced), so a rerun after a crash resumes
//! at the first stage without a valid manifest.

use tracing::info;

use futures::future::BoxFuture;

use crate::config::{JobConfig, ModelStageConfig, StageConfig};
use crate::error::{Error, Result};
use crate::input;
use crate::manifest::Manifest;
use crate::stages::select::{self, RunOptions};
use crate::stages::{augment, clean, export, route, select_margin, synth};

/// What happened to one stage of a job.
#[derive(Debug, Clone)]
pub struct StageRun {
    /// The stage's kind.
    pub kind: &'static str,
    /// Its output directory (path or URL).
    pub output: String,
    /// The manifest now in the output directory.
    pub manifest: Manifest,
    /// Whether the stage was up to date and not run again.
    pub up_to_date: bool,
}

/// Runs the model stages of a job (sample, reward, score, train); the trainer crate provides
/// it. `run` returns the stage's manifest and whether it was up to date (not rerun).
pub trait ModelStages: Send + Sync {
    /// Runs stage `kind` from `input` into `output`, unless its output is up to date (and
    /// `force` is off). `key` names the stage in messages.
    fn run<'a>(
        &'a self,
        kind: &'static str,
        config: &'a ModelStageConfig,
        input: Option<String>,
        output: &'a str,
        key: &'a str,
        force: bool,
    ) -> BoxFuture<'a, Result<(Manifest, bool)>>;
}

/// Runs every stage of `job`; model stages go to `models` (an error naming the stage when
/// there is none).
pub async fn run(
    job: &JobConfig,
    source_name: &str,
    options: &RunOptions,
    force: bool,
    models: Option<&dyn ModelStages>,
) -> Result<Vec<StageRun>> {
    if job.stages.is_empty() {
        return Err(Error::config(source_name, "the job has no stages"));
    }
    if let Some(settings) = &job.storage {
        settings.validate(&format!("{source_name}: [storage]"))?;
        crate::storage::configure(settings.clone());
    }
    let total = job.stages.len();
    let mut previous: Option<String> = None;
    let mut runs = Vec::new();
    for (i, stage) in job.stages.iter().enumerate() {
        let key = format!("{source_name}: stages[{i}] ({})", stage.kind());
        let output = stage
            .output()
            .ok_or_else(|| Error::config(&key, "missing key 'output'"))?
            .to_string();
        info!(
            stage = stage.kind(),
            step = format!("{}/{total}", i + 1),
            %output,
            "job: stage"
        );
        let run = match stage {
            StageConfig::Sample(config)
            | StageConfig::Reward(config)
            | StageConfig::Score(config)
            | StageConfig::Train(config) => {
                let Some(models) = models else {
                    return Err(Error::config(
                        &key,
                        "this program cannot run model stages (use the prefsmith binary)",
                    ));
                };
                let input = match (&config.input, &previous) {
                    (Some(own), _) => Some(own.clone()),
                    (None, previous) => previous.clone(),
                };
                let (manifest, up_to_date) = models
                    .run(stage.kind(), config, input, &output, &key, force)
                    .await?;
                if up_to_date {
                    skip(stage.kind(), output.clone(), manifest)
                } else {
                    fresh(stage.kind(), output.clone(), manifest)
                }
            }
            StageConfig::Synth(config) => {
                let hash = synth::synth_config_hash(config);
                match up_to_date(&output, "synth", &hash, force).await? {
                    Some(manifest) => skip("synth", output.clone(), manifest),
                    None => fresh("synth", output.clone(), synth::run(config, &output).await?),
                }
            }
            StageConfig::Route(config) => {
                let input = stage_input(config.input.as_ref(), previous.as_ref(), &key)?;
                let hash = config.hash(&input::resolve(&input).await?.infos().await?);
                run_unless_up_to_date("route", &output, &hash, force, || {
                    route::run(config, &input, &output)
                })
                .await?
            }
            StageConfig::Augment(config) => {
                let input = stage_input(config.input.as_ref(), previous.as_ref(), &key)?;
                let hash = config.hash(&input::resolve(&input).await?.infos().await?);
                run_unless_up_to_date("augment", &output, &hash, force, || {
                    augment::run(config, &input, &output)
                })
                .await?
            }
            StageConfig::Clean(config) => {
                let input = stage_input(config.input.as_ref(), previous.as_ref(), &key)?;
                let hash = config.hash(&input::resolve(&input).await?.infos().await?);
                run_unless_up_to_date("clean", &output, &hash, force, || {
                    clean::run(config, &input, &output)
                })
                .await?
            }
            StageConfig::SelectMargin(config) => {
                let input = stage_input(config.input.as_ref(), previous.as_ref(), &key)?;
                let hash = config.hash(&input::resolve(&input).await?.infos().await?);
                run_unless_up_to_date("select-margin", &output, &hash, force, || {
                    select_margin::run(config, &input, &output)
                })
                .await?
            }
            StageConfig::Export(config) => {
                let input = stage_input(config.input.as_ref(), previous.as_ref(), &key)?;
                let hash = config.hash(&input::resolve(&input).await?.infos().await?);
                run_unless_up_to_date("export", &output, &hash, force, || {
                    export::run(config, &input, &output)
                })
                .await?
            }
            StageConfig::Select(config) => {
                let input = stage_input(config.input.as_ref(), previous.as_ref(), &key)?;
                let validated = input::validate(
                    input::resolve(&input).await?,
                    &config.columns,
                    config.input_format.response_layout()?,
                )
                .await?;
                let hash = select::select_config_hash(config, &validated);
                match up_to_date(&output, "select", &hash, force).await? {
                    Some(manifest) => skip("select", output.clone(), manifest),
                    None => fresh(
                        "select",
                        output.clone(),
                        select::run(config, &input, &output, options).await?,
                    ),
                }
            }
        };
        // A train stage writes a model, not a table: the next stage reads the last table.
        if !matches!(stage, StageConfig::Train(_)) {
            previous = Some(output);
        }
        runs.push(run);
    }
    Ok(runs)
}

/// Runs a stage through `run` unless `output` already holds its manifest with `hash`.
async fn run_unless_up_to_date<F, Fut>(
    kind: &'static str,
    output: &str,
    hash: &str,
    force: bool,
    run: F,
) -> Result<StageRun>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Manifest>>,
{
    Ok(match up_to_date(output, kind, hash, force).await? {
        Some(manifest) => skip(kind, output.to_string(), manifest),
        None => fresh(kind, output.to_string(), run().await?),
    })
}

/// A stage's input: its own `input`, else the previous stage's output.
fn stage_input(own: Option<&String>, previous: Option<&String>, key: &str) -> Result<String> {
    match (own, previous) {
        (Some(input), _) => Ok(input.clone()),
        (None, Some(prev)) => Ok(prev.clone()),
        (None, None) => Err(Error::config(key, "the first stage needs an 'input'")),
    }
}

async fn up_to_date(
    output: &str,
    stage: &str,
    hash: &str,
    force: bool,
) -> Result<Option<Manifest>> {
    if force {
        return Ok(None);
    }
    let dir = crate::storage::Location::parse(output)?;
    Ok(Manifest::read_dir(&dir)
        .await?
        .filter(|m| m.stage == stage && m.config_hash == hash))
}

fn skip(kind: &'static str, output: String, manifest: Manifest) -> StageRun {
    info!(stage = kind, output = %output, "up to date (same config and inputs); skipped");
    StageRun {
        kind,
        output,
        manifest,
        up_to_date: true,
    }
}

fn fresh(kind: &'static str, output: String, manifest: Manifest) -> StageRun {
    StageRun {
        kind,
        output,
        manifest,
        up_to_date: false,
    }
}
