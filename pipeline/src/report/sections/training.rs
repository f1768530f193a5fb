//! The `train` section: the curves of `metrics.jsonl` against the optimizer step.

use serde_json::Value;

use super::super::plot;
use super::Plots;
use crate::error::Result;
use crate::storage::Location;

/// The training curves from `metrics.jsonl`: loss, implicit rewards, accuracy, grad norm and
/// learning rate against the step.
pub(super) async fn train_plots(output: &str, plots: &mut Plots) -> Result<()> {
    let location = Location::parse(output)?.child("metrics.jsonl");
    if location.head().await?.is_none() {
        plots.notice(format!("no metrics.jsonl in {output}: no curves to draw"));
        return Ok(());
    }
    let text = String::from_utf8_lossy(&location.read_bytes().await?).into_owned();
    let (records, bad) = parse_metrics(&text);
    for (line, error) in bad.iter().take(5) {
        plots.notice(format!(
            "metrics.jsonl line {line} is not a JSON object ({error}); left out"
        ));
    }
    let series = |key: &str| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let charts: [(&str, &str, &[&str]); 5] = [
        ("Loss", "nats", &["loss"]),
        (
            "Implicit rewards",
            "β · log πθ/πref",
            &["rewards/chosen", "rewards/rejected", "rewards/margins"],
        ),
        (
            "Reward accuracy",
            "fraction of pairs",
            &["rewards/accuracies"],
        ),
        ("Gradient norm", "L2 norm (before clipping)", &["grad_norm"]),
        ("Learning rate", "learning rate", &["learning_rate"]),
    ];
    for (title, unit, keys) in charts {
        let lines: Vec<(String, Vec<(f64, f64)>)> = keys
            .iter()
            .map(|k| (k.to_string(), series(k)))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if lines.is_empty() {
            plots.notice(format!(
                "{title}: metrics.jsonl has no '{}'",
                keys.join("', '")
            ));
            continue;
        }
        plots.add(
            plot::lines(title, "optimizer step", unit, &lines)?,
            &format!(
                "{} per logged step ({} records)",
                keys.join(", "),
                records.len()
            ),
        );
    }
    Ok(())
}

/// One line of `metrics.jsonl`.
type MetricsRecord = serde_json::Map<String, Value>;

/// The JSON objects of a metrics file, and the 1-based lines that are not one, with why.
fn parse_metrics(text: &str) -> (Vec<MetricsRecord>, Vec<(usize, String)>) {
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => records.push(map),
            Ok(_) => bad.push((i + 1, "not an object".to_string())),
            Err(e) => bad.push((i + 1, e.to_string())),
        }
    }
    (records, bad)
}

#[cfg(test)]
mod tests {
    use super::parse_metrics;

    #[test]
    fn corrupt_metrics_lines_are_named() {
        let (records, bad) =
            parse_metrics("{\"step\":1,\"loss\":0.7}\n{\"step\":2,\n\n[1]\n{\"step\":3}\n");
        assert_eq!(records.len(), 2);
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![2, 4]);
    }
}
