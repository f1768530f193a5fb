//! Pipeline stages. Each reads its input, writes a stage output directory under the contract
//! of [`crate::manifest`], and returns the manifest it wrote.

pub mod augment;
pub mod clean;
pub mod export;
pub mod route;
pub mod select;
pub mod select_margin;
pub mod sql;
pub mod synth;

// Kept at their old paths so that callers read one module per concept.
pub use crate::metrics::{now_unix, peak_rss_bytes};
pub use crate::progress::Progress;
pub use crate::stage::{config_hash, input_listing};

/// The hash deciding whether a stage's existing output is up to date (see [`crate::stage::stage_hash`]).
pub fn stage_hash(
    stage: &str,
    config: &impl serde::Serialize,
    infos: &[crate::input::FileInfo],
) -> String {
    crate::stage::stage_hash(
        stage,
        &serde_json::to_value(config).expect("stage configs serialize"),
        infos,
    )
}

/// The stages of this crate, registered by kind (`prefsmith` adds the model stages).
pub fn pipeline_stages() -> crate::stage::StageRegistry {
    let mut registry = crate::stage::StageRegistry::empty();
    registry.register::<synth::SynthConfig>("synth");
    registry.register::<select::SelectConfig>("select");
    registry.register::<clean::CleanConfig>("clean");
    registry.register::<route::RouteConfig>("route");
    registry.register::<augment::AugmentConfig>("augment");
    registry.register::<select_margin::SelectMarginConfig>("select-margin");
    registry.register::<export::ExportConfig>("export");
    registry.register::<sql::SqlConfig>("sql");
    registry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Job;

    #[test]
    fn unknown_kinds_name_the_known_ones() {
        let registry = pipeline_stages();
        let mut table = toml::Table::new();
        table.insert("kind".into(), "selekt".into());
        let err = registry.parse(table, "job.toml: stages[0]").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("stages[0]") && text.contains("selekt") && text.contains("select-margin"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Job::parse(
            "[[stages]]\nkind = \"select\"\noutput = \"x\"\nstrategyy = \"max-min\"\n",
            "job.toml",
            &pipeline_stages(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("job.toml") && err.contains("strategyy"),
            "{err}"
        );
    }
}
