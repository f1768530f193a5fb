//! Input resolution and validation: which files a path names, whether each is readable
//! Parquet, which layout the columns describe, and whether every column has a usable type —
//! all checked from the files' footers before any data is read, so that errors name the file.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::parquet::file::statistics::Statistics;
use futures::StreamExt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::{InputInfo, MANIFEST_FILE, Manifest};
use crate::storage::{Location, ParquetSource};

/// The Parquet files an input path or URL names, in the order that defines row order.
#[derive(Debug, Clone)]
pub struct InputFiles {
    /// The path or URL as the user gave it.
    pub spec: String,
    /// Files, sorted by path (or in manifest order for a stage output).
    pub files: Vec<Location>,
    /// Whether the input is a complete stage output (a directory with a manifest).
    pub stage_output: bool,
}

/// Resolves a file, a directory or prefix (a stage output is read through its manifest) or a
/// glob, on any store. A directory with part files but no manifest is an incomplete stage
/// output and an error.
pub async fn resolve(spec: &str) -> Result<InputFiles> {
    resolve_with(spec, false).await
}

/// As [`resolve`], but reads an incomplete stage output's Parquet files too (for `inspect`).
pub async fn resolve_any(spec: &str) -> Result<InputFiles> {
    resolve_with(spec, true).await
}

/// Whether a listed name is data: a `.parquet` file whose path has no hidden (`.`) or
/// internal (`_`) segment.
fn is_data_file(relative: &str) -> bool {
    relative.ends_with(".parquet")
        && relative
            .split('/')
            .all(|segment| !segment.starts_with('.') && !segment.starts_with('_'))
}

async fn resolve_glob(spec: &str) -> Result<InputFiles> {
    let pattern_error =
        |e: glob::PatternError| Error::config(spec, format!("bad glob pattern: {e}"));
    // The listing starts at the last directory before the first wildcard.
    let wildcard = spec.find(['*', '?', '[']).unwrap_or(spec.len());
    let (root_spec, pattern) = match spec[..wildcard].rfind('/') {
        Some(slash) => (&spec[..=slash], &spec[slash + 1..]),
        None => (".", spec),
    };
    let root = Location::parse(root_spec)?;
    let matcher = glob::Pattern::new(pattern).map_err(pattern_error)?;
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let mut files = Vec::new();
    for (location, _) in root.list().await? {
        let Some(relative) = root.relative_name(&location) else {
            continue;
        };
        if matcher.matches_with(&relative, options) && is_data_file(&relative) {
            files.push(location);
        }
    }
    plain_files(spec, files)
}

/// Files that are not a stage output; none at all is an error.
fn plain_files(spec: &str, files: Vec<Location>) -> Result<InputFiles> {
    if files.is_empty() {
        return Err(Error::NoInputFiles { path: spec.into() });
    }
    Ok(InputFiles {
        spec: spec.into(),
        files,
        stage_output: false,
    })
}

async fn resolve_with(spec: &str, allow_incomplete: bool) -> Result<InputFiles> {
    if spec.contains(['*', '?', '[']) {
        return resolve_glob(spec).await;
    }
    let location = Location::parse(spec)?;
    if let Some(meta) = location.head().await? {
        let mut file = location;
        file.set_meta(meta);
        return plain_files(spec, vec![file]);
    }
    let manifest_location = location.child(MANIFEST_FILE);
    if let Some(manifest) = Manifest::read_at(&manifest_location).await? {
        if manifest.parts.is_empty() {
            return Err(Error::InvalidData {
                context: spec.into(),
                message: format!(
                    "the output of a '{}' stage holds no table to read",
                    manifest.stage
                ),
            });
        }
        let mut listing: std::collections::HashMap<String, Location> = location
            .list()
            .await?
            .into_iter()
            .filter_map(|(l, _)| location.relative_name(&l).map(|n| (n, l)))
            .collect();
        let mut files = Vec::with_capacity(manifest.parts.len());
        for part in &manifest.parts {
            let file = location.child(&part.path);
            let size = listing
                .get(&part.path)
                .and_then(|listed| listed.known_meta().map(|m| m.size));
            match size {
                Some(size) if size == part.bytes => {}
                Some(size) => {
                    return Err(Error::InvalidData {
                        context: manifest_location.to_string(),
                        message: format!(
                            "lists {file} with {} bytes but the object has {size}",
                            part.bytes
                        ),
                    });
                }
                None => {
                    return Err(Error::InvalidData {
                        context: manifest_location.to_string(),
                        message: format!("lists {file} but the file is missing"),
                    });
                }
            }
            files.push(listing.remove(&part.path).expect("checked above"));
        }
        return Ok(InputFiles {
            spec: spec.into(),
            files,
            stage_output: true,
        });
    }
    let listing = location.list().await?;
    // An empty local directory exists (and holds no Parquet); an empty S3 prefix does not.
    let empty_dir = location.local_path().is_some_and(|p| p.is_dir());
    if listing.is_empty() && !empty_dir {
        return Err(Error::NotFound { path: spec.into() });
    }
    let mut files = Vec::new();
    let mut has_parts = false;
    for (file, _) in listing {
        let relative = location.relative_name(&file).unwrap_or_default();
        has_parts |= file.file_name().starts_with("part-");
        if is_data_file(&relative) {
            files.push(file);
        }
    }
    if has_parts && !allow_incomplete {
        return Err(Error::IncompleteStageOutput { path: spec.into() });
    }
    plain_files(spec, files)
}

/// Column names of the input, when they differ from the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ColumnMap {
    /// Prompt id (both layouts; optional: derived as sha256 hex of the prompt). Default `prompt_id`.
    pub prompt_id: String,
    /// Prompt text. Default `prompt`.
    pub prompt: String,
    /// Long layout: response text. Default `response`.
    pub response: String,
    /// Long layout: reward. Default `reward`.
    pub reward: String,
    /// Long layout: 0-based response index (optional: row order otherwise). Default `response_index`.
    pub response_index: String,
    /// Wide layout: list of responses. Default `all_generated_responses`.
    pub responses: String,
    /// Wide layout: list of scores. Default `all_rm_scores`.
    pub scores: String,
}

impl Default for ColumnMap {
    fn default() -> Self {
        Self {
            prompt_id: "prompt_id".into(),
            prompt: "prompt".into(),
            response: "response".into(),
            reward: "reward".into(),
            response_index: "response_index".into(),
            responses: "all_generated_responses".into(),
            scores: "all_rm_scores".into(),
        }
    }
}

impl From<&FileInfo> for InputInfo {
    fn from(info: &FileInfo) -> Self {
        Self {
            path: info.location.to_string(),
            bytes: info.bytes,
            rows: info.rows,
            etag: info.etag.clone(),
        }
    }
}

/// What a file's footer says.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// The file.
    pub location: Location,
    /// Its Arrow schema.
    pub schema: SchemaRef,
    /// Rows in the file.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// The store's version tag (S3 ETag; local: inode, size and modification time).
    pub etag: Option<String>,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_nanos: i64,
    metadata: Arc<ParquetMetaData>,
}

impl FileInfo {
    /// Reads a file's footer; a file that is not Parquet, or is truncated, is a named error.
    pub async fn read(location: &Location) -> Result<Self> {
        // A listed file carries its metadata; a named one costs a head request.
        let Some(meta) = location.meta().await? else {
            return Err(Error::NotFound {
                path: location.to_string(),
            });
        };
        let mut location = location.clone();
        location.set_meta(meta.clone());
        let mut reader = ParquetSource::open(&location).await?;
        let loaded = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
            .await
            .map_err(|e| Error::CorruptParquet {
                file: location.to_string(),
                reason: e.to_string(),
            })?;
        let metadata = Arc::clone(loaded.metadata());
        let rows = metadata.file_metadata().num_rows().max(0) as u64;
        Ok(Self {
            location,
            schema: Arc::clone(loaded.schema()),
            rows,
            bytes: meta.size,
            etag: meta.e_tag.clone(),
            modified_nanos: meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
            metadata,
        })
    }

    /// `(min, max)` of a string column over the file, when every row group has statistics and
    /// says it is sorted ascending by that column; `None` otherwise.
    pub fn sorted_range(&self, column: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let descr = self.metadata.file_metadata().schema_descr();
        let leaf = (0..descr.num_columns()).find(|&i| descr.column(i).path().string() == column)?;
        let mut range: Option<(Vec<u8>, Vec<u8>)> = None;
        for rg in self.metadata.row_groups() {
            let declared = rg
                .sorting_columns()
                .and_then(|cols| cols.first())
                .is_some_and(|c| c.column_idx as usize == leaf && !c.descending);
            let Some(Statistics::ByteArray(stats)) = rg.column(leaf).statistics() else {
                return None;
            };
            let (Some(min), Some(max)) = (stats.min_opt(), stats.max_opt()) else {
                return None;
            };
            if !declared {
                return None;
            }
            let (min, max) = (min.data().to_vec(), max.data().to_vec());
            range = match range {
                None => Some((min, max)),
                // Row groups must follow each other without overlap.
                Some((lo, hi)) if hi <= min => Some((lo, max)),
                Some(_) => return None,
            };
        }
        range
    }
}

impl InputFiles {
    /// Every file's footer, in order (a named error for a file that is not readable Parquet);
    /// several footers are fetched at once, which matters on S3.
    pub async fn infos(&self) -> Result<Vec<FileInfo>> {
        futures::stream::iter(self.files.iter().map(FileInfo::read))
            .buffered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }
}

/// The two input layouts `select` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One row per prompt: lists of responses and scores.
    Wide,
    /// One row per response.
    Long,
}

impl Layout {
    /// The name used in manifests and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wide => "wide",
            Self::Long => "long",
        }
    }
}

/// A validated input: files, layout, and which optional columns are present.
#[derive(Debug, Clone)]
pub struct ValidatedInput {
    /// The files.
    pub files: InputFiles,
    /// Footer information per file.
    pub infos: Vec<FileInfo>,
    /// The layout.
    pub layout: Layout,
    /// Whether a prompt id column is present (else it is derived from the prompt).
    pub has_prompt_id: bool,
    /// Long layout: whether a response index column is present (else row order).
    pub has_response_index: bool,
    /// Rows over all files.
    pub rows: u64,
}

fn type_name(t: &DataType) -> String {
    t.to_string()
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_list_of(t: &DataType, item: impl Fn(&DataType) -> bool) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            item(f.data_type())
        }
        _ => false,
    }
}

/// Checks that a column exists in `schema` with an acceptable type.
fn check_column(
    file: &str,
    schema: &Schema,
    column: &str,
    context: &str,
    expected: &str,
    ok: impl Fn(&DataType) -> bool,
) -> Result<()> {
    let Ok(field) = schema.field_with_name(column) else {
        return Err(Error::MissingColumn {
            file: file.to_string(),
            column: column.into(),
            context: context.into(),
        });
    };
    if !ok(field.data_type()) {
        return Err(Error::WrongType {
            file: file.to_string(),
            column: column.into(),
            found: type_name(field.data_type()),
            expected: expected.into(),
        });
    }
    Ok(())
}

/// Reads every footer, detects the layout from the first file's columns (unless `forced`
/// names it) and checks every file against it.
pub async fn validate(
    files: InputFiles,
    columns: &ColumnMap,
    forced: Option<Layout>,
) -> Result<ValidatedInput> {
    let infos = files.infos().await?;
    let first = &infos[0];
    let has = |name: &str| first.schema.field_with_name(name).is_ok();
    let layout = detect_layout(first, columns, forced)?;
    let has_prompt_id = has(&columns.prompt_id);
    let has_response_index = layout == Layout::Long && has(&columns.response_index);
    for info in &infos {
        let file_name = info.location.to_string();
        check_layout_columns(
            &file_name,
            info.schema.as_ref(),
            columns,
            layout,
            has_prompt_id,
            has_response_index,
        )?;
        check_matches_first(first, info, columns, has_prompt_id)?;
    }
    let rows = infos.iter().map(|i| i.rows).sum();
    if rows == 0 {
        return Err(Error::EmptyInput {
            path: files.spec.clone(),
        });
    }
    Ok(ValidatedInput {
        files,
        infos,
        layout,
        has_prompt_id,
        has_response_index,
        rows,
    })
}

/// The layout of the first file's columns, or `forced`; an error naming the expected columns
/// when they show neither layout.
fn detect_layout(first: &FileInfo, columns: &ColumnMap, forced: Option<Layout>) -> Result<Layout> {
    let has = |name: &str| first.schema.field_with_name(name).is_ok();
    // A list-typed scores column means wide; `--reward-column` may name one column for both.
    let list_typed = |name: &str| {
        first
            .schema
            .field_with_name(name)
            .is_ok_and(|f| is_list_of(f.data_type(), |_| true))
    };
    let wide = list_typed(&columns.scores) || has(&columns.responses);
    let long = has(&columns.reward) || has(&columns.response);
    if forced == Some(Layout::Wide) || (forced.is_none() && wide) {
        Ok(Layout::Wide)
    } else if forced == Some(Layout::Long) || long {
        Ok(Layout::Long)
    } else {
        Err(Error::MissingColumn {
            file: first.location.to_string(),
            column: format!("{}' or '{}", columns.scores, columns.reward),
            context: format!(
                "expected the wide layout ({}, {}, {}) or the long layout ({}, {}, {}, {}); found {}",
                columns.prompt,
                columns.responses,
                columns.scores,
                columns.prompt_id,
                columns.prompt,
                columns.response,
                columns.reward,
                first
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

/// Checks that `file` has every column `layout` needs (and the optional ones the first file
/// has), each with an acceptable type.
fn check_layout_columns(
    file: &str,
    schema: &Schema,
    columns: &ColumnMap,
    layout: Layout,
    has_prompt_id: bool,
    has_response_index: bool,
) -> Result<()> {
    /// A column, what it is for, the type expected and the test of that type, in check order.
    type Check<'a> = (&'a str, &'static str, &'static str, fn(&DataType) -> bool);
    let mut checks: Vec<Check> = vec![(&columns.prompt, "the prompt text", "a string", is_string)];
    if has_prompt_id {
        checks.push((&columns.prompt_id, "the prompt id", "a string", is_string));
    }
    match layout {
        Layout::Wide => {
            checks.push((
                &columns.responses,
                "wide layout: the responses",
                "a list of strings",
                |t| is_list_of(t, is_string),
            ));
            checks.push((
                &columns.scores,
                "wide layout: the scores",
                "a list of numbers",
                |t| is_list_of(t, |i| i.is_numeric() || i.is_null()),
            ));
        }
        Layout::Long => {
            checks.push((
                &columns.response,
                "long layout: the response text",
                "a string",
                is_string,
            ));
            checks.push((
                &columns.reward,
                "long layout: the reward",
                "a number",
                |t| t.is_numeric() || t.is_null(),
            ));
            if has_response_index {
                checks.push((
                    &columns.response_index,
                    "long layout: the response index",
                    "an integer",
                    DataType::is_integer,
                ));
            }
        }
    }
    for (column, context, expected, ok) in checks {
        check_column(file, schema, column, context, expected, ok)?;
    }
    Ok(())
}

/// Checks that the mapped columns of `info` have the types they have in the first file, and
/// that it has no prompt id the first file lacks.
fn check_matches_first(
    first: &FileInfo,
    info: &FileInfo,
    columns: &ColumnMap,
    has_prompt_id: bool,
) -> Result<()> {
    let schema = info.schema.as_ref();
    for name in [
        &columns.prompt_id,
        &columns.prompt,
        &columns.response,
        &columns.reward,
        &columns.response_index,
        &columns.responses,
        &columns.scores,
    ] {
        if let (Ok(a), Ok(b)) = (
            first.schema.field_with_name(name),
            schema.field_with_name(name),
        ) && a.data_type() != b.data_type()
        {
            return Err(Error::SchemaMismatch {
                file: info.location.to_string(),
                first: first.location.to_string(),
                column: name.clone(),
                expected: type_name(a.data_type()),
                found: type_name(b.data_type()),
            });
        }
    }
    if !has_prompt_id && schema.field_with_name(&columns.prompt_id).is_ok() {
        return Err(Error::MissingColumn {
            file: first.location.to_string(),
            column: columns.prompt_id.clone(),
            context: format!("present in {} but not in the first file", info.location),
        });
    }
    Ok(())
}

impl ValidatedInput {
    /// Whether the files' metadata says the input is sorted by prompt id: every row group
    /// declares the sort, and files follow each other in path order without overlapping.
    pub fn metadata_says_sorted(&self, prompt_id: &str) -> bool {
        let mut previous_max: Option<Vec<u8>> = None;
        for info in &self.infos {
            let Some((min, max)) = info.sorted_range(prompt_id) else {
                return false;
            };
            if previous_max.as_ref().is_some_and(|prev| prev >= &min) {
                return false;
            }
            previous_max = Some(max);
        }
        true
    }
}
