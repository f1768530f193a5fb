//! The stage contract (Decision 0): a stage writes `part-00000.parquet`, `part-00001.parquet`,
//! … and then `_manifest.json`; a directory is complete exactly when its manifest exists and
//! lists its parts. [`StageWriter`] implements the protocol:
//!
//! 1. `begin` deletes an old manifest first, so a crash from here on leaves a directory that
//!    reads as incomplete;
//! 2. parts are written under a temporary name and renamed when finished, so no part is ever
//!    half-written under its final name;
//! 3. `commit` deletes parts the new manifest does not list (left by an earlier, larger run),
//!    then writes the manifest (temporary file, fsync, rename) last.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "_manifest.json";

/// One part file of a stage output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// File name relative to the output directory.
    pub path: String,
    /// Rows in the part.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// One input file of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputInfo {
    /// The path as read.
    pub path: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// Rows.
    pub rows: u64,
}

impl From<&crate::input::FileInfo> for InputInfo {
    fn from(info: &crate::input::FileInfo) -> Self {
        Self {
            path: info.path.display().to_string(),
            bytes: info.bytes,
            rows: info.rows,
        }
    }
}

/// `_manifest.json`: what a stage read, with which settings, and what it wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Which stage wrote it.
    pub stage: String,
    /// prefsmith's version.
    pub prefsmith_version: String,
    /// SHA-256 of the stage's resolved configuration and its input listing: equal hashes mean
    /// a rerun would write the same output.
    pub config_hash: String,
    /// The resolved stage configuration.
    pub config: serde_json::Value,
    /// Input files.
    pub inputs: Vec<InputInfo>,
    /// Output parts, in order.
    pub parts: Vec<PartInfo>,
    /// Rows over all parts.
    pub rows: u64,
    /// Stage-specific results (counts, skip reasons, summary statistics).
    pub stats: BTreeMap<String, serde_json::Value>,
    /// Timing fields: the only fields that differ between two identical runs.
    pub timing: Timing,
}

/// When and how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Start, seconds since the Unix epoch.
    pub started_unix: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Manifest {
    /// A manifest for `stage` before commit (parts and rows are filled in by
    /// [`StageWriter::commit`], the duration by the stage).
    pub fn new(
        stage: &str,
        config_hash: String,
        config: &impl Serialize,
        inputs: Vec<InputInfo>,
        stats: BTreeMap<String, serde_json::Value>,
        started_unix: f64,
    ) -> Self {
        Self {
            stage: stage.into(),
            prefsmith_version: env!("CARGO_PKG_VERSION").into(),
            config_hash,
            config: serde_json::to_value(config).expect("stage configs always serialize"),
            inputs,
            parts: Vec::new(),
            rows: 0,
            stats,
            timing: Timing {
                started_unix,
                seconds: 0.0,
            },
        }
    }

    /// Reads a manifest.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        serde_json::from_str(&text).map_err(|e| Error::InvalidData {
            context: path.display().to_string(),
            message: format!("not a prefsmith manifest: {e}"),
        })
    }

    /// Reads the manifest of a directory if there is one.
    pub fn read_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST_FILE);
        if path.is_file() {
            Self::read(&path).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Columns holding a handful of distinct labels, dictionary-encoded in stage outputs.
const LABEL_COLUMNS: &[&str] = &["strategy", "route", "copy", "skip_reason"];

/// Deterministic part names: `part-00000.parquet`, …
pub fn part_name(index: usize) -> String {
    format!("part-{index:05}.parquet")
}

/// Writes a stage's output directory under the stage contract.
pub struct StageWriter {
    dir: PathBuf,
    schema: SchemaRef,
    max_rows_per_file: usize,
    properties: WriterProperties,
    parts: Vec<PartInfo>,
    current: Option<OpenPart>,
}

struct OpenPart {
    writer: ArrowWriter<File>,
    temp: PathBuf,
    name: String,
    rows: u64,
}

impl StageWriter {
    /// Starts a stage output in `dir`: creates it, and deletes an old manifest first.
    /// `sorted_by` names the leading column the rows are sorted by, recorded in the Parquet
    /// metadata so that a later stage can stream instead of hashing.
    pub fn begin(
        dir: &Path,
        schema: SchemaRef,
        max_rows_per_file: usize,
        sorted_by: Option<&str>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let manifest = dir.join(MANIFEST_FILE);
        match std::fs::remove_file(&manifest) {
            Ok(()) => sync_dir(dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&manifest)(e)),
        }
        let sorting = sorted_by.and_then(|c| schema.index_of(c).ok()).map(|i| {
            vec![SortingColumn {
                column_idx: i as i32,
                descending: false,
                nulls_first: false,
            }]
        });
        // Dictionary encoding pays only for low-cardinality columns (labels such as `strategy`);
        // for ids, texts and scores it costs a hashing pass per value and then falls back to plain.
        let mut builder = WriterProperties::builder().set_dictionary_enabled(false);
        for label in LABEL_COLUMNS {
            if schema.index_of(label).is_ok() {
                builder = builder.set_column_dictionary_enabled(ColumnPath::from(*label), true);
            }
        }
        let properties = builder
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(128 * 1024))
            .set_sorting_columns(sorting)
            .build();
        Ok(Self {
            dir: dir.to_path_buf(),
            schema,
            max_rows_per_file,
            properties,
            parts: Vec::new(),
            current: None,
        })
    }

    /// The schema every batch must have.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends rows, starting a new part whenever the current one is full.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.current.is_none() {
                self.open_part()?;
            }
            let part = self.current.as_mut().expect("a part was just opened");
            let room = self.max_rows_per_file - part.rows as usize;
            let take = room.min(batch.num_rows() - offset);
            let slice = batch.slice(offset, take);
            part.writer
                .write(&slice)
                .map_err(|e| write_error(&part.temp, e))?;
            part.rows += take as u64;
            offset += take;
            if part.rows as usize >= self.max_rows_per_file {
                self.close_part()?;
            }
        }
        Ok(())
    }

    /// Ends the current part so that the next rows start a new one (e.g. one part per shard).
    pub fn finish_part(&mut self) -> Result<()> {
        self.close_part()
    }

    fn open_part(&mut self) -> Result<()> {
        let name = part_name(self.parts.len());
        let temp = self.dir.join(format!(".{name}.inprogress"));
        let file = File::create(&temp).map_err(Error::io(&temp))?;
        let writer = ArrowWriter::try_new(
            file,
            std::sync::Arc::clone(&self.schema),
            Some(self.properties.clone()),
        )
        .map_err(|e| write_error(&temp, e))?;
        self.current = Some(OpenPart {
            writer,
            temp,
            name,
            rows: 0,
        });
        Ok(())
    }

    fn close_part(&mut self) -> Result<()> {
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        let file = part
            .writer
            .into_inner()
            .map_err(|e| write_error(&part.temp, e))?;
        file.sync_all().map_err(Error::io(&part.temp))?;
        drop(file);
        let target = self.dir.join(&part.name);
        std::fs::rename(&part.temp, &target).map_err(Error::io(&target))?;
        let bytes = std::fs::metadata(&target)
            .map_err(Error::io(&target))?
            .len();
        self.parts.push(PartInfo {
            path: part.name,
            rows: part.rows,
            bytes,
        });
        Ok(())
    }

    /// Finishes the last part, removes parts the manifest does not list, and writes the
    /// manifest last. An output with no rows still gets one (empty) part, so it has a schema.
    pub fn commit(mut self, mut manifest: Manifest) -> Result<Manifest> {
        if self.parts.is_empty() && self.current.is_none() {
            self.open_part()?;
        }
        self.close_part()?;
        let listed: Vec<&str> = self.parts.iter().map(|p| p.path.as_str()).collect();
        for entry in std::fs::read_dir(&self.dir).map_err(Error::io(&self.dir))? {
            let path = entry.map_err(Error::io(&self.dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let stale_part = name.starts_with("part-")
                && name.ends_with(".parquet")
                && !listed.contains(&name.as_str());
            let stale_temp = name.starts_with(".part-") && name.ends_with(".inprogress");
            if stale_part || stale_temp {
                std::fs::remove_file(&path).map_err(Error::io(&path))?;
            }
        }
        manifest.rows = self.parts.iter().map(|p| p.rows).sum();
        manifest.parts = std::mem::take(&mut self.parts);
        let text = serde_json::to_string_pretty(&manifest).expect("a manifest always serializes");
        let temp = self.dir.join(".manifest.inprogress");
        let mut file = File::create(&temp).map_err(Error::io(&temp))?;
        file.write_all(text.as_bytes()).map_err(Error::io(&temp))?;
        file.write_all(b"\n").map_err(Error::io(&temp))?;
        file.sync_all().map_err(Error::io(&temp))?;
        let target = self.dir.join(MANIFEST_FILE);
        std::fs::rename(&temp, &target).map_err(Error::io(&target))?;
        sync_dir(&self.dir)?;
        Ok(manifest)
    }
}

impl Drop for StageWriter {
    fn drop(&mut self) {
        // An abandoned part (the stage failed) must not survive under any name a reader uses.
        if let Some(part) = self.current.take() {
            drop(part.writer);
            let _ = std::fs::remove_file(&part.temp);
        }
    }
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}
