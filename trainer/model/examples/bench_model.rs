//! Scoring and generation throughput of a model on one device, printed as one JSON line (the
//! prefsmith side of `benches/model.sh`; llama.cpp is the peer there).
//!
//! `cargo run --example bench_model -- MODEL [--device cpu] [--tokens 512] [--new-tokens 64]
//! [--runs 5] [--precisions f32,int8]`
//!
//! * scoring: one sequence of `--tokens` tokens with a log-prob at every position after the
//!   first (the work of scoring a response that fills the sequence), median of `--runs`, at
//!   each precision (f32, and int8 on the CPU);
//! * generation: `--new-tokens` tokens past a short ChatML prompt, stop tokens ignored, with 1
//!   and with 8 samples decoding together; tokens/s counts every generated token.

use std::time::Instant;

use prefsmith_model::sampling::{SamplingConfig, generate};
use prefsmith_model::scoring::{Precision, ScoreOptions, score_sequences};
use prefsmith_model::sequence::ScoreItem;
use prefsmith_model::tokenizer::ChatMessage;
use prefsmith_model::{DeviceSpec, LanguageModel};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .ok_or("usage: bench_model MODEL [--device D] [--tokens N] [--new-tokens N] [--runs N]")?;
    let option = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let device: DeviceSpec = option("--device", "cpu").parse()?;
    let tokens: usize = option("--tokens", "512").parse()?;
    let new_tokens: usize = option("--new-tokens", "64").parse()?;
    let runs: usize = option("--runs", "5").parse()?;
    let default_precisions = if device == DeviceSpec::Cpu {
        "f32,int8"
    } else {
        "f32"
    };
    let precisions: Vec<Precision> = option("--precisions", default_precisions)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let lm = LanguageModel::load(model, &device.device()?)?;

    // A deterministic stretch of real text tokens.
    let text = "The quick brown fox jumps over the lazy dog while the committee debates the \
                annual budget, the weather turns, and 1234 people wait patiently in line. ";
    let mut ids = Vec::new();
    while ids.len() < tokens {
        ids.extend(lm.tokenizer.encode(text)?);
    }
    ids.truncate(tokens);
    let item = ScoreItem {
        prompt: ids[..1].to_vec(),
        response: ids[1..].to_vec(),
    };
    let mut scoring = Vec::new();
    for &precision in &precisions {
        let options = ScoreOptions {
            max_batch_tokens: tokens,
            precision,
            ..Default::default()
        };
        score_sequences(&lm, std::slice::from_ref(&item), options, |_| {})?; // warm-up
        let mut rates = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            score_sequences(&lm, std::slice::from_ref(&item), options, |_| {})?;
            rates.push(tokens as f64 / started.elapsed().as_secs_f64());
        }
        let key = match precision {
            Precision::F32 => "scoring_tok_s",
            Precision::Int8 => "scoring_int8_tok_s",
        };
        scoring.push(format!("\"{key}\": {:.1}", median(rates)));
    }

    let prompt = lm.prompt_ids(&[ChatMessage::new(
        "user",
        "Tell me a long story about a lighthouse keeper.",
    )])?;
    let mut generation = Vec::new();
    for &precision in &precisions {
        for n in [1usize, 8] {
            let config = SamplingConfig {
                n,
                temperature: 0.8,
                top_p: 0.95,
                max_new_tokens: new_tokens,
                seed: 0,
                ignore_eos: true,
                precision,
            };
            generate(
                &lm,
                &prompt,
                &SamplingConfig {
                    max_new_tokens: 4,
                    ..config.clone()
                },
                0,
            )?;
            let mut rates = Vec::new();
            for _ in 0..runs.min(3) {
                let started = Instant::now();
                let out = generate(&lm, &prompt, &config, 0)?;
                let produced: usize = out.iter().map(|g| g.ids.len()).sum();
                rates.push(produced as f64 / started.elapsed().as_secs_f64());
            }
            let suffix = match precision {
                Precision::F32 => "",
                Precision::Int8 => "_int8",
            };
            generation.push(format!(
                "\"gen_batch{n}{suffix}_tok_s\": {:.1}",
                median(rates)
            ));
        }
    }
    println!(
        "{{\"engine\": \"prefsmith\", \"device\": \"{device}\", \"scoring_tokens\": {tokens}, {}, {}}}",
        scoring.join(", "),
        generation.join(", ")
    );
    Ok(())
}
