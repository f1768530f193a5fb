//! What a reader of the function reference needs besides each function's own
//! [`Documentation`]: the sections the functions are filed under, and a function's kind and
//! name next to its documentation (see `function_docs` at the crate root).

use std::fmt;

use datafusion::logical_expr::{DocSection, Documentation};

/// `select_pair` and its forms.
pub const PAIR_SELECTION: DocSection = DocSection {
    include: true,
    label: "Pair selection",
    description: Some("One preference pair per prompt from its responses' rewards."),
};

/// Statistics of a prompt's rewards.
pub const REWARD_STATISTICS: DocSection = DocSection {
    include: true,
    label: "Reward statistics",
    description: Some("Count, mean and spread of a prompt's rewards."),
};

/// The margin arithmetic of margin-based pair selection.
pub const MARGINS: DocSection = DocSection {
    include: true,
    label: "Margins",
    description: Some("Reward margins, their clipping to probabilities and their fusion."),
};

/// Robust PCA label cleaning.
pub const LABEL_CLEANING: DocSection = DocSection {
    include: true,
    label: "Label cleaning",
    description: Some("Robust PCA over per-prompt comparison matrices."),
};

/// Prompt ids and prompt texts.
pub const PROMPTS: DocSection = DocSection {
    include: true,
    label: "Prompts",
    description: Some("Prompt ids and generated prompt texts."),
};

/// How a function is called: per row, per group, or per row over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FunctionKind {
    /// One value per row.
    Scalar,
    /// One value per group.
    Aggregate,
    /// One value per row, computed over the row's partition.
    Window,
}

impl FunctionKind {
    /// The kind as the reference prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Aggregate => "aggregate",
            Self::Window => "window",
        }
    }
}

impl fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One function of the crate with its documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDoc {
    /// The name SQL calls it by.
    pub name: String,
    /// Scalar, aggregate or window.
    pub kind: FunctionKind,
    /// Description, syntax, arguments and SQL example.
    pub documentation: Documentation,
}

/// The argument names a syntax example such as `f(a, b [, c [, d]])` or
/// `f(p1 [, p2, ...]) OVER (...)` shows: those inside the first parentheses, brackets and
/// ellipses left out.
pub fn syntax_arguments(syntax: &str) -> Vec<&str> {
    let Some((_, rest)) = syntax.split_once('(') else {
        return Vec::new();
    };
    let mut depth = 1;
    let end = rest
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            depth == 0
        })
        .map_or(rest.len(), |(i, _)| i);
    rest[..end]
        .split([',', '[', ']'])
        .map(str::trim)
        .filter(|name| !name.is_empty() && *name != "..." && *name != "…")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_arguments_skip_brackets_ellipses_and_over() {
        assert_eq!(
            syntax_arguments("select_pair(response_index, reward, k_chosen, k_rejected [, ddof])"),
            ["response_index", "reward", "k_chosen", "k_rejected", "ddof"]
        );
        assert_eq!(
            syntax_arguments("margin_upper_bound(margin [, divisor [, m1]])"),
            ["margin", "divisor", "m1"]
        );
        assert_eq!(
            syntax_arguments("fuse_preference(p1 [, p2, ...])"),
            ["p1", "p2"]
        );
        assert_eq!(
            syntax_arguments("reward_zscore(reward) OVER (PARTITION BY prompt_id)"),
            ["reward"]
        );
        assert!(syntax_arguments("no_parentheses").is_empty());
    }
}
