//! prefsmith's pipeline: stages as DataFusion plans over Parquet shards, each writing a stage
//! output directory atomically (see [`manifest`]).
//!
//! * [`input`] resolves and validates inputs (files, shard directories, stage outputs, globs);
//! * [`formats`] reads pair tables in the layouts users bring (plain, Hugging Face, TRL, NeMo);
//! * [`stages`] holds the stages (`synth`, `select`, `select-margin`, `route`, `augment`, `export`);
//! * [`job`] runs a list of stages from a TOML job file, skipping stages whose output is
//!   complete and up to date;
//! * [`sql`] runs ad-hoc SQL with every prefsmith function registered;
//! * [`inspect`] summarises a dataset;
//! * [`report`] writes the HTML page of a run.

pub mod config;
pub mod error;
pub mod formats;
pub mod input;
pub mod inspect;
pub mod job;
pub mod manifest;
pub mod metrics;
pub mod progress;
pub mod reader;
pub mod session;
pub mod sql;
pub mod stage;
pub mod stages;
pub mod storage;

pub use error::{Error, Result};
pub mod report;
