//! `prefsmith report`: one self-contained HTML page per run that shows what the data and the
//! training did: the job's stages, then one section per stage with its plots (inline SVG, no
//! scripts, fonts or network) and a table of every figure its manifest records.
//!
//! A report is made of a path that is a stage output (a directory with `_manifest.json`), a
//! job's output root (a directory whose subdirectories hold stage outputs) or a job config
//! (every stage it lists, found or not). `prefsmith run` writes one at the end of every job,
//! failed ones included. Every stage gets a section: one without an output, with a stale or
//! empty output, or whose data cannot be read says so instead of being left out.

mod figures;
mod html;
mod plot;
mod query;
mod sections;

use tracing::info;

use crate::error::{Error, Result};
use crate::job::{self, Job, JobFailure, StageRun};
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::stage::RunOptions;
use crate::storage::Location;

pub use figures::Histogram;

/// A rendered stage section.
#[derive(Debug, Clone)]
pub struct Section {
    /// The element id (`stage-3-select`).
    pub id: String,
    /// The stage's kind.
    pub kind: String,
    /// The heading.
    pub title: String,
    /// The stage's state.
    pub state: StageState,
    /// The section's body.
    pub html: String,
}

/// Where a stage stands in the report.
#[derive(Debug, Clone, PartialEq)]
pub enum StageState {
    /// It ran in this job.
    Ran,
    /// Its output was up to date, so it was not run again.
    UpToDate,
    /// Its output exists but was written with other settings or inputs than the job's.
    Stale,
    /// Its output exists; whether it is up to date could not be checked.
    Found,
    /// It failed, with this error.
    Failed(String),
    /// It has no output: it has not run (an earlier stage failed, or the job never ran).
    NotRun,
}

impl StageState {
    /// A short label for the page.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ran => "ran",
            Self::UpToDate => "up to date, not rerun",
            Self::Stale => "stale: settings or inputs changed since",
            Self::Found => "output found",
            Self::Failed(_) => "failed",
            Self::NotRun => "not run: no output",
        }
    }
}

/// One stage of the report.
#[derive(Debug, Clone)]
pub struct StageEntry {
    /// The stage's kind (`select`, `train`, …).
    pub kind: String,
    /// Its output directory (path or URL).
    pub output: String,
    /// Where it stands.
    pub state: StageState,
    /// Its manifest, when its output has one.
    pub manifest: Option<Manifest>,
}

/// What a report shows: a title, where it came from, and the stages in order.
#[derive(Debug, Clone)]
pub struct Run {
    /// The page title (the job's name, or the stage output).
    pub title: String,
    /// The path the report was made from.
    pub source: String,
    /// The stages, in job order (or in the order they ran, for an output root).
    pub stages: Vec<StageEntry>,
    /// Where the report goes unless told otherwise.
    pub default_output: String,
}

/// Reads what `path` names (a stage output, a job's output root or a job config) into a
/// [`Run`]. A job config's stages are checked against their outputs without running anything.
pub async fn load(
    path: &str,
    registry: &crate::stage::StageRegistry,
    options: &RunOptions,
) -> Result<Run> {
    if path.ends_with(".toml") {
        let job = Job::load(std::path::Path::new(path), registry)?;
        if let Some(settings) = &job.storage {
            crate::storage::configure(settings.clone());
        }
        let states = job::status(&job, options).await;
        let stages = job
            .stages
            .iter()
            .zip(states)
            .map(|(stage, (manifest, fresh))| StageEntry {
                kind: stage.kind().to_string(),
                output: stage.output().unwrap_or("?").to_string(),
                state: match (&manifest, fresh) {
                    (None, _) => StageState::NotRun,
                    (Some(_), Some(true)) => StageState::UpToDate,
                    (Some(_), Some(false)) => StageState::Stale,
                    (Some(_), None) => StageState::Found,
                },
                manifest,
            })
            .collect();
        return Ok(of_job(&job, stages));
    }
    let location = Location::parse(path)?;
    if let Some(manifest) = Manifest::read_dir(&location).await? {
        let output = path.trim_end_matches('/').to_string();
        return Ok(Run {
            title: format!("{} stage: {output}", manifest.stage),
            source: path.to_string(),
            default_output: format!("{output}.report.html"),
            stages: vec![StageEntry {
                kind: manifest.stage.clone(),
                output,
                state: StageState::Found,
                manifest: Some(manifest),
            }],
        });
    }
    output_root(path, &location).await
}

/// A job's output root: every stage output below it, in the order the stages started.
async fn output_root(path: &str, location: &Location) -> Result<Run> {
    if location.local_path().is_some_and(|p| !p.exists()) {
        return Err(Error::NotFound {
            path: path.to_string(),
        });
    }
    let root = path.trim_end_matches('/');
    let mut stages = Vec::new();
    for (file, _) in location.list().await? {
        let Some(relative) = location.relative_name(&file) else {
            continue;
        };
        let Some(dir) = relative.strip_suffix(&format!("/{MANIFEST_FILE}")) else {
            continue;
        };
        // A stage output's own subdirectories (a model, checkpoints) are part of it.
        if stages
            .iter()
            .any(|(d, _): &(String, Manifest)| dir.starts_with(&format!("{d}/")))
        {
            continue;
        }
        if let Some(manifest) = Manifest::read_at(&file).await? {
            stages.push((dir.to_string(), manifest));
        }
    }
    if stages.is_empty() {
        return Err(Error::config(
            path,
            format!(
                "no {MANIFEST_FILE} here or in its subdirectories: not a stage output, a job's \
                 output root or a job config (.toml)"
            ),
        ));
    }
    stages.sort_by(|a, b| a.1.timing.started_unix.total_cmp(&b.1.timing.started_unix));
    Ok(Run {
        title: format!("outputs under {root}"),
        source: path.to_string(),
        default_output: format!("{root}/report.html"),
        stages: stages
            .into_iter()
            .map(|(dir, manifest)| StageEntry {
                kind: manifest.stage.clone(),
                output: format!("{root}/{dir}"),
                state: StageState::Found,
                manifest: Some(manifest),
            })
            .collect(),
    })
}

/// The report of a job that just ran: every stage, the failed one and those after it included.
pub fn of_job_run(job: &Job, outcome: &std::result::Result<Vec<StageRun>, JobFailure>) -> Run {
    let (runs, failure) = match outcome {
        Ok(runs) => (runs.as_slice(), None),
        Err(f) => (f.runs.as_slice(), Some(f)),
    };
    let stages = job
        .stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let output = stage.output().unwrap_or("?").to_string();
            match (runs.get(i), failure) {
                (Some(run), _) => StageEntry {
                    kind: run.kind.to_string(),
                    output: run.output.clone(),
                    state: if run.up_to_date {
                        StageState::UpToDate
                    } else {
                        StageState::Ran
                    },
                    manifest: Some(run.manifest.clone()),
                },
                (None, Some(f)) if f.failed == i => StageEntry {
                    kind: stage.kind().to_string(),
                    output,
                    state: StageState::Failed(f.error.to_string()),
                    manifest: None,
                },
                _ => StageEntry {
                    kind: stage.kind().to_string(),
                    output,
                    state: StageState::NotRun,
                    manifest: None,
                },
            }
        })
        .collect();
    of_job(job, stages)
}

fn of_job(job: &Job, stages: Vec<StageEntry>) -> Run {
    let outputs: Vec<&str> = stages.iter().map(|s| s.output.as_str()).collect();
    let name = std::path::Path::new(&job.source)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| job.source.clone());
    Run {
        title: format!("job {name}"),
        source: job.source.clone(),
        default_output: default_job_output(&outputs),
        stages,
    }
}

/// `report.html` in the deepest directory that holds every stage output (the job's output
/// root); for one stage, beside its output.
fn default_job_output(outputs: &[&str]) -> String {
    if let [only] = outputs {
        return format!("{}.report.html", only.trim_end_matches('/'));
    }
    let parents: Vec<Vec<&str>> = outputs
        .iter()
        .map(|o| {
            let segments: Vec<&str> = o.trim_end_matches('/').split('/').collect();
            segments[..segments.len().saturating_sub(1)].to_vec()
        })
        .collect();
    let mut common: Vec<&str> = parents.first().cloned().unwrap_or_default();
    for p in &parents[1..] {
        let same = common.iter().zip(p).take_while(|(a, b)| a == b).count();
        common.truncate(same);
    }
    // `s3://bucket` has three segments: keep at least the bucket.
    let joined = common.join("/");
    if joined.is_empty() {
        "report.html".to_string()
    } else if joined.ends_with(':') || joined.ends_with(":/") {
        format!("{}/report.html", outputs[0].trim_end_matches('/'))
    } else {
        format!("{joined}/report.html")
    }
}

/// Renders `run` and writes the page to `output` (default: [`Run::default_output`]) in one
/// write, so no half-written page is left; returns where it went.
pub async fn write(run: &Run, output: Option<&str>, options: &RunOptions) -> Result<String> {
    let page = render(run, options).await?;
    let dest = output.unwrap_or(&run.default_output).to_string();
    Location::parse(&dest)?
        .write_bytes(page.into_bytes())
        .await?;
    info!(report = %dest, stages = run.stages.len(), "report written");
    Ok(dest)
}

/// The page of `run`, as HTML text.
pub async fn render(run: &Run, options: &RunOptions) -> Result<String> {
    let mut parts = Vec::with_capacity(run.stages.len());
    for (i, stage) in run.stages.iter().enumerate() {
        parts.push(sections::section(i, stage, options).await);
    }
    Ok(html::page(run, &parts))
}

#[cfg(test)]
mod tests {
    use super::default_job_output;

    #[test]
    fn the_report_lands_in_the_jobs_output_root() {
        assert_eq!(
            default_job_output(&["out/q/responses", "out/q/pairs", "out/q/model"]),
            "out/q/report.html"
        );
        assert_eq!(default_job_output(&["out/pairs"]), "out/pairs.report.html");
        assert_eq!(default_job_output(&["a", "b"]), "report.html");
        assert_eq!(
            default_job_output(&["s3://b/out/x", "s3://b/out/y"]),
            "s3://b/out/report.html"
        );
    }
}
