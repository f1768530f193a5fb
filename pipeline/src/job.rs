//! The one job runner: a TOML list of stages run in order, each a typed [`Stage`] built by a
//! [`StageRegistry`]. Whatever is the same for every stage happens here and nowhere else:
//!
//! * a stage reads the previous stage's table unless it names an `input` (a stage that writes
//!   no table, `train`, is skipped over);
//! * a stage is up to date when its output holds a manifest of the same stage whose hash is
//!   the hash of the stage's resolved settings (model content hashes included) and its input
//!   files; then it is skipped unless forced, so a rerun after a crash resumes at the first
//!   stage without a valid manifest;
//! * CLI subcommands run their one stage through [`run_stage`], always (forced).

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::error::{Error, Result};
use crate::input::{self, FileInfo};
use crate::manifest::Manifest;
use crate::stage::{RunOptions, Stage, StageContext, StageRegistry, stage_hash};
use crate::storage::Location;

/// A job file as written: a name, storage settings and the stages' tables, which
/// [`Job::parse`] turns into typed stages at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobFile {
    /// A name for logs (default: the file's stem).
    #[serde(default)]
    pub name: Option<String>,
    /// How S3 stores are reached (endpoint, region, retries, concurrency); credentials come
    /// from the environment only.
    #[serde(default)]
    pub storage: Option<crate::storage::StorageSettings>,
    /// The stages, each a table with its `kind`.
    pub stages: Vec<toml::Table>,
}

/// A job: typed stages, run in order.
#[derive(Debug)]
pub struct Job {
    /// Names the job file in messages.
    pub source: String,
    /// Storage settings, if the job has any.
    pub storage: Option<crate::storage::StorageSettings>,
    /// The stages.
    pub stages: Vec<Box<dyn Stage>>,
}

impl Job {
    /// Parses a job's TOML text; every stage is built (and its keys checked) before any runs.
    pub fn parse(text: &str, source: &str, registry: &StageRegistry) -> Result<Self> {
        let file: JobFile = crate::config::parse_toml(text, source)?;
        if file.stages.is_empty() {
            return Err(Error::config(source, "the job has no stages"));
        }
        if let Some(settings) = &file.storage {
            settings.validate(&format!("{source}: [storage]"))?;
        }
        let stages = file
            .stages
            .into_iter()
            .enumerate()
            .map(|(i, table)| {
                let kind = table.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
                let key = format!("{source}: stages[{i}] ({kind})");
                registry.parse(table, &key)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            source: source.to_string(),
            storage: file.storage,
            stages,
        })
    }

    /// Reads and parses a job file.
    pub fn load(path: &std::path::Path, registry: &StageRegistry) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Self::parse(&text, &path.display().to_string(), registry)
    }

    /// The key that names stage `i` in messages.
    fn key(&self, i: usize) -> String {
        format!("{}: stages[{i}] ({})", self.source, self.stages[i].kind())
    }
}

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

/// A job that stopped at a stage: what ran before it, which stage failed, and why.
#[derive(Debug)]
pub struct JobFailure {
    /// The stages that completed (ran or were up to date), in order.
    pub runs: Vec<StageRun>,
    /// The index of the stage that failed.
    pub failed: usize,
    /// Its error.
    pub error: Error,
}

/// Runs every stage of `job` in order.
pub async fn run(job: &Job, options: &RunOptions, force: bool) -> Result<Vec<StageRun>> {
    run_reporting(job, options, force)
        .await
        .map_err(|f| f.error)
}

/// As [`run`], but a failure keeps the stages that completed before it (for the run's report).
pub async fn run_reporting(
    job: &Job,
    options: &RunOptions,
    force: bool,
) -> std::result::Result<Vec<StageRun>, JobFailure> {
    if let Some(settings) = &job.storage {
        crate::storage::configure(settings.clone());
    }
    let total = job.stages.len();
    let mut previous: Option<String> = None;
    let mut runs = Vec::with_capacity(total);
    for (i, stage) in job.stages.iter().enumerate() {
        let key = job.key(i);
        info!(
            stage = stage.kind(),
            step = format!("{}/{total}", i + 1),
            output = stage.output().unwrap_or("?"),
            "job: stage"
        );
        let input = stage
            .input()
            .map(str::to_string)
            .or_else(|| previous.clone());
        match run_stage(stage.as_ref(), input.as_deref(), options, force, &key).await {
            Ok(run) => {
                if stage.writes_table() {
                    previous = Some(run.output.clone());
                }
                runs.push(run);
            }
            Err(error) => {
                return Err(JobFailure {
                    runs,
                    failed: i,
                    error,
                });
            }
        }
    }
    Ok(runs)
}

/// Where each stage of `job` stands without running anything: its manifest, if its output has
/// one, and whether that manifest is up to date with the stage's settings and inputs (`None`
/// when that cannot be known, for instance because an input is missing).
pub async fn status(job: &Job, options: &RunOptions) -> Vec<(Option<Manifest>, Option<bool>)> {
    let mut previous: Option<String> = None;
    let mut states = Vec::with_capacity(job.stages.len());
    for (i, stage) in job.stages.iter().enumerate() {
        let key = job.key(i);
        let input = stage
            .input()
            .map(str::to_string)
            .or_else(|| previous.clone());
        if stage.writes_table() {
            previous = stage.output().map(str::to_string);
        }
        let manifest = match stage.output().map(Location::parse) {
            Some(Ok(location)) => Manifest::read_dir(&location).await.ok().flatten(),
            _ => None,
        };
        let manifest = manifest.filter(|m| m.stage == stage.kind());
        let fresh = match &manifest {
            Some(m) => stage_hash_of(stage.as_ref(), input.as_deref(), options, &key)
                .await
                .ok()
                .map(|hash| hash == m.config_hash),
            None => None,
        };
        states.push((manifest, fresh));
    }
    states
}

/// The hash that decides whether `stage` is up to date, as [`run_stage`] computes it.
async fn stage_hash_of(
    stage: &dyn Stage,
    input: Option<&str>,
    options: &RunOptions,
    key: &str,
) -> Result<String> {
    let output = stage
        .output()
        .ok_or_else(|| Error::config(key, "missing key 'output'"))?;
    let input = if stage.reads_input() { input } else { None };
    let inputs = match input {
        Some(input) => input_files(input).await?,
        None => Vec::new(),
    };
    let ctx = StageContext {
        input,
        output,
        inputs: &inputs,
        hash: "",
        options,
        key,
        force: false,
    };
    let settings = stage.settings(&ctx).await?;
    Ok(stage_hash(stage.kind(), &settings, &inputs))
}

/// Runs one stage unless its output is up to date (and `force` is off): the one up-to-date
/// check of the project. `input` is the stage's input after defaulting; `key` names the stage
/// in messages.
pub async fn run_stage(
    stage: &dyn Stage,
    input: Option<&str>,
    options: &RunOptions,
    force: bool,
    key: &str,
) -> Result<StageRun> {
    let kind = stage.kind();
    let output = stage
        .output()
        .ok_or_else(|| Error::config(key, "missing key 'output'"))?;
    let input = if stage.reads_input() {
        Some(input.ok_or_else(|| Error::config(key, "the first stage needs an 'input'"))?)
    } else {
        None
    };
    let inputs = match input {
        Some(input) => input_files(input).await?,
        None => Vec::new(),
    };
    let mut ctx = StageContext {
        input,
        output,
        inputs: &inputs,
        hash: "",
        options,
        key,
        force,
    };
    let settings = stage.settings(&ctx).await?;
    let hash = stage_hash(kind, &settings, &inputs);
    if !force
        && let Some(manifest) = Manifest::read_dir(&Location::parse(output)?).await?
        && manifest.stage == kind
        && manifest.config_hash == hash
    {
        info!(
            stage = kind,
            output, "up to date (same settings and inputs); skipped"
        );
        return Ok(StageRun {
            kind,
            output: output.to_string(),
            manifest,
            up_to_date: true,
        });
    }
    ctx.hash = &hash;
    let manifest = stage.run(&ctx).await?;
    // A stage that recorded another hash would never be found up to date again.
    debug_assert_eq!(
        manifest.config_hash, hash,
        "{key}: the stage recorded another hash"
    );
    Ok(StageRun {
        kind,
        output: output.to_string(),
        manifest,
        up_to_date: false,
    })
}

/// The input files a stage hash lists: the footers of a table's files. A JSON Lines prompts
/// file has no footer; `sample` puts its size and version tag into its settings instead.
async fn input_files(input: &str) -> Result<Vec<FileInfo>> {
    if is_json_lines(input) {
        return Ok(Vec::new());
    }
    input::resolve(input).await?.infos().await
}

/// Whether `spec` names a JSON Lines file (read by `sample`) rather than a table.
pub fn is_json_lines(spec: &str) -> bool {
    spec.ends_with(".jsonl") || spec.ends_with(".json")
}
