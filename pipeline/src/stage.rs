//! The stage contract: one trait that every stage implements — the SQL stages of this crate
//! and the model stages of the trainer — and the registry that turns a job's `[[stages]]`
//! table (or a CLI subcommand's flags) into a typed stage.
//!
//! A stage is its typed config (serde, unknown keys named). It tells the runner
//! ([`crate::job`]) where it reads and writes, which resolved settings decide whether an
//! existing output is up to date ([`Stage::settings`]: model content hashes included), and
//! runs, returning the manifest it committed. The runner owns everything that is the same for
//! every stage: the input that defaults to the previous stage's output, the up-to-date check
//! (one hash of the settings and the input files, compared with the output's manifest), the
//! logging, and `--force`. `docs/ALGORITHMS.md` §0 states the contract of stage outputs.
//!
//! Adding a stage is one file that defines its config and implements [`Stage`], plus one
//! `register` line (see README, "Adding a stage").

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::input::FileInfo;
use crate::manifest::Manifest;

/// Options of one run that are not part of any stage's configuration (they do not change
/// what a stage writes, so they are not in its hash).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Worker threads for queries (0 = one per core).
    pub threads: usize,
}

/// What the runner hands a stage: where to read and write, and the hash to record.
#[derive(Debug, Clone)]
pub struct StageContext<'a> {
    /// The input: the stage's own `input`, else the previous stage's output (`None` only for
    /// a stage that reads nothing).
    pub input: Option<&'a str>,
    /// The output directory (path or URL).
    pub output: &'a str,
    /// The input files as listed for the hash (footers read once, by the runner).
    pub inputs: &'a [FileInfo],
    /// The hash of the stage's settings and inputs, to be recorded in its manifest.
    pub hash: &'a str,
    /// How to run.
    pub options: &'a RunOptions,
    /// Names the stage in messages (`job.toml: stages[2] (clean)`).
    pub key: &'a str,
    /// Whether the run was forced: a stage that resumes interrupted work (`train`) starts
    /// over instead.
    pub force: bool,
}

impl StageContext<'_> {
    /// The input, or an error naming the stage when there is none.
    pub fn input(&self) -> Result<&str> {
        self.input
            .ok_or_else(|| Error::config(self.key, "the first stage needs an 'input'"))
    }
}

/// One stage of the pipeline.
pub trait Stage: Debug + Send + Sync {
    /// The stage's name, as in a job's `kind`.
    fn kind(&self) -> &'static str;

    /// The stage's own `input`, if it names one.
    fn input(&self) -> Option<&str>;

    /// The stage's `output`.
    fn output(&self) -> Option<&str>;

    /// Whether the stage reads an input (`synth` does not).
    fn reads_input(&self) -> bool {
        true
    }

    /// Whether the output is a table the next stage reads (`train` writes a model, so the
    /// stage after it reads the last table before it).
    fn writes_table(&self) -> bool {
        true
    }

    /// The resolved settings that decide whether an existing output is up to date; they are
    /// hashed with the input listing. Model stages add their models' content hashes here.
    fn settings<'a>(
        &'a self,
        ctx: &'a StageContext<'a>,
    ) -> BoxFuture<'a, Result<serde_json::Value>>;

    /// Runs the stage from `ctx.input` into `ctx.output` and returns the manifest it
    /// committed, which records `ctx.hash`.
    fn run<'a>(&'a self, ctx: &'a StageContext<'a>) -> BoxFuture<'a, Result<Manifest>>;
}

/// The settings of a stage whose config alone decides its output: the config as JSON.
pub fn config_settings<'a>(
    config: &impl serde::Serialize,
) -> BoxFuture<'a, Result<serde_json::Value>> {
    let value = serde_json::to_value(config).expect("stage configs serialize");
    Box::pin(std::future::ready(Ok(value)))
}

/// Hash of a stage's name and resolved settings (canonical JSON).
pub fn config_hash(stage: &str, value: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(stage.as_bytes());
    hasher.update(b"\0");
    hasher.update(value.to_string().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash deciding whether a stage's existing output is up to date: its settings and its
/// input files (paths, sizes, version tags, modification times).
pub fn stage_hash(stage: &str, settings: &serde_json::Value, infos: &[FileInfo]) -> String {
    config_hash(
        stage,
        &serde_json::json!({"config": settings, "inputs": input_listing(infos)}),
    )
}

/// The input files as they enter a stage hash: path, size, version tag and modification
/// time, so that a rewritten input makes the stage rerun.
pub fn input_listing(infos: &[FileInfo]) -> serde_json::Value {
    infos
        .iter()
        .map(|i| serde_json::json!([i.location.to_string(), i.bytes, i.etag, i.modified_nanos]))
        .collect()
}

/// Builds a typed stage from its TOML table (the `kind` key already removed).
type StageParser = fn(toml::Table, &str) -> Result<Box<dyn Stage>>;

/// The stages a program can run, by kind. The pipeline registers its own
/// ([`crate::stages::pipeline_stages`]); the trainer adds the model stages.
#[derive(Debug, Clone, Default)]
pub struct StageRegistry {
    parsers: BTreeMap<&'static str, StageParser>,
}

impl StageRegistry {
    /// A registry without stages.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Registers stage `kind`, whose config is `S` (deserialized from the stage's table).
    pub fn register<S: Stage + DeserializeOwned + 'static>(&mut self, kind: &'static str) {
        fn parse<S: Stage + DeserializeOwned + 'static>(
            table: toml::Table,
            key: &str,
        ) -> Result<Box<dyn Stage>> {
            let stage: S = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| Error::config(key, e.message().trim_end()))?;
            Ok(Box::new(stage))
        }
        self.parsers.insert(kind, parse::<S>);
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.parsers.keys().copied()
    }

    /// Builds stage `kind` from `table` (its keys, without `kind`); `key` names it in errors.
    pub fn build(&self, kind: &str, table: toml::Table, key: &str) -> Result<Box<dyn Stage>> {
        let parse = self.parsers.get(kind).ok_or_else(|| {
            Error::config(
                key,
                format!(
                    "unknown stage kind '{kind}': use one of {}",
                    self.kinds().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        parse(table, key)
    }

    /// Builds the stage a job's `[[stages]]` table describes (its `kind` names the stage).
    pub fn parse(&self, mut table: toml::Table, key: &str) -> Result<Box<dyn Stage>> {
        let kind = match table.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            Some(_) => return Err(Error::config(key, "'kind' must be a string")),
            None => return Err(Error::config(key, "missing key 'kind'")),
        };
        self.build(&kind, table, key)
    }
}

/// Settings given on a command line, applied over a config file's keys before the stage is
/// built: the one place where flags override config values, for every subcommand.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    table: toml::Table,
    /// The config file the keys came from, which then names the stage in errors.
    file: Option<String>,
}

impl Overrides {
    /// The keys of `--config FILE` (a stage's keys, as in a job), or none.
    pub fn from_file(path: Option<&std::path::Path>) -> Result<Self> {
        let table = match path {
            Some(path) => crate::config::load_toml(path)?,
            None => toml::Table::new(),
        };
        let file = path.map(|p| p.display().to_string());
        Ok(Self { table, file })
    }

    /// Sets `key` (dotted for nested tables: `columns.reward`) when `value` is given.
    pub fn set(&mut self, key: &str, value: Option<impl Into<toml::Value>>) -> &mut Self {
        let Some(value) = value else {
            return self;
        };
        let mut table = &mut self.table;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                table.insert(part.to_string(), value.into());
                break;
            }
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            table = entry.as_table_mut().expect("made a table above");
        }
        self
    }

    /// Removes the file's top-level `key` (for flags that replace a group of keys).
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.table.remove(key);
        self
    }

    /// Sets a flag that is either given (`true`) or not.
    pub fn flag(&mut self, key: &str, on: bool) -> &mut Self {
        self.set(key, on.then_some(true))
    }

    /// Sets an unsigned number.
    pub fn number(&mut self, key: &str, value: Option<impl TryInto<i64>>) -> &mut Self {
        let value = value.and_then(|v| v.try_into().ok());
        self.set(key, value)
    }

    /// Builds stage `kind` from the file's keys with the flags applied; errors name the
    /// config file if there is one, else `key`.
    pub fn build(self, registry: &StageRegistry, kind: &str, key: &str) -> Result<Box<dyn Stage>> {
        let key = self.file.as_deref().unwrap_or(key);
        registry.build(kind, self.table, key)
    }
}

/// The [`Stage`] impl of a stage whose config alone decides "up to date" (its `input` and
/// `output` fields, [`config_settings`]) and whose `run(config, input, output)` does the work:
/// `config_stage!(RouteConfig, "route", run);`.
macro_rules! config_stage {
    ($config:ty, $kind:literal, $run:path) => {
        impl $crate::stage::Stage for $config {
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
                _: &'a $crate::stage::StageContext<'a>,
            ) -> futures::future::BoxFuture<'a, $crate::error::Result<serde_json::Value>> {
                $crate::stage::config_settings(self)
            }

            fn run<'a>(
                &'a self,
                ctx: &'a $crate::stage::StageContext<'a>,
            ) -> futures::future::BoxFuture<'a, $crate::error::Result<$crate::manifest::Manifest>>
            {
                Box::pin(async move { $run(self, ctx.input()?, ctx.output).await })
            }
        }
    };
}
pub(crate) use config_stage;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_set_nested_keys_and_skip_absent_values() {
        let mut o = Overrides::default();
        o.set("columns.reward", Some("clean_score"))
            .set("strategy", None::<String>)
            .number("seed", Some(3u64))
            .flag("force", false);
        assert_eq!(
            o.table.to_string().trim(),
            "seed = 3\n\n[columns]\nreward = \"clean_score\""
        );
    }
}
