//! The pair-selection kernel shared by every SQL form of it (`select_pair`, `select_pair_list`,
//! `select_pair_scalable`, …) and by the pipeline's `select` stage.
//!
//! It is plain Rust over one prompt's responses, with no Arrow types, so that the aggregate,
//! scalar and streaming forms cannot drift apart. The rules are §1 and §2 of
//! `docs/ALGORITHMS.md`:
//!
//! * a reward is valid when it is finite (null, NaN and ±inf are excluded and counted);
//! * μ is the mean and σ the standard deviation (`ddof` 0 by default) of the valid rewards,
//!   summed left to right in ascending response-index order so the result is bit-reproducible
//!   whatever order the rows arrived in;
//! * fewer than two valid rewards → `too-few-valid`; all valid rewards equal → `zero-std`
//!   (tested as `max == min`, so rounding in the mean cannot turn a constant prompt into a pair);
//! * a position is `μ + kσ`, `k = ±inf` meaning max/min; the response nearest the target wins,
//!   ties to the lowest index; the rejected response is chosen among the others;
//! * `reward(rejected) >= reward(chosen)` → `no-margin`.

use std::fmt;

use sha2::{Digest, Sha256};

/// Why a prompt yields no pair. The strings are part of the output contract (manifests, SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// Fewer than two valid (finite) rewards.
    TooFewValid,
    /// Every valid reward is the same, so σ = 0 and there is no preference signal.
    ZeroStd,
    /// The selected rejected response scores at least as high as the chosen one.
    NoMargin,
}

impl SkipReason {
    /// Every reason, in the order manifests list them.
    pub const ALL: [SkipReason; 3] = [Self::TooFewValid, Self::ZeroStd, Self::NoMargin];

    /// The reason's name as it appears in SQL results and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooFewValid => "too-few-valid",
            Self::ZeroStd => "zero-std",
            Self::NoMargin => "no-margin",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A position in a prompt's reward distribution, `μ + kσ`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Position {
    /// The maximum reward (`k = +inf`).
    Max,
    /// The minimum reward (`k = -inf`).
    Min,
    /// The reward nearest `μ + kσ` for a finite `k`.
    Sigma(f64),
}

impl Position {
    /// The position for a multiplier `k`; `±inf` become max/min. NaN is rejected.
    pub fn from_k(k: f64) -> Result<Self, String> {
        if k.is_nan() {
            Err("a position multiplier k must not be NaN".to_string())
        } else if k == f64::INFINITY {
            Ok(Self::Max)
        } else if k == f64::NEG_INFINITY {
            Ok(Self::Min)
        } else {
            Ok(Self::Sigma(k))
        }
    }

    /// Parses `k` as written in a config or on the command line: a number, `inf`, `+inf`,
    /// `-inf`, `max` or `min`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "max" | "inf" | "+inf" | "infinity" | "+infinity" => Ok(Self::Max),
            "min" | "-inf" | "-infinity" => Ok(Self::Min),
            other => other
                .parse::<f64>()
                .map_err(|_| {
                    format!("'{text}' is not a position: use a number, +inf, -inf, max or min")
                })
                .and_then(Self::from_k),
        }
    }
}

/// How the pair is picked once the statistics are known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PairRule {
    /// Chosen nearest one position, rejected nearest another (sweet-spot, max-min, positions).
    Positions {
        /// Where the chosen response sits.
        chosen: Position,
        /// Where the rejected response sits.
        rejected: Position,
    },
    /// Chosen = max of all; rejected = min of a seeded random subset of 5 valid responses.
    Scalable {
        /// The per-prompt seed, from [`scalable_seed`].
        seed: u64,
    },
}

/// Per-prompt statistics over the valid rewards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RewardStats {
    /// All responses seen, valid or not.
    pub n: u64,
    /// Responses with a finite reward.
    pub n_valid: u64,
    /// Mean of the valid rewards (NaN when there are none).
    pub mean: f64,
    /// Standard deviation of the valid rewards with the given `ddof` (NaN when undefined; exactly
    /// 0 when all valid rewards are equal).
    pub std: f64,
}

/// The outcome for one prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// Statistics of the prompt's rewards.
    pub stats: RewardStats,
    /// The pair, or why there is none.
    pub pair: Result<Pair, SkipReason>,
}

/// A selected pair: response indices and their rewards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Response index of the chosen response.
    pub chosen_index: i64,
    /// Response index of the rejected response.
    pub rejected_index: i64,
    /// Reward of the chosen response.
    pub score_chosen: f64,
    /// Reward of the rejected response.
    pub score_rejected: f64,
}

/// Computes the statistics of one prompt. `responses` holds `(response_index, reward)` sorted by
/// ascending index; invalid rewards (null mapped to NaN, NaN, ±inf) are skipped.
pub fn reward_stats(responses: &[(i64, f64)], ddof: u32) -> RewardStats {
    let mut n_valid = 0u64;
    let mut sum = 0.0f64;
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    for &(_, r) in responses {
        if r.is_finite() {
            n_valid += 1;
            sum += r;
            min = min.min(r);
            max = max.max(r);
        }
    }
    let n = responses.len() as u64;
    if n_valid == 0 {
        return RewardStats {
            n,
            n_valid,
            mean: f64::NAN,
            std: f64::NAN,
        };
    }
    let mean = sum / n_valid as f64;
    let std = if max == min {
        0.0
    } else if n_valid <= u64::from(ddof) {
        f64::NAN
    } else {
        let squares: f64 = responses
            .iter()
            .filter(|(_, r)| r.is_finite())
            .map(|&(_, r)| (r - mean) * (r - mean))
            .fold(0.0, |acc, sq| acc + sq);
        (squares / (n_valid - u64::from(ddof)) as f64).sqrt()
    };
    RewardStats {
        n,
        n_valid,
        mean,
        std,
    }
}

/// Selects the pair of one prompt. `responses` holds `(response_index, reward)` sorted by
/// ascending, distinct index (see [`sort_and_check`]).
pub fn select(responses: &[(i64, f64)], rule: PairRule, ddof: u32) -> Selection {
    let stats = reward_stats(responses, ddof);
    let pair = if stats.n_valid < 2 || !stats.std.is_finite() {
        Err(SkipReason::TooFewValid)
    } else if stats.std == 0.0 {
        Err(SkipReason::ZeroStd)
    } else {
        pick(responses, rule, &stats)
    };
    Selection { stats, pair }
}

fn pick(responses: &[(i64, f64)], rule: PairRule, stats: &RewardStats) -> Result<Pair, SkipReason> {
    let (chosen, rejected) = match rule {
        PairRule::Positions { chosen, rejected } => {
            let c = nearest(responses.iter().copied(), chosen, stats, None)
                .ok_or(SkipReason::TooFewValid)?;
            let r = nearest(responses.iter().copied(), rejected, stats, Some(c.0))
                .ok_or(SkipReason::TooFewValid)?;
            (c, r)
        }
        PairRule::Scalable { seed } => {
            let c = nearest(responses.iter().copied(), Position::Max, stats, None)
                .ok_or(SkipReason::TooFewValid)?;
            let subset = scalable_subset(responses, seed);
            let r = nearest(subset.into_iter(), Position::Min, stats, Some(c.0))
                .ok_or(SkipReason::TooFewValid)?;
            (c, r)
        }
    };
    if rejected.1 >= chosen.1 {
        return Err(SkipReason::NoMargin);
    }
    Ok(Pair {
        chosen_index: chosen.0,
        rejected_index: rejected.0,
        score_chosen: chosen.1,
        score_rejected: rejected.1,
    })
}

/// The valid response nearest `position`, skipping index `exclude`; ties go to the lowest index.
/// Candidates must arrive in ascending index order for the tie rule to hold.
fn nearest(
    candidates: impl Iterator<Item = (i64, f64)>,
    position: Position,
    stats: &RewardStats,
    exclude: Option<i64>,
) -> Option<(i64, f64)> {
    // Lower key is better; strict `<` keeps the first (lowest-index) of equal keys.
    let key = |r: f64| match position {
        Position::Max => -r,
        Position::Min => r,
        Position::Sigma(k) => (r - (stats.mean + k * stats.std)).abs(),
    };
    let mut best: Option<(i64, f64, f64)> = None;
    for (index, reward) in candidates {
        if !reward.is_finite() || Some(index) == exclude {
            continue;
        }
        let k = key(reward);
        if best.is_none_or(|(_, _, best_key)| k < best_key) {
            best = Some((index, reward, k));
        }
    }
    best.map(|(i, r, _)| (i, r))
}

/// The seeded random subset of at most 5 valid responses for the `scalable` rule, returned in
/// ascending index order (so the tie rule of [`nearest`] still means "lowest index").
fn scalable_subset(responses: &[(i64, f64)], seed: u64) -> Vec<(i64, f64)> {
    let mut valid: Vec<(i64, f64)> = responses
        .iter()
        .copied()
        .filter(|(_, r)| r.is_finite())
        .collect();
    let n = valid.len();
    let take = n.min(SCALABLE_SUBSET_SIZE);
    let mut rng = SplitMix64::new(seed);
    for i in 0..take {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        valid.swap(i, j);
    }
    valid.truncate(take);
    valid.sort_by_key(|&(i, _)| i);
    valid
}

/// How many valid responses the `scalable` rule draws its rejected response from.
pub const SCALABLE_SUBSET_SIZE: usize = 5;

/// The per-prompt seed of the `scalable` rule: the first 8 bytes, little-endian, of
/// SHA-256(`"{run_seed}:{prompt_id}"`).
pub fn scalable_seed(run_seed: u64, prompt_id: &str) -> u64 {
    let digest = Sha256::digest(format!("{run_seed}:{prompt_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// SplitMix64 (Steele, Lea & Flood 2014), the generator `docs/ALGORITHMS.md` §2.7 fixes for reproducibility.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Sorts one prompt's `(response_index, reward)` entries by index and rejects duplicates and
/// negative indices, returning the offending index.
pub fn sort_and_check(responses: &mut [(i64, f64)]) -> Result<(), String> {
    if !responses.is_sorted_by_key(|&(i, _)| i) {
        responses.sort_by_key(|&(i, _)| i);
    }
    if let Some(&(first, _)) = responses.first()
        && first < 0
    {
        return Err(format!("response_index {first} is negative"));
    }
    if let Some(w) = responses.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!(
            "response_index {} appears twice for one prompt",
            w[0].0
        ));
    }
    Ok(())
}

/// The sha256 hex digest of a prompt: the Hugging Face convention for a missing `prompt_id`.
pub fn prompt_id_of(prompt: &str) -> String {
    let digest = Sha256::digest(prompt.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        use fmt::Write;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexed(rewards: &[f64]) -> Vec<(i64, f64)> {
        rewards
            .iter()
            .enumerate()
            .map(|(i, &r)| (i as i64, r))
            .collect()
    }

    const SWEET: PairRule = PairRule::Positions {
        chosen: Position::Max,
        rejected: Position::Sigma(-2.0),
    };

    #[test]
    fn sweet_spot_hand_computed() {
        // μ = 3, σ = sqrt(2) → target 3 − 2·1.414 = 0.17: nearest is 1 (index 0).
        let s = select(&indexed(&[1.0, 2.0, 3.0, 4.0, 5.0]), SWEET, 0);
        assert_eq!(s.stats.mean, 3.0);
        assert!((s.stats.std - 2f64.sqrt()).abs() < 1e-15);
        let p = s.pair.unwrap();
        assert_eq!((p.chosen_index, p.rejected_index), (4, 0));
    }

    #[test]
    fn nearest_ties_go_to_lowest_index() {
        // μ = 2.5, σ = 1.5 → μ − 2σ = −0.5; rewards 1 at indices 1 and 3: pick 1. Max 4 at 0 and 2: pick 0.
        let p = select(&indexed(&[4.0, 1.0, 4.0, 1.0]), SWEET, 0)
            .pair
            .unwrap();
        assert_eq!((p.chosen_index, p.rejected_index), (0, 1));
    }

    #[test]
    fn skips() {
        assert_eq!(
            select(&indexed(&[1.0]), SWEET, 0).pair,
            Err(SkipReason::TooFewValid)
        );
        assert_eq!(
            select(&indexed(&[1.0, f64::NAN, f64::INFINITY]), SWEET, 0).pair,
            Err(SkipReason::TooFewValid)
        );
        assert_eq!(
            select(&indexed(&[0.1, 0.1, 0.1]), SWEET, 0).pair,
            Err(SkipReason::ZeroStd)
        );
        // Chosen near μ+0σ and rejected at max: rejected ≥ chosen → no-margin.
        let rule = PairRule::Positions {
            chosen: Position::Sigma(0.0),
            rejected: Position::Max,
        };
        assert_eq!(
            select(&indexed(&[1.0, 2.0, 3.0]), rule, 0).pair,
            Err(SkipReason::NoMargin)
        );
    }

    #[test]
    fn collision_takes_next_nearest_distinct() {
        // Two responses: chosen = max (1); rejected nearest max too but must be the other one.
        let rule = PairRule::Positions {
            chosen: Position::Max,
            rejected: Position::Max,
        };
        let p = select(&indexed(&[0.0, 1.0]), rule, 0).pair.unwrap();
        assert_eq!((p.chosen_index, p.rejected_index), (1, 0));
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 0 from the reference implementation (Vigna's splitmix64.c).
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn prompt_id_is_sha256_hex() {
        assert_eq!(
            prompt_id_of("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn duplicate_index_is_reported() {
        let mut v = vec![(2, 1.0), (0, 2.0), (2, 3.0)];
        assert!(
            sort_and_check(&mut v)
                .unwrap_err()
                .contains("appears twice")
        );
    }
}
