//! `prefsmith inspect`.

use prefsmith_pipeline::input::ColumnMap;
use prefsmith_pipeline::inspect;

/// Arguments of `prefsmith inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Parquet file, directory of shards, stage output or glob.
    path: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let s = inspect::inspect(&args.path, &ColumnMap::default()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("{}", s.path);
    println!(
        "  files {} | rows {} | {:.1} MiB | {}",
        s.files,
        s.rows,
        s.bytes as f64 / 1048576.0,
        s.stage_output
    );
    println!("  layout {}", s.layout);
    let cols: Vec<String> = s.columns.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    println!("  columns {}", cols.join(", "));
    if let Some(p) = s.prompts {
        println!("  prompts {p}");
    }
    if let (Some(r), Some([min, median, max])) = (s.responses, s.responses_per_prompt) {
        println!("  responses {r} | per prompt min {min} median {median} max {max}");
    }
    if let (Some(n), Some(nan), Some(inf)) = (s.null_rewards, s.nan_rewards, s.infinite_rewards) {
        let what = if s.layout == "pairs" {
            "rating gaps"
        } else {
            "rewards"
        };
        println!("  {what}: null {n}, NaN {nan}, ±inf {inf}");
    }
    if let Some(q) = &s.reward_quantiles {
        let qs: Vec<String> = q
            .iter()
            .map(|(q, v)| format!("p{:.0} {v:.4}", q * 100.0))
            .collect();
        println!("  quantiles {}", qs.join(", "));
    }
    Ok(())
}
