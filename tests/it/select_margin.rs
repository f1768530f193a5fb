//! `select-margin` (BeeS) on the shipped UltraFeedback pairs with deterministic synthetic
//! log-prob columns, checked against `tests/python/reference_select_margin.py`, an independent
//! numpy implementation of M2 search, fusion and top-k; plus its errors.

use std::path::Path;

use crate::common::{data, fails, manifest, ok, prefsmith, python_script, tempdir};

/// The UltraFeedback pairs plus four log-prob columns (a few NaN, inf and null).
fn input_with_logps(dir: &Path) -> String {
    let path = dir.join("uf_logps.parquet");
    let path = path.to_str().expect("utf-8").to_string();
    ok(&python_script(
        "reference_select_margin.py",
        &[
            "make-input",
            "--source",
            &data("ultrafeedback_binarized_1k.parquet"),
            "--output",
            &path,
        ],
    ));
    path
}

fn run_and_check(input: &str, out: &Path, flags: &[&str], sources: Option<&str>) -> String {
    let output = out.to_str().expect("utf-8");
    let mut args = vec!["select-margin", "--input", input, "--output", output];
    args.extend_from_slice(flags);
    if let Some(s) = sources {
        args.extend_from_slice(&["--sources", s]);
    }
    let stdout = ok(&prefsmith(&args));
    let mut check = vec!["check", "--input", input, "--actual", output];
    check.extend_from_slice(flags);
    if let Some(s) = sources {
        check.extend_from_slice(&["--sources", s]);
    }
    let result = ok(&python_script("reference_select_margin.py", &check));
    assert!(result.contains("select-margin matches"), "{result}");
    stdout
}

#[test]
fn same_pairs_in_the_same_order_as_the_numpy_reference() {
    let dir = tempdir();
    let input = input_with_logps(dir.path());
    let cases: &[(&[&str], Option<&str>)] = &[
        (&["--top-k", "200"], None),
        (&["--fraction", "0.1"], None),
        (&["--top-k", "200"], Some("external")),
        (&["--top-k", "50"], Some("implicit")),
    ];
    for (i, (flags, sources)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("selected-{i}"));
        run_and_check(&input, &out, flags, *sources);
    }
    // Four pairs have a non-finite implicit margin (NaN, inf, null log-probs).
    let m = manifest(&dir.path().join("selected-0"));
    assert_eq!(m["stats"]["dropped_non_finite"], 4);
    // On the 1–10 ratings the external margins span whole units: auto keeps the unit 1.
    assert_eq!(m["stats"]["margin_units"]["external"], 1.0);
    assert_eq!(m["stats"]["margin_scale"], "auto");
    assert_eq!(m["stats"]["dropped_non_finite_by_source"]["implicit"], 4);
    assert_eq!(m["stats"]["m2"]["external"], 6.0);
    // ceil(0.1 × 996) = 100.
    assert_eq!(manifest(&dir.path().join("selected-1"))["rows"], 100);
    // The check can fail: the reference with another k disagrees.
    let other = python_script(
        "reference_select_margin.py",
        &[
            "check",
            "--input",
            &input,
            "--actual",
            dir.path().join("selected-0").to_str().expect("utf-8"),
            "--top-k",
            "201",
        ],
    );
    assert_eq!(other.status.code(), Some(1));
}

/// The same ratings on a tenth of the scale: under `auto` the external margins are measured
/// in q90/4 units (the ranking is that of the full scale's search on finer units), under
/// `paper` in whole units, where M2 cannot move; both match the reference.
#[test]
fn narrow_rating_scales_are_measured_in_their_own_units() {
    let dir = tempdir();
    let path = dir.path().join("uf_narrow.parquet");
    let input = path.to_str().expect("utf-8").to_string();
    ok(&python_script(
        "reference_select_margin.py",
        &[
            "make-input",
            "--source",
            &data("ultrafeedback_binarized_1k.parquet"),
            "--output",
            &input,
            "--score-scale",
            "0.1",
        ],
    ));
    let cases: &[&[&str]] = &[
        &["--top-k", "100"],
        &["--top-k", "100", "--margin-scale", "paper"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        run_and_check(&input, &dir.path().join(format!("n-{i}")), flags, None);
    }
    let auto = manifest(&dir.path().join("n-0"));
    let unit = auto["stats"]["margin_units"]["external"]
        .as_f64()
        .expect("unit");
    assert!((unit - 0.455 / 4.0).abs() < 1e-9, "{unit}");
    let paper = manifest(&dir.path().join("n-1"));
    assert_eq!(paper["stats"]["margin_units"]["external"], 1.0);
    assert_eq!(paper["stats"]["m2"]["external"], 0.0);
}

#[test]
fn fewer_eligible_than_k_keeps_all_and_reports_the_shortfall() {
    let dir = tempdir();
    let input = input_with_logps(dir.path());
    let out = dir.path().join("all");
    let stdout = run_and_check(&input, &out, &["--top-k", "5000"], None);
    assert!(stdout.contains("shortfall 4004"), "{stdout}");
    let m = manifest(&out);
    assert_eq!(m["stats"]["shortfall"], 4004);
    assert_eq!(m["rows"], 996);
}

#[test]
fn implicit_source_without_log_probs_is_named() {
    let dir = tempdir();
    let out = dir.path().join("selected");
    let stderr = fails(
        &prefsmith(&[
            "select-margin",
            "--input",
            &data("ultrafeedback_binarized_1k.parquet"),
            "--output",
            out.to_str().expect("utf-8"),
            "--top-k",
            "10",
            "--sources",
            "external,implicit",
        ]),
        1,
    );
    assert!(
        stderr.contains("missing column 'policy_logp_chosen'")
            && stderr.contains("--sources external"),
        "{stderr}"
    );
    assert!(!out.join("_manifest.json").exists());
    let stderr = fails(
        &prefsmith(&[
            "select-margin",
            "--input",
            &data("ultrafeedback_binarized_1k.parquet"),
            "--output",
            out.to_str().expect("utf-8"),
            "--top-k",
            "10",
            "--fraction",
            "0.5",
        ]),
        2,
    );
    assert!(stderr.contains("not both"), "{stderr}");
}

#[test]
fn no_eligible_pair_is_an_error() {
    let dir = tempdir();
    let input = dir.path().join("nan.parquet");
    ok(&prefsmith(&[
        "sql",
        "SELECT 'p' || CAST(value AS VARCHAR) AS prompt_id, 'x' AS prompt, 'a' AS chosen, 'b' AS rejected, \
         CAST('NaN' AS DOUBLE) AS score_chosen, 1.0 AS score_rejected FROM range(3)",
        "--output",
        input.to_str().expect("utf-8"),
    ]));
    let out = dir.path().join("selected");
    let stderr = fails(
        &prefsmith(&[
            "select-margin",
            "--input",
            input.to_str().expect("utf-8"),
            "--output",
            out.to_str().expect("utf-8"),
            "--top-k",
            "1",
        ]),
        1,
    );
    assert!(stderr.contains("external margin"), "{stderr}");
    assert!(!out.join("_manifest.json").exists());
}
