//! The model layer's errors. Each names what it is about (the model file, the tensor, the
//! sequence) so a user can fix the input without reading code.

use std::path::PathBuf;

/// Result with the model layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong loading models, tokenizing, scoring, sampling or judging.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file or directory that cannot be used.
    #[error("model {path}: {message}")]
    Model {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tokenizer that cannot be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Input the model cannot process (an empty prompt, a sequence longer than the context).
    #[error("{0}")]
    Input(String),
    /// A configuration value that is out of range.
    #[error("config: {0}")]
    Config(String),
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
            Self::Model { .. } | Self::Tokenizer(_) | Self::Input(_) | Self::Io { .. } => true,
            Self::Config(_) => false,
        }
    }

    /// An I/O error on `path`, for `map_err`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
