//! Reading a stage's figures with DataFusion: histograms computed by the engine (two passes,
//! memory bounded by the bin count, so a 100-million-row table reports like a small one),
//! small result columns, and the per-prompt picks of the `select` section.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::figures::{Histogram, bins_for};
use crate::error::Result;

/// `v` is a finite number (NaN compares above +inf in DataFusion, so both bounds exclude it).
pub const FINITE: &str = "v > CAST('-inf' AS DOUBLE) AND v < CAST('inf' AS DOUBLE)";

/// Quotes an identifier for SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The histogram of column `v` of `query`: bins between its finite minimum and maximum (the
/// same rule as [`Histogram::of`]), NaN/±inf counted apart, nulls left out. `None` when no
/// value is finite.
pub async fn histogram(ctx: &SessionContext, query: &str) -> Result<Option<Histogram>> {
    let range = format!(
        "SELECT CAST(min(v) FILTER (WHERE {FINITE}) AS DOUBLE), \
         CAST(max(v) FILTER (WHERE {FINITE}) AS DOUBLE), \
         count(v) FILTER (WHERE {FINITE}), count(v) FROM ({query})"
    );
    let batches = ctx.sql(&range).await?.collect().await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let number = |i: usize| -> Option<f64> {
        let column = cast(batch.column(i), &DataType::Float64).ok()?;
        let values = column.as_primitive::<Float64Type>();
        values.is_valid(0).then(|| values.value(0))
    };
    let (Some(min), Some(max), Some(finite), Some(all)) =
        (number(0), number(1), number(2), number(3))
    else {
        return Ok(None);
    };
    let mut h = Histogram::empty(min, max, bins_for(finite as u64));
    h.non_finite = (all - finite) as u64;
    let last = h.counts.len() - 1;
    let binned = format!(
        "SELECT least(greatest(CAST(floor((v - {lo:e}) / {w:e}) AS BIGINT), 0), {last}) AS b, \
         count(*) AS n FROM ({query}) WHERE {FINITE} GROUP BY 1",
        lo = h.lo,
        w = h.width,
    );
    for batch in ctx.sql(&binned).await?.collect().await? {
        let bins = floats(batch.column(0))?;
        let counts = floats(batch.column(1))?;
        for (b, n) in bins.iter().zip(counts) {
            h.counts[(*b as usize).min(last)] += n as u64;
        }
    }
    Ok(Some(h))
}

/// A column as f64 values (nulls as NaN).
pub fn floats(column: &dyn Array) -> Result<Vec<f64>> {
    let column = cast(column, &DataType::Float64)?;
    let values = column.as_primitive::<Float64Type>();
    Ok((0..values.len())
        .map(|i| {
            if values.is_valid(i) {
                values.value(i)
            } else {
                f64::NAN
            }
        })
        .collect())
}

/// A column as strings (nulls as empty).
pub fn strings(column: &dyn Array) -> Result<Vec<String>> {
    let column = cast(column, &DataType::Utf8)?;
    let values = column.as_string::<i32>();
    Ok((0..values.len())
        .map(|i| {
            if values.is_valid(i) {
                values.value(i).to_string()
            } else {
                String::new()
            }
        })
        .collect())
}

/// Every row of `query`'s columns, as strings and f64 (a small result: counts per label).
pub async fn labelled_counts(ctx: &SessionContext, query: &str) -> Result<Vec<(String, f64)>> {
    let mut rows = Vec::new();
    for batch in ctx.sql(query).await?.collect().await? {
        let labels = strings(batch.column(0))?;
        let counts = floats(batch.column(1))?;
        rows.extend(labels.into_iter().zip(counts));
    }
    Ok(rows)
}

/// The first row of `query` as f64 values, one per column.
pub async fn one_row(ctx: &SessionContext, query: &str) -> Result<Vec<f64>> {
    for batch in ctx.sql(query).await?.collect().await? {
        if batch.num_rows() > 0 {
            return batch
                .columns()
                .iter()
                .map(|c| floats(c).map(|v| v[0]))
                .collect();
        }
    }
    Ok(Vec::new())
}

/// Why a prompt was picked for the `select` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickReason {
    /// One of the seeded picks (smallest SHA-256 of `seed:prompt_id`).
    Seeded,
    /// The widest reward spread σ (ties: the smallest prompt id).
    Widest,
    /// The narrowest σ (ties: the smallest prompt id).
    Narrowest,
}

impl PickReason {
    /// Text for a plot title.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Seeded => "seeded pick",
            Self::Widest => "widest spread",
            Self::Narrowest => "narrowest spread",
        }
    }
}

/// The prompts the `select` section draws, chosen in one pass over `(prompt_id, σ)`: `seeded`
/// prompts by a seeded hash (the same prompts on every rerun with the same seed, whatever the
/// row order), plus the widest and the narrowest σ. Rows with a non-finite σ are skipped.
#[derive(Debug, Clone)]
pub struct Picks {
    seed: u64,
    seeded: usize,
    by_hash: Vec<([u8; 32], String)>,
    widest: Option<(f64, String)>,
    narrowest: Option<(f64, String)>,
}

impl Picks {
    /// No prompts seen yet.
    pub fn new(seed: u64, seeded: usize) -> Self {
        Self {
            seed,
            seeded,
            by_hash: Vec::new(),
            widest: None,
            narrowest: None,
        }
    }

    /// Considers one prompt.
    pub fn offer(&mut self, prompt_id: &str, std: f64) {
        if !std.is_finite() {
            return;
        }
        let key: [u8; 32] = Sha256::digest(format!("{}:{prompt_id}", self.seed)).into();
        if self.by_hash.len() < self.seeded || key < self.by_hash[self.by_hash.len() - 1].0 {
            let at = self.by_hash.partition_point(|(k, _)| *k < key);
            self.by_hash.insert(at, (key, prompt_id.to_string()));
            self.by_hash.truncate(self.seeded);
        }
        let wider = |best: &Option<(f64, String)>| match best {
            None => true,
            Some((s, id)) => std > *s || (std == *s && prompt_id < id.as_str()),
        };
        if wider(&self.widest) {
            self.widest = Some((std, prompt_id.to_string()));
        }
        let narrower = match &self.narrowest {
            None => true,
            Some((s, id)) => std < *s || (std == *s && prompt_id < id.as_str()),
        };
        if narrower {
            self.narrowest = Some((std, prompt_id.to_string()));
        }
    }

    /// The picks in order (seeded by hash, then widest, then narrowest), each prompt once.
    pub fn finish(self) -> Vec<(String, PickReason)> {
        let mut out: Vec<(String, PickReason)> = self
            .by_hash
            .into_iter()
            .map(|(_, id)| (id, PickReason::Seeded))
            .collect();
        for (pick, reason) in [
            (self.widest, PickReason::Widest),
            (self.narrowest, PickReason::Narrowest),
        ] {
            if let Some((_, id)) = pick
                && !out.iter().any(|(o, _)| *o == id)
            {
                out.push((id, reason));
            }
        }
        out
    }
}

/// Streams `query` (columns: prompt id, σ) through [`Picks`].
pub async fn picks(
    ctx: &SessionContext,
    query: &str,
    seed: u64,
) -> Result<Vec<(String, PickReason)>> {
    let mut picks = Picks::new(seed, 3);
    let mut stream = ctx.sql(query).await?.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let ids = strings(batch.column(0))?;
        let stds = floats(batch.column(1))?;
        for (id, std) in ids.iter().zip(stds) {
            picks.offer(id, std);
        }
    }
    Ok(picks.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_the_widest_the_narrowest_and_seeded_hashes() {
        let rows = [
            ("a", 1.0),
            ("b", 3.0),
            ("c", 0.5),
            ("d", 3.0),
            ("e", f64::NAN),
            ("f", 2.0),
        ];
        let mut picks = Picks::new(7, 2);
        for (id, std) in rows {
            picks.offer(id, std);
        }
        let got = picks.finish();
        // The seeded picks: the two smallest SHA-256("7:<id>") among the finite rows, by hand.
        let mut hashed: Vec<([u8; 32], &str)> = ["a", "b", "c", "d", "f"]
            .iter()
            .map(|id| (Sha256::digest(format!("7:{id}")).into(), *id))
            .collect();
        hashed.sort();
        let seeded: Vec<&str> = hashed[..2].iter().map(|h| h.1).collect();
        assert_eq!(got[0], (seeded[0].to_string(), PickReason::Seeded));
        assert_eq!(got[1], (seeded[1].to_string(), PickReason::Seeded));
        // Widest: b and d tie at 3.0, the smaller id wins; narrowest: c. Neither repeats a pick.
        let rest: Vec<_> = got[2..].to_vec();
        for (id, reason) in [("b", PickReason::Widest), ("c", PickReason::Narrowest)] {
            assert!(
                rest.contains(&(id.to_string(), reason)) || seeded.contains(&id),
                "{got:?}"
            );
        }
        assert_eq!(got.len(), 2 + rest.len());
        assert!(got.iter().all(|(id, _)| id != "e"));
        // Order of the offers does not matter.
        let mut reversed = Picks::new(7, 2);
        for (id, std) in rows.iter().rev() {
            reversed.offer(id, *std);
        }
        assert_eq!(reversed.finish(), got);
    }

    #[test]
    fn the_engine_bins_like_the_formula() {
        let values = [
            0.5,
            -1.25,
            3.0,
            3.0,
            7.75,
            2.0,
            f64::NAN,
            f64::INFINITY,
            0.0,
            6.5,
        ];
        let rows: Vec<String> = values
            .iter()
            .map(|v| format!("(CAST('{v}' AS DOUBLE))"))
            .chain(["(CAST(NULL AS DOUBLE))".to_string()])
            .collect();
        let query = format!("SELECT column1 AS v FROM (VALUES {})", rows.join(", "));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ctx = SessionContext::new();
        let from_sql = runtime.block_on(histogram(&ctx, &query)).unwrap().unwrap();
        let mut expected = Histogram::of(&values, bins_for(8)).unwrap();
        assert_eq!(expected.non_finite, 2);
        assert_eq!(expected.counts.iter().sum::<u64>(), 8);
        expected.non_finite = 2; // the null is left out, not counted as non-finite
        assert_eq!(from_sql, expected);
        let empty = "SELECT CAST(NULL AS DOUBLE) AS v";
        assert!(runtime.block_on(histogram(&ctx, empty)).unwrap().is_none());
    }

    #[test]
    fn sql_text_is_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
