//! `prefsmith report` in a real browser: the report of a quickstart-style job (the shipped
//! `configs/quickstart.toml` with the tiny test model and eight short prompts) rendered by
//! headless Chromium, its DOM checked for every stage's section, non-empty plots and no
//! console errors, and a screenshot taken; then a failed job, an empty stage, a corrupt
//! `metrics.jsonl` and paths that are not runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{fails, ok, prefsmith_in, repo, tempdir};

/// The quickstart job, moved into `dir`: the tiny model instead of SmolLM2, short prompts
/// that fit its context, and 8 new tokens per response.
fn tiny_quickstart(dir: &Path) -> PathBuf {
    let prompts: String = (0..8)
        .map(|i| {
            format!("{{\"prompt_id\": \"p{i}\", \"prompt\": \"Question {i}: name a colour.\"}}\n")
        })
        .collect();
    std::fs::write(dir.join("prompts.jsonl"), prompts).expect("write prompts");
    let job = std::fs::read_to_string(repo().join("configs/quickstart.toml"))
        .expect("configs/quickstart.toml")
        .replace("\"smollm2\"", "\"tiny:0\"")
        .replace("data/arena_bench_v1_scored.parquet", "prompts.jsonl")
        .replace("max-new-tokens = 32", "max-new-tokens = 8");
    assert!(
        job.contains("tiny:0") && job.contains("prompts.jsonl"),
        "{job}"
    );
    let path = dir.join("quickstart.toml");
    std::fs::write(&path, job).expect("write job");
    path
}

/// Headless Chromium, installed from Debian when missing (a missing browser fails the test).
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    let installed = Command::new("sh")
        .args([
            "-c",
            "(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "the report test needs Chromium: `apt-get install chromium` (Debian) failed"
    );
    PathBuf::from("/usr/bin/chromium")
}

fn browser(args: &[&str]) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,2000",
        ])
        .args(args)
        .output()
        .expect("chromium runs")
}

/// What the page looks like to the browser: the report with a probe added (test-only) that
/// records errors from the start and, after layout, every section and plot size.
pub(crate) fn audit(report: &Path, dir: &Path) -> serde_json::Value {
    let page = std::fs::read_to_string(report).expect("report");
    let probe_head = "<script>window.__errors=[];\
        addEventListener('error',e=>__errors.push(String(e.message||e.type)),true);\
        const __ce=console.error;console.error=(...a)=>{__errors.push(a.join(' '));__ce(...a);};\
        </script>";
    let probe_end = "<script>(()=>{const r=x=>{const b=x.getBoundingClientRect();return [b.width,b.height];};\
        const out={errors:__errors,\
        sections:[...document.querySelectorAll('section.stage')].map(s=>({id:s.id,kind:s.dataset.kind,state:s.dataset.state||'',plots:s.querySelectorAll('svg').length})),\
        plots:[...document.querySelectorAll('svg, img')].map(r),\
        width:document.documentElement.scrollWidth};\
        const p=document.createElement('pre');p.id='audit';p.textContent=JSON.stringify(out);document.body.appendChild(p);})();</script>";
    let probed = page
        .replacen("<head>", &format!("<head>{probe_head}"), 1)
        .replacen("</body>", &format!("{probe_end}</body>"), 1);
    let copy = dir.join("probed.html");
    std::fs::write(&copy, probed).expect("write the probed copy");
    let out = browser(&["--dump-dom", &format!("file://{}", copy.display())]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = dom.find("<pre id=\"audit\">").unwrap_or_else(|| {
        panic!(
            "the probe did not run; chromium said:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let json = &dom[start + "<pre id=\"audit\">".len()..];
    let json = &json[..json.find("</pre>").expect("end of the probe's output")];
    let json = json
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).expect("the probe's JSON")
}

#[test]
fn quickstart_report_renders_every_section_in_a_browser() {
    let dir = tempdir();
    let job = tiny_quickstart(dir.path());
    let stdout = ok(&prefsmith_in(
        dir.path(),
        &["run", job.to_str().expect("utf-8")],
    ));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("report: "))
        .unwrap_or_else(|| panic!("`prefsmith run` printed no report path:\n{stdout}"));
    assert_eq!(line, "report: out/quickstart/report.html", "{stdout}");
    let report = dir.path().join("out/quickstart/report.html");
    let html = std::fs::read_to_string(&report).expect("the report");
    // Self-contained: no network, no external scripts, styles or fonts (the SVG namespace
    // is a name, never fetched).
    let without_namespaces = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for banned in ["http://", "https://", "<script", "<link", "@import", "url("] {
        assert!(
            !without_namespaces.contains(banned),
            "the report contains '{banned}'"
        );
    }

    let page = audit(&report, dir.path());
    assert_eq!(
        page["errors"],
        serde_json::json!([]),
        "console errors: {page}"
    );
    let sections = page["sections"].as_array().expect("sections");
    let kinds: Vec<&str> = sections
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "job",
            "sample",
            "reward",
            "clean",
            "select",
            "score",
            "train",
            "score",
            "select-margin",
            "route",
            "export",
            "train"
        ],
        "{page}"
    );
    // The plots each stage's data allows, at least.
    let plots = |kind: &str| -> Vec<u64> {
        sections
            .iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| s["plots"].as_u64().unwrap())
            .collect()
    };
    assert!(plots("sample")[0] >= 2, "{page}");
    assert!(plots("reward")[0] >= 3, "{page}");
    assert!(plots("clean")[0] >= 3, "{page}");
    // Skips, chosen, rejected, gap, and the picked prompts (3 seeded + widest/narrowest of 8).
    assert!(plots("select")[0] >= 7, "{page}");
    assert!(plots("select-margin")[0] >= 3, "{page}");
    assert!(plots("route")[0] >= 2, "{page}");
    assert!(plots("train").iter().all(|&n| n >= 5), "{page}");
    let sizes = page["plots"].as_array().expect("plot sizes");
    assert!(sizes.len() >= 30, "{page}");
    for size in sizes {
        let (w, h) = (size[0].as_f64().unwrap(), size[1].as_f64().unwrap());
        assert!(w > 100.0 && h > 100.0, "a plot of {w}×{h} px: {page}");
    }
    assert!(
        page["width"].as_f64().unwrap() <= 1280.0,
        "wider than the window: {page}"
    );
    for figure in [
        "Reward of every response",
        "Per-prompt reward spread",
        "Prompts skipped, by reason",
        "μ − 2σ",
        "Fused preference (logit)",
        "M2 = ",
        "Pairs by route",
        "Implicit rewards",
        "Learning rate",
        "Every figure of the manifest",
    ] {
        assert!(html.contains(figure), "no '{figure}' in the report");
    }

    let shot = dir.path().join("report.png");
    let out = browser(&[
        &format!("--screenshot={}", shot.display()),
        &format!("file://{}", report.display()),
    ]);
    let bytes = std::fs::metadata(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)))
        .len();
    assert!(bytes > 10_000, "a {bytes}-byte screenshot");

    // The same report from the job config (no run) and from the output root: every stage is
    // up to date, and the root's report lists the stages in the order they ran.
    let stdout = ok(&prefsmith_in(
        dir.path(),
        &["report", "quickstart.toml", "--output", "from-config.html"],
    ));
    assert!(
        stdout.contains("report: from-config.html (11 stages)"),
        "{stdout}"
    );
    let from_config = std::fs::read_to_string(dir.path().join("from-config.html")).unwrap();
    assert_eq!(from_config.matches("data-state=\"up-to-date\"").count(), 11);
    let stdout = ok(&prefsmith_in(dir.path(), &["report", "out/quickstart"]));
    assert!(
        stdout.contains("report: out/quickstart/report.html (11 stages)"),
        "{stdout}"
    );
    let stdout = ok(&prefsmith_in(
        dir.path(),
        &["report", "out/quickstart/pairs"],
    ));
    assert!(
        stdout.contains("report: out/quickstart/pairs.report.html (1 stages)"),
        "{stdout}"
    );
}

#[test]
fn failed_and_empty_stages_still_render_and_say_so() {
    let dir = tempdir();
    let job = dir.path().join("job.toml");
    // synth → an sql stage that keeps no row → select on nothing (fails: no rows).
    std::fs::write(
        &job,
        "[[stages]]\nkind = \"synth\"\noutput = \"out/data\"\nprompts = 20\nresponses = 4\n\n\
         [[stages]]\nkind = \"sql\"\noutput = \"out/none\"\nquery = \"SELECT * FROM input WHERE reward > 1e9\"\n\n\
         [[stages]]\nkind = \"select\"\noutput = \"out/pairs\"\n\n\
         [[stages]]\nkind = \"route\"\noutput = \"out/routed\"\n",
    )
    .unwrap();
    let out = prefsmith_in(dir.path(), &["run", "job.toml"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("report: out/report.html"), "{stderr}");
    let html = std::fs::read_to_string(dir.path().join("out/report.html")).expect("report");
    assert!(
        html.contains("id=\"stage-2-sql\" data-kind=\"sql\" data-state=\"ran\""),
        "{html}"
    );
    assert!(html.contains("the stage wrote no rows"), "{html}");
    assert!(
        html.contains("data-kind=\"select\" data-state=\"failed\"")
            && html.contains("the stage failed: "),
        "{html}"
    );
    assert!(
        html.contains("data-kind=\"route\" data-state=\"not-run\""),
        "{html}"
    );
    let page = audit(&dir.path().join("out/report.html"), dir.path());
    assert_eq!(page["errors"], serde_json::json!([]), "{page}");
    assert_eq!(page["sections"].as_array().unwrap().len(), 5, "{page}");
}

#[test]
fn corrupt_metrics_and_paths_that_are_not_runs_are_named() {
    let dir = tempdir();
    let job = tiny_quickstart(dir.path());
    // Only the first five stages (through the seed training).
    let text = std::fs::read_to_string(&job).unwrap();
    let cut = text
        .match_indices("[[stages]]")
        .nth(6)
        .map(|(i, _)| i)
        .unwrap();
    std::fs::write(&job, &text[..cut]).unwrap();
    ok(&prefsmith_in(dir.path(), &["run", "quickstart.toml"]));
    let metrics = dir.path().join("out/quickstart/seed/metrics.jsonl");
    let mut lines = std::fs::read_to_string(&metrics).unwrap();
    lines.push_str("{\"step\": 3, \"loss\n");
    std::fs::write(&metrics, lines).unwrap();
    ok(&prefsmith_in(
        dir.path(),
        &["report", "out/quickstart/seed", "--output", "seed.html"],
    ));
    let html = std::fs::read_to_string(dir.path().join("seed.html")).unwrap();
    assert!(
        html.contains("metrics.jsonl line 3 is not a JSON object"),
        "{html}"
    );
    assert!(html.contains("Loss"), "the good lines still plot: {html}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let stderr = fails(&prefsmith_in(dir.path(), &["report", "empty"]), 2);
    assert!(
        stderr.contains("empty: no _manifest.json here or in its subdirectories"),
        "{stderr}"
    );
    let stderr = fails(&prefsmith_in(dir.path(), &["report", "no/such/dir"]), 1);
    assert!(
        stderr.contains("no/such/dir: no such file or directory"),
        "{stderr}"
    );
    let stderr = fails(&prefsmith_in(dir.path(), &["report", "missing.toml"]), 2);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}
