//! The page around the sections: the title, the job table, the table of contents and the
//! style sheet, all inline (the file opens offline, from anywhere).

use super::figures::{format_number, mib};
use super::{Run, Section, StageState};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A two-column table of `(name, value)` rows.
pub fn table(caption: &str, rows: &[(String, String)]) -> String {
    let mut out = format!(
        "<table class=\"figures\"><caption>{}</caption><tbody>",
        escape(caption)
    );
    for (k, v) in rows {
        out.push_str(&format!(
            "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
            escape(k),
            escape(v)
        ));
    }
    out.push_str("</tbody></table>");
    out
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 16px 24px; color: #1b1b1b; }
h1 { font-size: 26px; margin-bottom: 4px; }
h2 { font-size: 20px; border-top: 1px solid #ccc; padding-top: 18px; margin-top: 28px; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure.plot { margin: 0; }
figure.plot svg { display: block; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #444; max-width: 600px; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 13px; background: #e8eef7; }
.state-failed, .state-stale, .state-not-run { background: #fbe3d6; }
.notice { background: #fff6dc; border-left: 4px solid #e6a700; padding: 6px 10px; margin: 8px 0; }
details { margin: 8px 0; }
";

/// The class suffix of a state.
fn state_class(state: &StageState) -> &'static str {
    match state {
        StageState::Ran => "ran",
        StageState::UpToDate => "up-to-date",
        StageState::Stale => "stale",
        StageState::Found => "found",
        StageState::Failed(_) => "failed",
        StageState::NotRun => "not-run",
    }
}

/// A state badge.
pub fn badge(state: &StageState) -> String {
    format!(
        "<span class=\"state state-{}\">{}</span>",
        state_class(state),
        escape(state.label())
    )
}

/// The whole page.
pub fn page(run: &Run, sections: &[Section]) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str(&format!(
        "<title>prefsmith report: {}</title><style>{STYLE}</style></head><body>",
        escape(&run.title)
    ));
    out.push_str(&format!(
        "<h1>prefsmith report: {}</h1><p class=\"meta\">from <code>{}</code>, prefsmith {}</p>",
        escape(&run.title),
        escape(&run.source),
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(&job_section(run, sections));
    for s in sections {
        out.push_str(&format!(
            "<section class=\"stage\" id=\"{}\" data-kind=\"{}\" data-state=\"{}\"><h2>{}</h2>{}</section>",
            escape(&s.id),
            escape(&s.kind),
            state_class(&s.state),
            escape(&s.title),
            s.html
        ));
    }
    out.push_str("</body></html>\n");
    out
}

/// The job: every stage in order with rows in and out, time, memory, state and input files.
fn job_section(run: &Run, sections: &[Section]) -> String {
    let mut out = String::from(
        "<section class=\"stage\" id=\"job\" data-kind=\"job\"><h2>The job</h2>\
         <table><thead><tr><th>#</th><th>stage</th><th>state</th><th>output</th>\
         <th>rows in</th><th>rows out</th><th>time</th><th>peak memory</th><th>input files</th>\
         </tr></thead><tbody>",
    );
    for (i, (stage, section)) in run.stages.iter().zip(sections).enumerate() {
        let cells = match &stage.manifest {
            Some(m) => {
                let rows_in: u64 = m.inputs.iter().map(|f| f.rows).sum();
                let files = m
                    .inputs
                    .iter()
                    .map(|f| escape(&f.path))
                    .collect::<Vec<_>>()
                    .join("<br>");
                format!(
                    "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} s</td>\
                     <td class=\"num\">{}</td><td>{}</td>",
                    if m.inputs.is_empty() {
                        "—".to_string()
                    } else {
                        rows_in.to_string()
                    },
                    m.rows,
                    format_number((m.timing.seconds * 1000.0).round() / 1000.0),
                    m.timing
                        .peak_rss_bytes
                        .map(mib)
                        .unwrap_or_else(|| "—".into()),
                    if files.is_empty() {
                        "—".to_string()
                    } else {
                        format!(
                            "<details><summary>{} file(s)</summary>{files}</details>",
                            m.inputs.len()
                        )
                    }
                )
            }
            None => "<td>—</td><td>—</td><td>—</td><td>—</td><td>—</td>".to_string(),
        };
        out.push_str(&format!(
            "<tr><td>{}</td><td><a href=\"#{}\">{}</a></td><td>{}</td><td><code>{}</code></td>{cells}</tr>",
            i + 1,
            escape(&section.id),
            escape(&stage.kind),
            badge(&stage.state),
            escape(&stage.output)
        ));
    }
    out.push_str("</tbody></table></section>");
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
