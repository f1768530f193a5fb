//! Faults a sampler produces at scale — empty, truncated and garbled responses — injected by
//! `sample --degenerate-rate` for experiments with a known gold reward (`EXPERIMENTS.md`), and
//! the keyed random streams they (and the experiment's task) draw from: every draw is a pure
//! function of its key, so a response's fault never depends on the other responses.

use prefsmith_udfs::selection::SplitMix64;
use sha2::{Digest, Sha256};

/// A random stream keyed by a text: SplitMix64 seeded with the first 8 bytes of its SHA-256.
pub fn stream(key: &str) -> SplitMix64 {
    let digest = Sha256::digest(key.as_bytes());
    SplitMix64::new(u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")))
}

/// A uniform draw in [0, 1) with 53 bits.
pub fn uniform(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The degenerate outputs a sampler produces: an empty text, a truncated one, a garbled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Degenerate {
    /// Nothing.
    Empty,
    /// The first third of the characters.
    Truncated,
    /// The same length of random printable ASCII (at least 3 characters).
    Garbled,
}

impl Degenerate {
    /// The name written to the `finish_reasons` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "degenerate-empty",
            Self::Truncated => "degenerate-truncated",
            Self::Garbled => "degenerate-garbled",
        }
    }

    /// Applies the fault to `text`.
    pub fn apply(self, text: &str, rng: &mut SplitMix64) -> String {
        match self {
            Self::Empty => String::new(),
            Self::Truncated => text.chars().take(text.chars().count() / 3).collect(),
            Self::Garbled => (0..text.chars().count().max(3))
                .map(|_| char::from(b'!' + (rng.next_u64() % 94) as u8))
                .collect(),
        }
    }
}

/// Whether response `index` of `prompt_id` comes out degenerate at `rate`, and how: a
/// stream of its own per response, so the rest of the samples are untouched.
pub fn degenerate_draw(
    seed: u64,
    prompt_id: &str,
    index: usize,
    rate: f64,
) -> Option<(Degenerate, SplitMix64)> {
    if rate <= 0.0 {
        return None;
    }
    let mut rng = stream(&format!("sample-degenerate:{seed}:{prompt_id}:{index}"));
    if uniform(&mut rng) >= rate {
        return None;
    }
    let kind = match rng.next_u64() % 3 {
        0 => Degenerate::Empty,
        1 => Degenerate::Truncated,
        _ => Degenerate::Garbled,
    };
    Some((kind, rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_draws_come_at_their_rate_in_three_kinds() {
        let mut kinds = [0usize; 3];
        for k in 0..9000 {
            if let Some((kind, _)) = degenerate_draw(0, "p", k, 0.3) {
                kinds[kind as usize] += 1;
            }
        }
        let total: usize = kinds.iter().sum();
        assert!((2500..2900).contains(&total), "{total}");
        assert!(kinds.iter().all(|&k| k > 700), "{kinds:?}");
        let mut rng = stream("x");
        assert_eq!(Degenerate::Truncated.apply("abcdef", &mut rng), "ab");
        assert_eq!(Degenerate::Empty.apply("abcdef", &mut rng), "");
        let garbled = Degenerate::Garbled.apply("ab", &mut rng);
        assert_eq!(garbled.len(), 3);
        assert!(garbled.bytes().all(|b| (b'!'..=b'~').contains(&b)));
    }
}
