//! The pipeline's error type: every variant names the file, column or key at fault, and says
//! whether the problem is in the data (exit code 1) or in the tool or its use (exit code 2).

use std::path::PathBuf;

use datafusion::error::DataFusionError;

/// Result with the pipeline's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input path names nothing.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// A directory or glob matched no Parquet file.
    #[error("{path}: no Parquet files found")]
    NoInputFiles {
        /// The path or pattern as given.
        path: String,
    },
    /// A directory that holds stage parts but no manifest: a stage that did not finish.
    #[error(
        "{path}: incomplete stage output (part files but no _manifest.json); rerun the stage that writes it"
    )]
    IncompleteStageOutput {
        /// The directory.
        path: String,
    },
    /// A file that is not readable Parquet (truncated, corrupt, or not Parquet at all).
    #[error("{file}: not a readable Parquet file: {reason}")]
    CorruptParquet {
        /// The file.
        file: String,
        /// What the reader said.
        reason: String,
    },
    /// A required column is absent.
    #[error("{file}: missing column '{column}' ({context})")]
    MissingColumn {
        /// The file.
        file: String,
        /// The column name (after mapping).
        column: String,
        /// What the column is needed for.
        context: String,
    },
    /// A column has a type the stage cannot use.
    #[error("{file}: column '{column}' has type {found}, expected {expected}")]
    WrongType {
        /// The file.
        file: String,
        /// The column.
        column: String,
        /// The type found.
        found: String,
        /// The types accepted.
        expected: String,
    },
    /// Two input files disagree about a column.
    #[error("{file}: column '{column}' is {found} here but {expected} in {first}")]
    SchemaMismatch {
        /// The file that differs.
        file: String,
        /// The first file, whose schema sets the expectation.
        first: String,
        /// The column.
        column: String,
        /// The type in `first`.
        expected: String,
        /// The type in `file`.
        found: String,
    },
    /// A wide-layout row whose response and score lists differ in length.
    #[error(
        "{file}: prompt_id {prompt_id}: '{responses_column}' has {responses} entries but '{scores_column}' has {scores}"
    )]
    ListLengthMismatch {
        /// The file.
        file: String,
        /// The offending row's prompt id.
        prompt_id: String,
        /// The responses column.
        responses_column: String,
        /// Its length.
        responses: i64,
        /// The scores column.
        scores_column: String,
        /// Its length.
        scores: i64,
    },
    /// The input holds no rows.
    #[error("{path}: input has no rows")]
    EmptyInput {
        /// The input as given.
        path: String,
    },
    /// Data that breaks a rule of the stage (duplicate ids, nulls where none may be).
    #[error("{context}: {message}")]
    InvalidData {
        /// Where (file, column, stage).
        context: String,
        /// What is wrong.
        message: String,
    },
    /// A configuration file or value that cannot be used.
    #[error("{source_name}: {message}")]
    Config {
        /// The file, flag or key.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An object-store request failed (unreachable server, denied access, missing bucket).
    #[error("{location}: {message}")]
    Storage {
        /// The file, directory or URL involved.
        location: String,
        /// What the store said, with a hint for the usual causes.
        message: String,
    },
    /// An error from the query engine.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// An error from Arrow (casting, filtering, building batches).
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A stage registered from another crate (the trainer's model stages) failed: its own
    /// error, shown as it is.
    #[error("{error}")]
    Stage {
        /// The stage's error.
        error: Box<dyn std::error::Error + Send + Sync>,
        /// Whether its input data is at fault.
        data_problem: bool,
    },
}

impl Error {
    /// Whether the input data (rather than the tool or its configuration) is at fault: the CLI
    /// exits with 1 for these and 2 for the rest.
    pub fn is_data_problem(&self) -> bool {
        match self {
            Self::NotFound { .. }
            | Self::NoInputFiles { .. }
            | Self::IncompleteStageOutput { .. }
            | Self::CorruptParquet { .. }
            | Self::MissingColumn { .. }
            | Self::WrongType { .. }
            | Self::SchemaMismatch { .. }
            | Self::ListLengthMismatch { .. }
            | Self::EmptyInput { .. }
            | Self::InvalidData { .. } => true,
            Self::DataFusion(e) => matches!(
                e.find_root(),
                DataFusionError::Execution(_) | DataFusionError::ParquetError(_)
            ),
            Self::Stage { data_problem, .. } => *data_problem,
            Self::Config { .. } | Self::Io { .. } | Self::Storage { .. } | Self::Arrow(_) => false,
        }
    }

    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// A configuration error.
    pub fn config(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            source_name: source_name.into(),
            message: message.into(),
        }
    }
}
