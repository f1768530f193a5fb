//! The margin sources `select-margin` fuses, the input columns each needs, and which of them
//! a run uses.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::formats::PairSchema;

/// A margin source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarginSource {
    /// The external reward: `score_chosen − score_rejected`.
    External,
    /// The implicit reward of a policy against a reference (summed log-probs, no β).
    Implicit,
}

impl MarginSource {
    /// The name in configs, flags and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::External => "external",
            Self::Implicit => "implicit",
        }
    }

    /// Parses a comma-separated list (`external,implicit`).
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        let mut sources = Vec::new();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let source = match name {
                "external" => Self::External,
                "implicit" => Self::Implicit,
                other => {
                    return Err(Error::config(
                        "sources",
                        format!("unknown source '{other}'; expected external and/or implicit"),
                    ));
                }
            };
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
        Ok(sources)
    }

    /// The input columns the source's margin is computed from.
    pub(super) fn columns(self) -> &'static [&'static str] {
        match self {
            Self::External => &["score_chosen", "score_rejected"],
            Self::Implicit => &[
                "policy_logp_chosen",
                "ref_logp_chosen",
                "policy_logp_rejected",
                "ref_logp_rejected",
            ],
        }
    }
}

/// The sources to fuse: the configured ones (their columns must exist), else every source whose
/// columns the input has.
pub(super) fn resolve_sources(
    configured: Option<&[MarginSource]>,
    schema: &PairSchema,
) -> Result<Vec<MarginSource>> {
    match configured {
        Some([]) => Err(Error::config("sources", "name at least one source")),
        Some(sources) => {
            for source in sources {
                schema.require(
                    source.columns(),
                    &format!(
                        "the {} margin{}",
                        source.as_str(),
                        if *source == MarginSource::Implicit {
                            "; write the log-probs with `prefsmith score --role policy` and \
                             `--role reference`, or select with --sources external"
                        } else {
                            ""
                        }
                    ),
                )?;
            }
            Ok(sources.to_vec())
        }
        None => {
            let found: Vec<MarginSource> = [MarginSource::External, MarginSource::Implicit]
                .into_iter()
                .filter(|s| s.columns().iter().all(|c| schema.has(c)))
                .collect();
            if found.is_empty() {
                return Err(Error::MissingColumn {
                    file: schema.file.clone(),
                    column: "score_chosen".into(),
                    context: "select-margin needs scores (score_chosen, score_rejected) and/or \
                              log-probs (policy_logp_*, ref_logp_*)"
                        .into(),
                });
            }
            Ok(found)
        }
    }
}
