//! The trainer's errors: the model layer's ([`prefsmith_model::Error`], passed through with
//! its text), the pipeline's, and those of the model stages and training. Each names what it
//! is about (the column, the row, the setting) so a user can fix the input without reading code.

use std::path::PathBuf;

/// Result with the trainer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the model stages or in training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading a model, tokenizing, scoring, sampling or judging.
    #[error(transparent)]
    Model(#[from] prefsmith_model::Error),
    /// Input data the stages cannot process (a missing column, a null row).
    #[error("{0}")]
    Input(String),
    /// A configuration value that is out of range.
    #[error("config: {0}")]
    Config(String),
    /// Reading or writing a table through the pipeline.
    #[error(transparent)]
    Pipeline(#[from] prefsmith_pipeline::Error),
    /// An Arrow operation on a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A file that cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the input (data or model files) is at fault rather than the usage or the
    /// program (exit code 1 instead of 2).
    pub fn is_data_problem(&self) -> bool {
        match self {
            Self::Input(_) | Self::Io { .. } => true,
            Self::Model(e) => e.is_data_problem(),
            Self::Pipeline(e) => e.is_data_problem(),
            Self::Config(_) | Self::Arrow(_) => false,
        }
    }

    /// An I/O error on `path`, for `map_err`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
