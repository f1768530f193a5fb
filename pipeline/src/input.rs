//! Input resolution and validation: which files a path names, whether each is readable
//! Parquet, which layout the columns describe, and whether every column has a usable type —
//! all checked from the files' footers before any data is read, so that errors name the file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::parquet::file::statistics::Statistics;

use crate::config::ColumnMap;
use crate::error::{Error, Result};
use crate::manifest::{MANIFEST_FILE, Manifest};

/// The Parquet files an input path names, in the order that defines row order.
#[derive(Debug, Clone)]
pub struct InputFiles {
    /// The path as the user gave it.
    pub spec: String,
    /// Files, sorted by path (or in manifest order for a stage output).
    pub files: Vec<PathBuf>,
    /// Whether the input is a complete stage output (a directory with a manifest).
    pub stage_output: bool,
}

/// Resolves a file, a directory (a stage output is read through its manifest) or a glob. A
/// directory with part files but no manifest is an incomplete stage output and an error.
pub fn resolve(spec: &str) -> Result<InputFiles> {
    resolve_with(spec, false)
}

/// As [`resolve`], but reads an incomplete stage output's Parquet files too (for `inspect`).
pub fn resolve_any(spec: &str) -> Result<InputFiles> {
    resolve_with(spec, true)
}

fn resolve_with(spec: &str, allow_incomplete: bool) -> Result<InputFiles> {
    let path = Path::new(spec);
    if spec.contains(['*', '?', '[']) {
        let pattern =
            glob::glob(spec).map_err(|e| Error::config(spec, format!("bad glob pattern: {e}")))?;
        let mut files: Vec<PathBuf> = pattern
            .filter_map(std::result::Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::NoInputFiles { path: spec.into() });
        }
        return Ok(InputFiles {
            spec: spec.into(),
            files,
            stage_output: false,
        });
    }
    if path.is_file() {
        return Ok(InputFiles {
            spec: spec.into(),
            files: vec![path.to_path_buf()],
            stage_output: false,
        });
    }
    if !path.is_dir() {
        return Err(Error::NotFound { path: spec.into() });
    }
    let manifest_path = path.join(MANIFEST_FILE);
    if manifest_path.is_file() {
        let manifest = Manifest::read(&manifest_path)?;
        let files = manifest
            .parts
            .iter()
            .map(|p| path.join(&p.path))
            .collect::<Vec<_>>();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(Error::InvalidData {
                context: manifest_path.display().to_string(),
                message: format!("lists {} but the file is missing", missing.display()),
            });
        }
        return Ok(InputFiles {
            spec: spec.into(),
            files,
            stage_output: true,
        });
    }
    let mut files = Vec::new();
    let mut has_parts = false;
    for entry in std::fs::read_dir(path).map_err(Error::io(path))? {
        let p = entry.map_err(Error::io(path))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        has_parts |= name.starts_with("part-");
        if p.is_file() && name.ends_with(".parquet") && !name.starts_with('.') {
            files.push(p);
        }
    }
    if has_parts && !allow_incomplete {
        return Err(Error::IncompleteStageOutput { path: spec.into() });
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::NoInputFiles { path: spec.into() });
    }
    Ok(InputFiles {
        spec: spec.into(),
        files,
        stage_output: false,
    })
}

/// What a file's footer says.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// The file.
    pub path: PathBuf,
    /// Its Arrow schema.
    pub schema: SchemaRef,
    /// Rows in the file.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
    metadata: Arc<ParquetMetaData>,
}

impl FileInfo {
    /// Reads a file's footer; a file that is not Parquet, or is truncated, is a named error.
    pub fn read(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(Error::io(path))?;
        let bytes = file.metadata().map_err(Error::io(path))?.len();
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::CorruptParquet {
                file: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let metadata = Arc::clone(builder.metadata());
        let rows = metadata.file_metadata().num_rows().max(0) as u64;
        Ok(Self {
            path: path.to_path_buf(),
            schema: Arc::clone(builder.schema()),
            rows,
            bytes,
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
    /// Every file's footer, in order (a named error for a file that is not readable Parquet).
    pub fn infos(&self) -> Result<Vec<FileInfo>> {
        self.files.iter().map(|f| FileInfo::read(f)).collect()
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
    file: &Path,
    schema: &Schema,
    column: &str,
    context: &str,
    expected: &str,
    ok: impl Fn(&DataType) -> bool,
) -> Result<()> {
    let Ok(field) = schema.field_with_name(column) else {
        return Err(Error::MissingColumn {
            file: file.to_path_buf(),
            column: column.into(),
            context: context.into(),
        });
    };
    if !ok(field.data_type()) {
        return Err(Error::WrongType {
            file: file.to_path_buf(),
            column: column.into(),
            found: type_name(field.data_type()),
            expected: expected.into(),
        });
    }
    Ok(())
}

/// Reads every footer, detects the layout from the first file's columns (unless `forced`
/// names it) and checks every file against it.
pub fn validate(
    files: InputFiles,
    columns: &ColumnMap,
    forced: Option<Layout>,
) -> Result<ValidatedInput> {
    let infos = files.infos()?;
    let first = &infos[0];
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
    let layout = if forced == Some(Layout::Wide) || (forced.is_none() && wide) {
        Layout::Wide
    } else if forced == Some(Layout::Long) || long {
        Layout::Long
    } else {
        return Err(Error::MissingColumn {
            file: first.path.clone(),
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
        });
    };
    let has_prompt_id = has(&columns.prompt_id);
    let has_response_index = layout == Layout::Long && has(&columns.response_index);
    for info in &infos {
        let (file, schema) = (info.path.as_path(), info.schema.as_ref());
        check_column(
            file,
            schema,
            &columns.prompt,
            "the prompt text",
            "a string",
            is_string,
        )?;
        if has_prompt_id {
            check_column(
                file,
                schema,
                &columns.prompt_id,
                "the prompt id",
                "a string",
                is_string,
            )?;
        }
        match layout {
            Layout::Wide => {
                check_column(
                    file,
                    schema,
                    &columns.responses,
                    "wide layout: the responses",
                    "a list of strings",
                    |t| is_list_of(t, is_string),
                )?;
                check_column(
                    file,
                    schema,
                    &columns.scores,
                    "wide layout: the scores",
                    "a list of numbers",
                    |t| is_list_of(t, |i| i.is_numeric() || i.is_null()),
                )?;
            }
            Layout::Long => {
                check_column(
                    file,
                    schema,
                    &columns.response,
                    "long layout: the response text",
                    "a string",
                    is_string,
                )?;
                check_column(
                    file,
                    schema,
                    &columns.reward,
                    "long layout: the reward",
                    "a number",
                    |t| t.is_numeric() || t.is_null(),
                )?;
                if has_response_index {
                    check_column(
                        file,
                        schema,
                        &columns.response_index,
                        "long layout: the response index",
                        "an integer",
                        DataType::is_integer,
                    )?;
                }
            }
        }
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
                    file: info.path.clone(),
                    first: first.path.clone(),
                    column: name.clone(),
                    expected: type_name(a.data_type()),
                    found: type_name(b.data_type()),
                });
            }
        }
        if !has_prompt_id && schema.field_with_name(&columns.prompt_id).is_ok() {
            return Err(Error::MissingColumn {
                file: first.path.clone(),
                column: columns.prompt_id.clone(),
                context: format!(
                    "present in {} but not in the first file",
                    info.path.display()
                ),
            });
        }
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
