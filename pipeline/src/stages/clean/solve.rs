//! The robust-PCA solver run over every prompt of a chunk: one problem per prompt, the
//! prompts split over the cores.

use prefsmith_udfs::cleaning::{CleanMethod, Cleaned, clean_indexed_scores, clean_judgments};

use crate::stages::Progress;

/// One prompt's input to the solver.
pub(super) enum Problem {
    /// Scores of responses with these indices (finite scores only).
    Scores { indices: Vec<i64>, scores: Vec<f64> },
    /// Judgments (i, j, outcome) over response indices.
    Judgments(Vec<(i64, i64, f64)>),
}

/// One prompt's result: response indices (ascending) and the cleaning.
pub(super) type Solved = (Vec<i64>, Cleaned);

/// How every prompt of a run is cleaned.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) method: CleanMethod,
    pub(super) temperature: f64,
}

fn solve(problem: &Problem, settings: Settings) -> Solved {
    match problem {
        Problem::Scores { indices, scores } => {
            clean_indexed_scores(indices, scores, settings.temperature, settings.method).expect(
                "duplicate response indices and judgment-only methods are rejected before solving",
            )
        }
        Problem::Judgments(judgments) => clean_judgments(judgments, settings.method),
    }
}

/// Solves every problem, the prompts split over the cores, with progress lines unless the
/// caller reports progress itself (`report` false: the streaming path, chunk by chunk).
pub(super) fn solve_all(problems: &[Problem], settings: Settings, report: bool) -> Vec<Solved> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let progress = std::sync::Mutex::new(Progress::new("clean", problems.len() as u64));
    let next = std::sync::atomic::AtomicUsize::new(0);
    const CHUNK: usize = 64;
    let mut results: Vec<Option<Solved>> = (0..problems.len()).map(|_| None).collect();
    let slots: Vec<std::sync::Mutex<&mut [Option<Solved>]>> = results
        .chunks_mut(CHUNK)
        .map(std::sync::Mutex::new)
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let chunk = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(slot) = slots.get(chunk) else { break };
                    let mut slot = slot.lock().expect("one worker per chunk");
                    for (k, out) in slot.iter_mut().enumerate() {
                        *out = Some(solve(&problems[chunk * CHUNK + k], settings));
                    }
                    if report && let Ok(mut p) = progress.lock() {
                        p.advance(slot.len() as u64);
                    }
                }
            });
        }
    });
    drop(slots);
    if report && let Ok(p) = progress.lock() {
        p.finish();
    }
    results.into_iter().map(|r| r.expect("solved")).collect()
}
