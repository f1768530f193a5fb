//! A (prompt, response) token sequence to score: what scoring batches, what the int8 engine
//! runs, and what training scores in both sides of a pair.

/// One sequence to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreItem {
    /// Prompt token ids (template applied).
    pub prompt: Vec<u32>,
    /// Response token ids (with the end-of-turn marker).
    pub response: Vec<u32>,
}

impl ScoreItem {
    /// Prompt plus response length.
    pub fn len(&self) -> usize {
        self.prompt.len() + self.response.len()
    }

    /// True when there is nothing to score.
    pub fn is_empty(&self) -> bool {
        self.response.is_empty()
    }
}
