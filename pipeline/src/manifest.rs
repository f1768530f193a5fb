//! The stage contract (`docs/ALGORITHMS.md` §0.3): a stage writes `part-00000.parquet`, `part-00001.parquet`,
//! … and then `_manifest.json`; a directory is complete exactly when its manifest exists and
//! lists its parts. [`StageWriter`] implements the protocol:
//!
//! 1. `begin` deletes an old manifest first, so a crash from here on leaves a directory that
//!    reads as incomplete;
//! 2. a part becomes visible only when it is complete, on every store: local files are written
//!    to a staging file and renamed, S3 objects are one PUT or a multipart upload that is
//!    completed last (an abandoned upload is aborted and never listed);
//! 3. `commit` deletes parts the new manifest does not list (left by an earlier, larger run),
//!    then writes the manifest, in one request, last.
//!
//! The same protocol runs on local disk, S3 and in-memory stores: a directory is a
//! [`Location`] prefix.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;
use object_store::buffered::BufWriter;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{Location, settings};

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
    /// Bytes.
    pub bytes: u64,
    /// Rows.
    pub rows: u64,
    /// The store's version tag of the object read (S3: its ETag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
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
    /// Peak resident memory of the process when the manifest was written, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
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
                peak_rss_bytes: None,
            },
        }
    }

    /// Reads the manifest at `location` if there is one.
    pub async fn read_at(location: &Location) -> Result<Option<Self>> {
        if location.head().await?.is_none() {
            return Ok(None);
        }
        let bytes = location.read_bytes().await?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidData {
                context: location.to_string(),
                message: format!("not a prefsmith manifest: {e}"),
            })
    }

    /// Reads the manifest of a directory if there is one.
    pub async fn read_dir(dir: &Location) -> Result<Option<Self>> {
        Self::read_at(&dir.child(MANIFEST_FILE)).await
    }
}

/// Columns holding a handful of distinct labels, dictionary-encoded in stage outputs.
const LABEL_COLUMNS: &[&str] = &["strategy", "route", "copy", "skip_reason"];

/// Buffered bytes at which a part's row group is closed.
const ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// Deterministic part names: `part-00000.parquet`, …
pub fn part_name(index: usize) -> String {
    format!("part-{index:05}.parquet")
}

/// Writes a stage's output directory under the stage contract.
pub struct StageWriter {
    dir: Location,
    schema: SchemaRef,
    max_rows_per_file: usize,
    properties: WriterProperties,
    multipart_threshold: usize,
    parts: Vec<PartInfo>,
    /// Hive-style partitioning: the column and its index.
    partition_by: Option<(String, usize)>,
    /// Open parts by partition directory (`""` without partitioning).
    open: BTreeMap<String, OpenPart>,
    /// The next part number per partition directory.
    next_index: BTreeMap<String, usize>,
}

struct OpenPart {
    writer: AsyncArrowWriter<BufWriter>,
    location: Location,
    name: String,
    rows: u64,
}

/// Most partitions a stage output may have open at once (each holds a row group in memory).
pub const MAX_OPEN_PARTITIONS: usize = 256;

/// A partition directory name: `column=value`, the value percent-encoded outside
/// `[A-Za-z0-9._-]`, null as Hive's `__HIVE_DEFAULT_PARTITION__`.
fn partition_dir(column: &str, value: Option<&str>) -> String {
    let Some(value) = value else {
        return format!("{column}=__HIVE_DEFAULT_PARTITION__");
    };
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"._-".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{column}={encoded}")
}

impl StageWriter {
    /// Starts a stage output in `dir`: deletes an old manifest first.
    /// `sorted_by` names the leading column the rows are sorted by, recorded in the Parquet
    /// metadata so that a later stage can stream instead of hashing.
    pub async fn begin(
        dir: &Location,
        schema: SchemaRef,
        max_rows_per_file: usize,
        sorted_by: Option<&str>,
    ) -> Result<Self> {
        if let Some(local) = dir.local_path() {
            std::fs::create_dir_all(&local).map_err(Error::io(&local))?;
        }
        dir.child(MANIFEST_FILE).delete().await?;
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
            dir: dir.clone(),
            schema,
            max_rows_per_file: max_rows_per_file.max(1),
            properties,
            multipart_threshold: settings()?.multipart_threshold_bytes,
            parts: Vec::new(),
            partition_by: None,
            open: BTreeMap::new(),
            next_index: BTreeMap::new(),
        })
    }

    /// Partitions the output Hive-style by `column` (a string, integer or boolean column):
    /// rows go to `column=value/part-00000.parquet`, … and keep the column. Parts are listed
    /// by partition, then part number; rows keep their order within a partition.
    pub fn partition_by(mut self, column: Option<&str>) -> Result<Self> {
        let Some(column) = column else {
            return Ok(self);
        };
        let index = self.schema.index_of(column).map_err(|_| {
            Error::config(
                "partition-by",
                format!(
                    "the output has no column '{column}' (it has {})",
                    self.schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let data_type = self.schema.field(index).data_type();
        let usable = matches!(
            data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
        ) || data_type.is_integer()
            || matches!(data_type, DataType::Dictionary(_, v) if v.is_integer() || matches!(v.as_ref(), DataType::Utf8));
        if !usable {
            return Err(Error::config(
                "partition-by",
                format!(
                    "column '{column}' has type {data_type}; partition by a string, integer or boolean column"
                ),
            ));
        }
        self.partition_by = Some((column.to_string(), index));
        Ok(self)
    }

    /// The schema every batch must have.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends rows, starting a new part whenever the current one is full.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some((column, index)) = self.partition_by.clone() else {
            return self.write_to(String::new(), batch).await;
        };
        let values = cast(batch.column(index), &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let mut rows: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            let value = values.is_valid(row).then(|| values.value(row));
            rows.entry(partition_dir(&column, value))
                .or_default()
                .push(row as u32);
        }
        for (dir, indices) in rows {
            let taken = take_record_batch(batch, &UInt32Array::from(indices))?;
            self.write_to(dir, &taken).await?;
        }
        Ok(())
    }

    async fn write_to(&mut self, partition: String, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if !self.open.contains_key(&partition) {
                self.open_part(&partition)?;
            }
            let part = self
                .open
                .get_mut(&partition)
                .expect("a part was just opened");
            let room = self.max_rows_per_file - part.rows as usize;
            let take = room.min(batch.num_rows() - offset);
            let slice = batch.slice(offset, take);
            part.writer
                .write(&slice)
                .await
                .map_err(|e| write_error(&part.location, e))?;
            // Row groups end at 128 Ki rows or this many buffered bytes, whichever comes
            // first: long texts would otherwise hold hundreds of MB per row group.
            if part.writer.in_progress_size() >= ROW_GROUP_BYTES {
                part.writer
                    .flush()
                    .await
                    .map_err(|e| write_error(&part.location, e))?;
            }
            part.rows += take as u64;
            offset += take;
            if part.rows as usize >= self.max_rows_per_file {
                self.close_part(&partition).await?;
            }
        }
        Ok(())
    }

    /// Ends the open parts so that the next rows start new ones (e.g. one part per shard).
    pub async fn finish_part(&mut self) -> Result<()> {
        let open: Vec<String> = self.open.keys().cloned().collect();
        for partition in open {
            self.close_part(&partition).await?;
        }
        Ok(())
    }

    fn open_part(&mut self, partition: &str) -> Result<()> {
        if self.open.len() >= MAX_OPEN_PARTITIONS {
            return Err(Error::config(
                "partition-by",
                format!(
                    "more than {MAX_OPEN_PARTITIONS} partitions of '{}' at once in {}; partition by a column with fewer values",
                    self.partition_by.as_ref().map_or("", |(c, _)| c.as_str()),
                    self.dir
                ),
            ));
        }
        let next = self.next_index.entry(partition.to_string()).or_insert(0);
        let name = if partition.is_empty() {
            part_name(*next)
        } else {
            format!("{partition}/{}", part_name(*next))
        };
        *next += 1;
        let location = self.dir.child(&name);
        if let Some(parent) = location
            .local_path()
            .and_then(|p| p.parent().map(|p| p.to_path_buf()))
        {
            std::fs::create_dir_all(&parent).map_err(Error::io(&parent))?;
        }
        let sink = BufWriter::with_capacity(
            std::sync::Arc::clone(location.store()),
            location.path().clone(),
            self.multipart_threshold,
        );
        let writer = AsyncArrowWriter::try_new(
            sink,
            std::sync::Arc::clone(&self.schema),
            Some(self.properties.clone()),
        )
        .map_err(|e| write_error(&location, e))?;
        self.open.insert(
            partition.to_string(),
            OpenPart {
                writer,
                location,
                name,
                rows: 0,
            },
        );
        Ok(())
    }

    async fn close_part(&mut self, partition: &str) -> Result<()> {
        let Some(part) = self.open.remove(partition) else {
            return Ok(());
        };
        // `close` writes the footer and completes the upload: only now does the part exist.
        part.writer
            .close()
            .await
            .map_err(|e| write_error(&part.location, e))?;
        let bytes = match part.location.head().await? {
            Some(meta) => meta.size,
            None => {
                return Err(Error::Storage {
                    location: part.location.to_string(),
                    message: "the part was written but the store does not list it".into(),
                });
            }
        };
        self.parts.push(PartInfo {
            path: part.name,
            rows: part.rows,
            bytes,
        });
        Ok(())
    }

    /// Finishes the last part, removes parts the manifest does not list, and writes the
    /// manifest last. An output with no rows still gets one (empty) part, so it has a schema.
    pub async fn commit(mut self, mut manifest: Manifest) -> Result<Manifest> {
        if self.parts.is_empty() && self.open.is_empty() {
            self.open_part("")?;
        }
        self.finish_part().await?;
        // Partition by partition, parts in number order (part names sort by number).
        self.parts.sort_by(|a, b| {
            let dir = |p: &str| {
                p.rsplit_once('/')
                    .map_or(String::new(), |(d, _)| d.to_string())
            };
            (dir(&a.path), &a.path).cmp(&(dir(&b.path), &b.path))
        });
        let listed: Vec<&str> = self.parts.iter().map(|p| p.path.as_str()).collect();
        for (location, _) in self.dir.list().await? {
            let name = self.dir.relative_name(&location).unwrap_or_default();
            let file = location.file_name();
            let stale_part = file.starts_with("part-")
                && file.ends_with(".parquet")
                && !listed.contains(&name.as_str());
            // Staging files of the earlier local writer.
            let stale_temp = file.starts_with(".part-") && file.ends_with(".inprogress");
            if stale_part || stale_temp {
                location.delete().await?;
            }
        }
        manifest.rows = self.parts.iter().map(|p| p.rows).sum();
        manifest.timing.peak_rss_bytes = crate::metrics::peak_rss_bytes();
        if manifest.timing.seconds == 0.0 {
            manifest.timing.seconds =
                (crate::metrics::now_unix() - manifest.timing.started_unix).max(0.0);
        }
        manifest.parts = std::mem::take(&mut self.parts);
        let mut text =
            serde_json::to_string_pretty(&manifest).expect("a manifest always serializes");
        text.push('\n');
        self.dir
            .child(MANIFEST_FILE)
            .write_bytes(text.into_bytes())
            .await?;
        Ok(manifest)
    }
}

fn write_error(location: &Location, e: impl std::fmt::Display) -> Error {
    Error::Storage {
        location: location.to_string(),
        message: format!("writing failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn partition_directories_are_hive_style_and_escaped() {
        assert_eq!(partition_dir("route", Some("dpo")), "route=dpo");
        assert_eq!(partition_dir("k", Some("a b/c=d")), "k=a%20b%2Fc%3Dd");
        assert_eq!(partition_dir("k", None), "k=__HIVE_DEFAULT_PARTITION__");
    }

    #[tokio::test]
    async fn partitions_are_listed_by_directory_then_number_and_bad_columns_are_named() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, true),
            Field::new("x", DataType::Int64, false),
        ]));
        let dir = Location::parse("memory://manifest-test/out").unwrap();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("b"),
                    Some("a"),
                    None,
                    Some("b"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let mut writer = StageWriter::begin(&dir, Arc::clone(&schema), 1, None)
            .await
            .unwrap()
            .partition_by(Some("g"))
            .unwrap();
        writer.write(&batch).await.unwrap();
        let manifest = Manifest::new("t", "h".into(), &0, vec![], BTreeMap::new(), 0.0);
        let manifest = writer.commit(manifest).await.unwrap();
        let paths: Vec<&str> = manifest.parts.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "g=__HIVE_DEFAULT_PARTITION__/part-00000.parquet",
                "g=a/part-00000.parquet",
                "g=b/part-00000.parquet",
                "g=b/part-00001.parquet",
            ]
        );
        let error = StageWriter::begin(&dir, schema, 10, None)
            .await
            .unwrap()
            .partition_by(Some("nope"))
            .err()
            .expect("an unknown column is refused")
            .to_string();
        assert!(
            error.contains("'nope'") && error.contains("g, x"),
            "{error}"
        );
    }
}
