//! The gold-reward task of the experiments (`EXPERIMENTS.md`, "The task"): sort a handful of
//! distinct letters. Its gold reward is a program, so the effect of every data rule on the
//! trained policy can be measured exactly; its "external reward model" is that gold reward
//! seen through the faults real reward models have — Gaussian noise, a heavy penalty on
//! degenerate text, and (as pairwise judgments) a fraction of pairs the judge gets wrong.
//!
//! Everything here is a pure function of its inputs and a seed: a prompt, a reward or a
//! judgment never depends on which other rows are processed with it.

use prefsmith_udfs::selection::SplitMix64;

use crate::stages::faults::{stream, uniform};

/// The version of the task's definitions (prompts, gold reward, reward model), part of the
/// settings of its stages: outputs written under another version are rerun, not reused.
pub const TASK_VERSION: u32 = 3;

/// What every prompt starts with; the letters follow it.
pub const PROMPT_PREFIX: &str = "sort: ";

/// The shape of the generated prompts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskShape {
    /// Letters drawn from the first `alphabet` lowercase letters (2–26).
    pub alphabet: usize,
    /// Fewest letters in a prompt (≥ 1).
    pub min_letters: usize,
    /// Most letters in a prompt (≤ `alphabet`).
    pub max_letters: usize,
}

/// One generated prompt and its correct answer.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPrompt {
    /// `"{split}-{seed}-{index:06}"`: ids sort in generation order.
    pub prompt_id: String,
    /// `"sort: "` and the letters in random order.
    pub prompt: String,
    /// The letters sorted.
    pub answer: String,
    /// The letters as given (a wrong answer, for a pair table's `rejected` side).
    pub letters: String,
}

/// A standard normal draw (Box–Muller, the cosine branch).
pub fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - uniform(rng); // in (0, 1]: the logarithm stays finite
    let u2 = uniform(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl TaskShape {
    /// Checks the ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=26).contains(&self.alphabet) {
            return Err(format!("alphabet {} must be in 2..=26", self.alphabet));
        }
        if self.min_letters == 0 || self.min_letters > self.max_letters {
            return Err(format!(
                "min-letters {} must be in 1..=max-letters ({})",
                self.min_letters, self.max_letters
            ));
        }
        if self.max_letters > self.alphabet {
            return Err(format!(
                "max-letters {} cannot exceed the alphabet ({}): the letters are distinct",
                self.max_letters, self.alphabet
            ));
        }
        Ok(())
    }

    /// Prompt `index` of `split` under `seed`: its own stream, so the first k prompts are the
    /// same whatever the count.
    pub fn prompt(&self, split: &str, seed: u64, index: usize) -> TaskPrompt {
        let prompt_id = format!("{split}-{seed}-{index:06}");
        let mut rng = stream(&format!("task-prompt:{prompt_id}"));
        let span = (self.max_letters - self.min_letters + 1) as u64;
        let count = self.min_letters + (rng.next_u64() % span) as usize;
        let mut pool: Vec<u8> = (b'a'..b'a' + self.alphabet as u8).collect();
        // A partial Fisher–Yates shuffle: the first `count` letters, distinct, in random order.
        for i in 0..count {
            let j = i + (rng.next_u64() % (pool.len() - i) as u64) as usize;
            pool.swap(i, j);
        }
        let letters = String::from_utf8(pool[..count].to_vec()).expect("ASCII");
        let mut sorted = pool[..count].to_vec();
        sorted.sort_unstable();
        TaskPrompt {
            prompt: format!("{PROMPT_PREFIX}{letters}"),
            answer: String::from_utf8(sorted).expect("ASCII"),
            letters,
            prompt_id,
        }
    }
}

/// The correct answer to a task prompt (`"sort: "` + letters), or `None` when the text is not
/// a task prompt.
pub fn answer_of(prompt: &str) -> Option<String> {
    let letters = trim_ascii_space(prompt.strip_prefix(PROMPT_PREFIX)?);
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let mut sorted = letters.as_bytes().to_vec();
    sorted.sort_unstable();
    String::from_utf8(sorted).ok()
}

/// `text` without leading and trailing ASCII whitespace (space, tab, line feed, form feed,
/// carriage return): a fixed set, so that every implementation trims alike.
pub fn trim_ascii_space(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// Length of the longest common subsequence of two character strings.
fn lcs(a: &[char], b: &[char]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for &x in a {
        let mut diagonal = 0;
        for (j, &y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diagonal + 1 } else { up.max(row[j]) };
            diagonal = up;
        }
    }
    row[b.len()]
}

/// The gold reward of `response` to a prompt whose answer is `answer`: the longest common
/// subsequence of the two over the longer length, in [0, 1]; 1 exactly for the answer, 0 for
/// an empty response. Lengths count characters (Unicode scalar values), so a byte-level
/// model's invalid UTF-8, decoded as U+FFFD, counts as one wrong character. Leading and
/// trailing ASCII whitespace is ignored ([`trim_ascii_space`]).
pub fn gold_reward(answer: &str, response: &str) -> f64 {
    let response: Vec<char> = trim_ascii_space(response).chars().collect();
    let answer: Vec<char> = answer.chars().collect();
    let longer = response.len().max(answer.len());
    if longer == 0 {
        return 0.0;
    }
    lcs(&answer, &response) as f64 / longer as f64
}

/// Whether the reward model sees `response` as degenerate: empty, holding anything but
/// lowercase letters, or shorter than half the answer (truncated).
pub fn looks_degenerate(answer: &str, response: &str) -> bool {
    let text = trim_ascii_space(response);
    text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_lowercase())
        || 2 * text.chars().count() < answer.chars().count()
}

/// The external reward model: the gold reward plus Gaussian noise, minus a penalty on
/// degenerate text, times a scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoisyReward {
    /// Seed of the noise.
    pub seed: u64,
    /// σ of the Gaussian noise on the gold reward.
    pub noise: f64,
    /// Subtracted from a degenerate response's reward.
    pub degenerate_penalty: f64,
    /// Multiplies the result (1 = the gold reward's own [0, 1] scale).
    pub scale: f64,
}

impl NoisyReward {
    /// The reward of response `index` of prompt `prompt_id`; `draw` tells repeated judgments
    /// of the same response apart (0 for the score of record).
    pub fn reward(
        &self,
        prompt_id: &str,
        index: usize,
        draw: usize,
        answer: &str,
        response: &str,
    ) -> f64 {
        let mut rng = stream(&format!(
            "task-noise:{}:{prompt_id}:{index}:{draw}",
            self.seed
        ));
        let penalty = if looks_degenerate(answer, response) {
            self.degenerate_penalty
        } else {
            0.0
        };
        self.scale * (gold_reward(answer, response) + self.noise * normal(&mut rng) - penalty)
    }
}

/// Whether the judge is systematically wrong about the pair (i, j), i < j, of a prompt: the
/// same for every judgment of the pair, true with probability `rate`.
pub fn pair_flipped(seed: u64, prompt_id: &str, i: usize, j: usize, rate: f64) -> bool {
    rate > 0.0
        && uniform(&mut stream(&format!(
            "task-flip:{seed}:{prompt_id}:{i}:{j}"
        ))) < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: TaskShape = TaskShape {
        alphabet: 12,
        min_letters: 4,
        max_letters: 8,
    };

    #[test]
    fn prompts_are_distinct_letters_with_their_sorted_answer() {
        for i in 0..200 {
            let p = SHAPE.prompt("train", 3, i);
            assert_eq!(p.prompt, format!("sort: {}", p.letters));
            assert!((4..=8).contains(&p.letters.len()));
            let mut seen = p.letters.bytes().collect::<Vec<_>>();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), p.letters.len(), "{}", p.letters);
            assert!(p.letters.bytes().all(|b| (b'a'..b'a' + 12).contains(&b)));
            assert_eq!(answer_of(&p.prompt).as_deref(), Some(p.answer.as_str()));
        }
        assert_eq!(SHAPE.prompt("train", 3, 7), SHAPE.prompt("train", 3, 7));
        assert_ne!(SHAPE.prompt("train", 3, 7), SHAPE.prompt("heldout", 3, 7));
        assert_eq!(SHAPE.prompt("train", 3, 7).prompt_id, "train-3-000007");
    }

    #[test]
    fn the_gold_reward_by_hand() {
        assert_eq!(gold_reward("abcd", "abcd"), 1.0);
        assert_eq!(gold_reward("abcd", " abcd\n"), 1.0);
        assert_eq!(gold_reward("abcd", ""), 0.0);
        // "abd" is a subsequence of "abcd": 3 of the longer 4.
        assert_eq!(gold_reward("abcd", "abd"), 0.75);
        // "dcba": the longest common subsequence is one letter.
        assert_eq!(gold_reward("abcd", "dcba"), 0.25);
        // Too long: "abcdxy" holds the answer, over 6.
        assert_eq!(gold_reward("abcd", "abcdxy"), 4.0 / 6.0);
        assert_eq!(gold_reward("abcd", "xyz"), 0.0);
        // A replacement character is one character, not three bytes.
        assert_eq!(gold_reward("abc", "ab\u{fffd}"), 2.0 / 3.0);
    }

    #[test]
    fn degenerate_text_is_seen_and_penalised() {
        assert!(looks_degenerate("abcdef", ""));
        assert!(looks_degenerate("abcdef", "ab"));
        assert!(looks_degenerate("abcdef", "ab#d!f"));
        assert!(!looks_degenerate("abcdef", "abc"));
        assert!(!looks_degenerate("abcdef", "fedcba"));
        let rm = NoisyReward {
            seed: 0,
            noise: 0.0,
            degenerate_penalty: 1.0,
            scale: 8.0,
        };
        assert_eq!(rm.reward("p", 0, 0, "abcd", "abcd"), 8.0);
        assert_eq!(rm.reward("p", 0, 0, "abcd", ""), -8.0);
    }

    #[test]
    fn noise_has_the_asked_spread_and_is_reproducible() {
        let rm = NoisyReward {
            seed: 1,
            noise: 0.2,
            degenerate_penalty: 1.0,
            scale: 1.0,
        };
        let draws: Vec<f64> = (0..4000)
            .map(|i| rm.reward("p", i, 0, "abcd", "abcd") - 1.0)
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let sd = (draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / 3999.0).sqrt();
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((sd - 0.2).abs() < 0.01, "sd {sd}");
        assert_eq!(
            rm.reward("p", 5, 0, "abcd", "abc"),
            rm.reward("p", 5, 0, "abcd", "abc")
        );
        assert_ne!(
            rm.reward("p", 5, 0, "abcd", "abc"),
            rm.reward("p", 5, 1, "abcd", "abc")
        );
    }

    #[test]
    fn flips_come_at_their_rate() {
        let flipped = (0..10_000)
            .filter(|&k| pair_flipped(0, "p", k, k + 1, 0.2))
            .count();
        assert!((1800..2200).contains(&flipped), "{flipped}");
        assert!(!pair_flipped(0, "p", 0, 1, 0.0));
    }
}
