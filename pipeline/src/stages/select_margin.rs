//! The `select-margin` stage: BeeS / DM-MUL selection by fused margins (Deng et al.,
//! `docs/ALGORITHMS.md` §3).
//!
//! Per pair, the external margin `m_ex = score_chosen − score_rejected` and the implicit margin
//! `m_im = (policy_logp_chosen − ref_logp_chosen) − (policy_logp_rejected − ref_logp_rejected)`.
//! Per source, M2 comes from the tail-sparsity search over that source's finite margins
//! (`margin_upper_bound`), `p = (clip(m, M1, M2) − M1)/(M2 − M1)` with M1 = −2, and the fused
//! `logit P = Σ logit(clip(p, ε, 1 − ε))`. A pair is eligible when every used margin is finite.
//! Eligible pairs are ranked by logit P descending, ties by `Σ m_k/M2_k` descending, then by
//! input row order; the top k (`top-k`, or `ceil(fraction × eligible)`) are written, in input
//! order (prompt_id order for a pair table), with `selected_rank` from 1.
//!
//! The tie-break divides by M2 as the spec proposes; when some M2 ≤ 0 (every margin of a source
//! tiny or negative) dividing by it would reverse or blow up that source's order, so the clip
//! width `M2 − M1` is used for every source instead. The scales used are in the manifest.
//!
//! Two passes over the input: the first reads only the score and log-prob columns (files
//! decoded in parallel) and ranks; the second streams every column and keeps the selected rows.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use prefsmith_udfs::aggregate::margin_upper_bound::{DEFAULT_DIVISOR, DEFAULT_M1, upper_bound};
use prefsmith_udfs::scalar::margin_math::{clipped_logit, margin_probability};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::formats::{InputFormat, PairInput, PairSchema, sorted_by_prompt_id};
use crate::input::FileInfo;
use crate::manifest::{InputInfo, Manifest, StageWriter};
use crate::reader::{map_columns_in_order, string_at};
use crate::stages::{Progress, now_unix, stage_hash};

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
    fn columns(self) -> &'static [&'static str] {
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

/// Settings of the `select-margin` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SelectMarginConfig {
    /// Input pair table; in a job, the previous stage's output.
    #[serde(default)]
    pub input: Option<String>,
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// The input's layout (default: detected).
    #[serde(default)]
    pub input_format: InputFormat,
    /// Keep this many pairs.
    #[serde(default)]
    pub top_k: Option<u64>,
    /// Keep `ceil(fraction × eligible)` pairs.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// The sources fused (default: every source whose columns the input has).
    #[serde(default)]
    pub sources: Option<Vec<MarginSource>>,
    /// Divisor d of the external source's M2 search (default 1.5).
    #[serde(default = "default_external_divisor")]
    pub external_divisor: f64,
    /// Divisor d of the implicit source's M2 search (default 2).
    #[serde(default = "default_implicit_divisor")]
    pub implicit_divisor: f64,
    /// The lower clip M1 of every source (default −2).
    #[serde(default = "default_m1")]
    pub m1: f64,
    /// Rows per output part (default 1,000,000).
    #[serde(default = "default_max_rows")]
    pub max_rows_per_file: usize,
}

fn default_external_divisor() -> f64 {
    DEFAULT_DIVISOR
}

fn default_implicit_divisor() -> f64 {
    2.0
}

fn default_m1() -> f64 {
    DEFAULT_M1
}

fn default_max_rows() -> usize {
    1_000_000
}

impl Default for SelectMarginConfig {
    fn default() -> Self {
        Self {
            input: None,
            output: None,
            input_format: InputFormat::Auto,
            top_k: None,
            fraction: None,
            sources: None,
            external_divisor: default_external_divisor(),
            implicit_divisor: default_implicit_divisor(),
            m1: default_m1(),
            max_rows_per_file: default_max_rows(),
        }
    }
}

/// How many pairs to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Keep {
    TopK(u64),
    Fraction(f64),
}

impl SelectMarginConfig {
    fn keep(&self) -> Result<Keep> {
        match (self.top_k, self.fraction) {
            (Some(_), Some(_)) => Err(Error::config(
                "select-margin",
                "give top-k or fraction, not both",
            )),
            (Some(0), None) => Err(Error::config("top-k", "must be at least 1")),
            (Some(k), None) => Ok(Keep::TopK(k)),
            (None, Some(f)) if f > 0.0 && f <= 1.0 => Ok(Keep::Fraction(f)),
            (None, Some(f)) => Err(Error::config(
                "fraction",
                format!("must be in (0, 1], got {f}"),
            )),
            (None, None) => Err(Error::config(
                "select-margin",
                "say how many pairs to keep: top-k or fraction",
            )),
        }
    }

    fn divisor(&self, source: MarginSource) -> Result<f64> {
        let (key, d) = match source {
            MarginSource::External => ("external-divisor", self.external_divisor),
            MarginSource::Implicit => ("implicit-divisor", self.implicit_divisor),
        };
        if d.is_finite() && d > 0.0 {
            Ok(d)
        } else {
            Err(Error::config(key, format!("must be positive, got {d}")))
        }
    }

    /// The hash deciding whether an existing output is up to date.
    pub fn hash(&self, infos: &[FileInfo]) -> String {
        stage_hash("select-margin", self, infos)
    }
}

/// The sources to fuse: the configured ones (their columns must exist), else every source whose
/// columns the input has.
fn resolve_sources(config: &SelectMarginConfig, schema: &PairSchema) -> Result<Vec<MarginSource>> {
    match &config.sources {
        Some(sources) if sources.is_empty() => {
            Err(Error::config("sources", "name at least one source"))
        }
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
            Ok(sources.clone())
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

/// Per row, both margins (NaN where not computable or not finite).
struct Margins {
    external: Vec<f64>,
    implicit: Vec<f64>,
}

impl Margins {
    fn of(&self, source: MarginSource) -> &[f64] {
        match source {
            MarginSource::External => &self.external,
            MarginSource::Implicit => &self.implicit,
        }
    }
}

fn finite_or_nan(v: f64) -> f64 {
    if v.is_finite() { v } else { f64::NAN }
}

/// Pass 1: the margins of every row, from the score and log-prob columns only.
async fn read_margins(pairs: &PairInput) -> Result<Margins> {
    let schema = &pairs.schema;
    let wanted: Vec<&'static str> = [MarginSource::External, MarginSource::Implicit]
        .iter()
        .filter(|s| s.columns().iter().all(|c| schema.has(c)))
        .flat_map(|s| s.columns().iter().copied())
        .collect();
    let mut margins = Margins {
        external: Vec::new(),
        implicit: Vec::new(),
    };
    if wanted.is_empty() {
        return Ok(margins);
    }
    let source_names: Vec<String> = wanted
        .iter()
        .map(|c| schema.source_name(c).expect("present").to_string())
        .collect();
    for (canonical, name) in wanted.iter().zip(&source_names) {
        let field = schema.source().field_with_name(name)?;
        if !field.data_type().is_numeric() {
            return Err(Error::WrongType {
                file: schema.file.clone(),
                column: name.clone(),
                found: field.data_type().to_string(),
                expected: format!("a number ({canonical})"),
            });
        }
    }
    // Per batch: (external, implicit) margins, computed as soon as the batch is decoded.
    let wanted_names: Vec<&'static str> = wanted.clone();
    let per_batch = map_columns_in_order(&pairs.files.files, &source_names, move |_, _, batch| {
        let column = |c: &str| -> Result<Option<Float64Array>> {
            match wanted_names.iter().position(|w| *w == c) {
                None => Ok(None),
                Some(i) => Ok(Some(
                    cast(batch.column(i), &DataType::Float64)?
                        .as_primitive::<Float64Type>()
                        .clone(),
                )),
            }
        };
        let value = |a: &Float64Array, i: usize| {
            if a.is_null(i) { f64::NAN } else { a.value(i) }
        };
        let rows = batch.num_rows();
        let external = match (column("score_chosen")?, column("score_rejected")?) {
            (Some(c), Some(r)) => (0..rows)
                .map(|i| finite_or_nan(value(&c, i) - value(&r, i)))
                .collect(),
            _ => Vec::new(),
        };
        let implicit = match (
            column("policy_logp_chosen")?,
            column("ref_logp_chosen")?,
            column("policy_logp_rejected")?,
            column("ref_logp_rejected")?,
        ) {
            (Some(pc), Some(rc), Some(pr), Some(rr)) => (0..rows)
                .map(|i| {
                    let chosen = value(&pc, i) - value(&rc, i);
                    let rejected = value(&pr, i) - value(&rr, i);
                    finite_or_nan(chosen - rejected)
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok((external, implicit))
    })
    .await?;
    for (external, implicit) in per_batch {
        margins.external.extend(external);
        margins.implicit.extend(implicit);
    }
    Ok(margins)
}

/// One used source: its margins, M2 and tie-break scale.
struct SourceBounds<'a> {
    source: MarginSource,
    margins: &'a [f64],
    m2: f64,
    scale: f64,
}

/// The outcome of ranking.
struct Ranking {
    /// Per input row: its rank (1-based) if selected, else 0.
    ranks: Vec<u32>,
    /// Per input row: the fused logit (NaN when not eligible).
    logits: Vec<f64>,
    eligible: u64,
    wanted: u64,
    selected: u64,
}

/// The fused logit and tie-break key of rows `first..first + logits.len()`; NaN when not
/// eligible.
fn score_rows(
    bounds: &[SourceBounds],
    m1: f64,
    first: usize,
    logits: &mut [f64],
    ties: &mut [f64],
) {
    for (i, (logit_out, tie_out)) in logits.iter_mut().zip(ties.iter_mut()).enumerate() {
        let row = first + i;
        let mut logit = 0.0;
        let mut tie = 0.0;
        let mut eligible = true;
        for b in bounds {
            let m = b.margins[row];
            match margin_probability(m, m1, b.m2) {
                Some(p) => {
                    logit += clipped_logit(p);
                    tie += m / b.scale;
                }
                None => {
                    eligible = false;
                    break;
                }
            }
        }
        (*logit_out, *tie_out) = if eligible {
            (logit, tie)
        } else {
            (f64::NAN, f64::NAN)
        };
    }
}

/// Ranks the rows (`docs/ALGORITHMS.md` §3) and keeps the top k.
fn rank(bounds: &[SourceBounds], rows: usize, m1: f64, keep: Keep) -> Ranking {
    let mut logits = vec![f64::NAN; rows];
    let mut ties = vec![f64::NAN; rows];
    // The per-row arithmetic is independent: split it over the cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = rows.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (i, (l, t)) in logits
            .chunks_mut(chunk)
            .zip(ties.chunks_mut(chunk))
            .enumerate()
        {
            scope.spawn(move || score_rows(bounds, m1, i * chunk, l, t));
        }
    });
    let eligible = logits.iter().filter(|l| !l.is_nan()).count() as u64;
    let wanted = match keep {
        Keep::TopK(k) => k,
        Keep::Fraction(f) => (f * eligible as f64).ceil() as u64,
    };
    let selected = wanted.min(eligible) as usize;
    // The k-th largest logit bounds the candidates; only they need the full ordering.
    let threshold = if selected == 0 {
        f64::INFINITY
    } else {
        let mut values: Vec<f64> = logits.iter().copied().filter(|l| !l.is_nan()).collect();
        let (_, kth, _) = values.select_nth_unstable_by(selected - 1, |a, b| b.total_cmp(a));
        *kth
    };
    // (logit, tie key, row), sorted by value: contiguous keys compare faster than lookups.
    let mut chosen: Vec<(f64, f64, u32)> = (0..rows)
        .filter(|&r| logits[r] >= threshold)
        .map(|r| (logits[r], ties[r], r as u32))
        .collect();
    chosen.sort_unstable_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(b.1.total_cmp(&a.1))
            .then(a.2.cmp(&b.2))
    });
    chosen.truncate(selected);
    let mut ranks = vec![0u32; rows];
    for (rank, &(_, _, row)) in chosen.iter().enumerate() {
        ranks[row as usize] = rank as u32 + 1;
    }
    Ranking {
        ranks,
        logits,
        eligible,
        wanted,
        selected: selected as u64,
    }
}

impl crate::stage::Stage for SelectMarginConfig {
    fn kind(&self) -> &'static str {
        "select-margin"
    }

    fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }

    fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }

    fn settings<'a>(
        &'a self,
        _: &'a crate::stage::StageContext<'a>,
    ) -> futures::future::BoxFuture<'a, Result<serde_json::Value>> {
        crate::stage::config_settings(self)
    }

    fn run<'a>(
        &'a self,
        ctx: &'a crate::stage::StageContext<'a>,
    ) -> futures::future::BoxFuture<'a, Result<Manifest>> {
        Box::pin(async move { run(self, ctx.input()?, ctx.output).await })
    }
}

/// Runs `select-margin` from `input` into `output`.
pub async fn run(config: &SelectMarginConfig, input: &str, output: &str) -> Result<Manifest> {
    let output = &crate::storage::Location::parse(output)?;
    let started = Instant::now();
    let started_unix = now_unix();
    let keep = config.keep()?;
    if !config.m1.is_finite() {
        return Err(Error::config(
            "m1",
            format!("must be finite, got {}", config.m1),
        ));
    }
    let pairs = PairInput::open(input, config.input_format).await?;
    let sources = resolve_sources(config, &pairs.schema)?;
    for column in [
        "margin_external",
        "margin_implicit",
        "preference_logit",
        "preference_probability",
        "selected_rank",
    ] {
        pairs
            .schema
            .refuse_existing(column, "selected by margin twice?")?;
    }
    let margins = read_margins(&pairs).await?;
    let rows = margins.of(sources[0]).len();
    info!(
        rows,
        seconds = started.elapsed().as_secs_f64(),
        "select-margin: margins read"
    );
    if rows == 0 {
        return Err(Error::EmptyInput { path: input.into() });
    }
    let mut bounds = Vec::new();
    let mut dropped = serde_json::Map::new();
    for &source in &sources {
        let values = margins.of(source);
        let non_finite = values.iter().filter(|m| !m.is_finite()).count();
        dropped.insert(source.as_str().into(), json!(non_finite));
        let m2 = upper_bound(values, config.divisor(source)?, config.m1).ok_or_else(|| {
            Error::InvalidData {
                context: format!("{input}: the {} margin", source.as_str()),
                message: format!(
                    "no pair has a finite {} margin (columns {})",
                    source.as_str(),
                    source.columns().join(", ")
                ),
            }
        })?;
        bounds.push(SourceBounds {
            source,
            margins: values,
            m2,
            scale: m2,
        });
    }
    if bounds.iter().any(|b| b.m2 <= 0.0) {
        for b in &mut bounds {
            b.scale = b.m2 - config.m1;
        }
    }
    let ranking = rank(&bounds, rows, config.m1, keep);
    info!(
        eligible = ranking.eligible,
        seconds = started.elapsed().as_secs_f64(),
        "select-margin: ranked"
    );
    if ranking.eligible == 0 {
        return Err(Error::InvalidData {
            context: input.into(),
            message: format!(
                "no pair is eligible: every pair has a non-finite {} margin",
                sources
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        });
    }
    let dropped_pairs = rows as u64 - ranking.eligible;
    let shortfall = ranking.wanted.saturating_sub(ranking.eligible);
    if shortfall > 0 {
        tracing::warn!(
            wanted = ranking.wanted,
            eligible = ranking.eligible,
            "fewer eligible pairs than asked for; all of them are kept"
        );
    }
    let mut m2 = serde_json::Map::new();
    let mut scales = serde_json::Map::new();
    for b in &bounds {
        m2.insert(b.source.as_str().into(), json!(b.m2));
        scales.insert(b.source.as_str().into(), json!(b.scale));
    }
    drop(bounds);
    let (eligible, wanted, selected_count) = (ranking.eligible, ranking.wanted, ranking.selected);
    let facts = Arc::new(RowFacts {
        ranks: ranking.ranks,
        logits: ranking.logits,
        external: margins.external,
        implicit: margins.implicit,
    });
    let selected = write_selected(&pairs, facts, config, output).await?;
    let stats = [
        ("pairs", json!(rows)),
        (
            "sources",
            json!(sources.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
        ),
        ("m1", json!(config.m1)),
        ("m2", json!(m2)),
        ("tie_break_scales", json!(scales)),
        ("eligible", json!(eligible)),
        ("dropped_non_finite", json!(dropped_pairs)),
        ("dropped_non_finite_by_source", json!(dropped)),
        ("wanted", json!(wanted)),
        ("selected", json!(selected_count)),
        ("shortfall", json!(shortfall)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let manifest = Manifest::new(
        "select-margin",
        config.hash(&pairs.infos),
        config,
        pairs.infos.iter().map(InputInfo::from).collect(),
        stats,
        started_unix,
    );
    let mut manifest = selected.commit(manifest).await?;
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    info!(
        pairs = rows,
        eligible,
        selected = selected_count,
        shortfall,
        output = %output,
        "select-margin: done"
    );
    Ok(manifest)
}

/// The output schema: the canonical input columns plus the selection's.
fn output_schema(input: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("margin_external", DataType::Float64, true));
    fields.push(Field::new("margin_implicit", DataType::Float64, true));
    fields.push(Field::new("preference_logit", DataType::Float64, false));
    fields.push(Field::new(
        "preference_probability",
        DataType::Float64,
        false,
    ));
    fields.push(Field::new("selected_rank", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// What pass 2 needs per input row.
struct RowFacts {
    /// Rank (1-based) when selected, else 0.
    ranks: Vec<u32>,
    logits: Vec<f64>,
    external: Vec<f64>,
    implicit: Vec<f64>,
}

/// Pass 2: reads the input again (files in parallel), keeps the selected rows with their new
/// columns, and writes them sorted by `prompt_id` (already so for a pair table; a Hugging Face
/// file may not be).
async fn write_selected(
    pairs: &PairInput,
    facts: Arc<RowFacts>,
    config: &SelectMarginConfig,
    output: &crate::storage::Location,
) -> Result<StageWriter> {
    let canonical = Arc::clone(pairs.schema.canonical());
    let out_schema = output_schema(&canonical);
    let file_starts: Vec<u64> = pairs
        .infos
        .iter()
        .scan(0u64, |start, info| {
            let this = *start;
            *start += info.rows;
            Some(this)
        })
        .collect();
    let total: u64 = pairs.infos.iter().map(|i| i.rows).sum();
    if total != facts.ranks.len() as u64 {
        return Err(Error::InvalidData {
            context: pairs.files.spec.clone(),
            message: format!(
                "the input changed while it was read ({} rows, then {total})",
                facts.ranks.len()
            ),
        });
    }
    let columns: Vec<String> = pairs
        .schema
        .source()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let schema = pairs.schema.clone();
    let batch_schema = Arc::clone(&out_schema);
    let progress = Arc::new(std::sync::Mutex::new(Progress::new("select-margin", total)));
    let counter = Arc::clone(&progress);
    let kept = map_columns_in_order(&pairs.files.files, &columns, move |file, first, batch| {
        let n = batch.num_rows();
        let offset = (file_starts[file] + first) as usize;
        if let Ok(mut p) = counter.lock() {
            p.advance(n as u64);
        }
        let rows: Vec<usize> = (offset..offset + n)
            .filter(|&r| facts.ranks[r] > 0)
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let local = UInt32Array::from_iter_values(rows.iter().map(|&r| (r - offset) as u32));
        let picked = schema.to_canonical(&take_record_batch(&batch, &local)?)?;
        let margin = |values: &[f64]| -> ArrayRef {
            Arc::new(
                rows.iter()
                    .map(|&r| values.get(r).copied().filter(|m| m.is_finite()))
                    .collect::<Float64Array>(),
            )
        };
        let mut columns = picked.columns().to_vec();
        columns.push(margin(&facts.external));
        columns.push(margin(&facts.implicit));
        columns.push(Arc::new(
            rows.iter()
                .map(|&r| facts.logits[r])
                .collect::<Float64Array>(),
        ));
        columns.push(Arc::new(
            rows.iter()
                .map(|&r| 1.0 / (1.0 + (-facts.logits[r]).exp()))
                .collect::<Float64Array>(),
        ));
        columns.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|&r| i64::from(facts.ranks[r])),
        )));
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&batch_schema),
            columns,
        )?))
    })
    .await?;
    if let Ok(p) = progress.lock() {
        p.finish();
    }
    let kept: Vec<RecordBatch> = kept.into_iter().flatten().collect();
    let all = concat_batches(&out_schema, &kept)?;
    let ids = all.column(out_schema.index_of("prompt_id")?);
    let sorted = (1..all.num_rows()).all(|i| string_at(ids, i - 1) <= string_at(ids, i));
    let all = if sorted {
        all
    } else {
        sorted_by_prompt_id(&out_schema, &[all])?
    };
    let mut writer = StageWriter::begin(
        output,
        Arc::clone(&out_schema),
        config.max_rows_per_file,
        Some("prompt_id"),
    )
    .await?;
    writer.write(&all).await?;
    Ok(writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds<'a>(source: MarginSource, margins: &'a [f64], m2: f64) -> SourceBounds<'a> {
        SourceBounds {
            source,
            margins,
            m2,
            scale: m2,
        }
    }

    #[test]
    fn saturated_pairs_are_ordered_by_scaled_margins_then_input_order() {
        // M2 = 4 and 2: rows 0, 1, 3 saturate both sources (same logit); row 1 has the largest
        // Σ m/M2 (8/4 + 4/2 = 4), rows 0 and 3 tie at 2 + 1 = 3 -> input order.
        let external = [4.0, 8.0, 1.0, 4.0, f64::NAN];
        let implicit = [2.0, 4.0, 0.0, 2.0, 3.0];
        let b = [
            bounds(MarginSource::External, &external, 4.0),
            bounds(MarginSource::Implicit, &implicit, 2.0),
        ];
        let r = rank(&b, 5, -2.0, Keep::TopK(10));
        assert_eq!(r.ranks, [2, 1, 4, 3, 0]);
        assert_eq!((r.eligible, r.wanted, r.selected), (4, 10, 4));
        let r = rank(&b, 5, -2.0, Keep::Fraction(0.5));
        assert_eq!(r.ranks, [2, 1, 0, 0, 0]);
    }

    #[test]
    fn p_zero_and_p_one_cancel() {
        let external = [-3.0, 0.0];
        let implicit = [5.0, 0.0];
        let b = [
            bounds(MarginSource::External, &external, 2.0),
            bounds(MarginSource::Implicit, &implicit, 2.0),
        ];
        let r = rank(&b, 2, -2.0, Keep::TopK(1));
        assert_eq!(r.logits[0], 0.0);
        // Row 1 (p = 0.5 twice) has logit 0 too; the tie goes to row 0's larger Σ m/M2
        // (-3/2 + 5/2 = 1 against 0).
        assert_eq!(r.ranks, [1, 0]);
    }
}
