//! Reading TOML strictly: unknown keys are errors that name the file and the key. Each
//! stage's typed config lives beside the stage ([`crate::stages`]); jobs are in [`crate::job`].

use std::path::Path;

use crate::error::{Error, Result};

/// Parses TOML into `T`, naming the file and the offending key on error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, source_name: &str) -> Result<T> {
    toml::from_str(text)
        .map_err(|e| Error::config(source_name, e.to_string().trim_end().to_string()))
}

/// Reads and parses a TOML file.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    parse_toml(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_the_file() {
        let err = parse_toml::<toml::Table>("a = = 1", "job.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("job.toml"), "{err}");
    }
}
