//! The report's plots, drawn with `plotters` into inline SVG strings: histograms with marked
//! values, bar charts, line charts against the training step, and one prompt's sorted rewards.
//! Text is left to the browser (SVG `<text>`), so no font files or system libraries are needed.

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::figures::Histogram;
use crate::error::{Error, Result};

/// Width and height of one plot in pixels: two side by side fit a 1280 px page.
const SIZE: (u32, u32) = (600, 330);

/// A vertical (or, in a strip plot, horizontal) line at a value, with its legend label.
#[derive(Debug, Clone)]
pub struct Marker {
    /// Where.
    pub value: f64,
    /// Legend text.
    pub label: String,
    /// Colour index into the palette.
    pub colour: usize,
}

/// Line colours, told apart in print and for red–green colour blindness.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
];

/// The coordinates of every chart here: f64 on both axes.
type Chart2d = Cartesian2d<RangedCoordf64, RangedCoordf64>;

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn draw_error(e: impl std::fmt::Display) -> Error {
    Error::InvalidData {
        context: "report: drawing a plot".into(),
        message: e.to_string(),
    }
}

/// A range with room around it; a point range becomes one unit wide.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if hi > lo {
        let pad = (hi - lo) * 0.05;
        (lo - pad)..(hi + pad)
    } else {
        (lo - 0.5)..(hi + 0.5)
    }
}

/// Tick labels for an axis spanning `range`: enough decimals to tell ticks about a fifth of
/// the span apart (a loss moving in its sixth decimal shows six), scientific notation for
/// tiny magnitudes (learning rates).
fn tick_format(range: &std::ops::Range<f64>) -> impl Fn(&f64) -> String + use<> {
    let span = (range.end - range.start).abs().max(f64::MIN_POSITIVE);
    let magnitude = range.start.abs().max(range.end.abs());
    let decimals = ((-(span / 5.0).log10().floor()).max(0.0) as usize).min(12);
    let scientific = magnitude < 1e-3;
    move |v: &f64| {
        if *v == 0.0 {
            "0".to_string()
        } else if scientific {
            format!("{v:.2e}")
        } else {
            format!("{v:.decimals$}")
        }
    }
}

/// Tick labels for a count or position axis: whole numbers only (no "2, 2, 3" from ticks
/// at halves).
fn integer_ticks(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// Draws into a fresh SVG string of [`SIZE`].
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        draw(&root)?;
        root.present().map_err(draw_error)?;
    }
    Ok(text)
}

/// A histogram with vertical markers.
pub fn histogram(title: &str, x_label: &str, h: &Histogram, markers: &[Marker]) -> Result<String> {
    let (lo, hi) = (h.lo, h.lo + h.width * h.counts.len() as f64);
    let x_lo = markers.iter().map(|m| m.value).fold(lo, f64::min);
    let x_hi = markers.iter().map(|m| m.value).fold(hi, f64::max);
    let top = h.counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(padded(x_lo, x_hi), 0f64..top)
            .map_err(draw_error)?;
        let x_ticks = tick_format(&padded(x_lo, x_hi));
        chart
            .configure_mesh()
            .x_label_formatter(&x_ticks)
            .y_label_formatter(&integer_ticks)
            .x_desc(x_label)
            .y_desc("count")
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series(h.counts.iter().enumerate().map(|(b, &count)| {
                let (a, z) = h.edges(b);
                Rectangle::new([(a, 0.0), (z, count as f64)], colour(0).mix(0.55).filled())
            }))
            .map_err(draw_error)?;
        draw_vertical_markers(&mut chart, markers, top)
    })
}

fn draw_vertical_markers<'a, 'b: 'a>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Chart2d>,
    markers: &[Marker],
    top: f64,
) -> Result<()> {
    if markers.is_empty() {
        return Ok(());
    }
    for m in markers {
        let c = colour(m.colour);
        chart
            .draw_series(LineSeries::new(
                [(m.value, 0.0), (m.value, top)],
                c.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label(&m.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(chart, SeriesLabelPosition::UpperRight)
}

fn legend<'a, 'b: 'a>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Chart2d>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(draw_error)
}

/// A bar chart of labelled counts, one bar per label.
pub fn bars(title: &str, y_label: &str, bars: &[(String, f64)]) -> Result<String> {
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.15;
    // A segmented range 0..=last has one segment per bar.
    let n = bars.len().max(1) as u32;
    let last = n - 1;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d((0..last).into_segmented(), 0f64..top)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(n as usize)
            .x_label_formatter(&|v: &SegmentValue<u32>| match v {
                SegmentValue::CenterOf(i) => bars
                    .get(*i as usize)
                    .map(|b| b.0.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc(y_label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let i = i as u32;
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    colour(i as usize).mix(0.75).filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            }))
            .map_err(draw_error)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                Text::new(
                    super::figures::format_number(*v),
                    (SegmentValue::CenterOf(i as u32), *v + top * 0.03),
                    ("sans-serif", 13).into_font().color(&BLACK),
                )
            }))
            .map_err(draw_error)?;
        Ok(())
    })
}

/// Lines of `(x, y)` points, one per series, with a legend.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<String> {
    let points = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(72)
            .build_cartesian_2d(padded(x0, x1), padded(y0, y1))
            .map_err(draw_error)?;
        let (x_ticks, y_ticks) = (tick_format(&padded(x0, x1)), tick_format(&padded(y0, y1)));
        chart
            .configure_mesh()
            .x_label_formatter(&x_ticks)
            .y_label_formatter(&y_ticks)
            .x_desc(x_label)
            .y_desc(y_label)
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw_error)?;
        for (i, (name, points)) in series.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
                .map_err(draw_error)?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(draw_error)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// A point with its interval: x, the mean, and the interval's ends.
pub type IntervalPoint = (f64, f64, f64, f64);

/// Means with interval whiskers, one line per series (points joined in x order when `join`),
/// and a dashed horizontal reference line (`reference`: value and legend label). With
/// `integer_x` the x ticks are whole numbers only (arm numbers).
pub fn intervals(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<IntervalPoint>)],
    reference: Option<(f64, &str)>,
    join: bool,
) -> Result<String> {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, _, lo, hi) in series.iter().flat_map(|s| s.1.iter()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(lo);
        y1 = y1.max(hi);
    }
    if let Some((r, _)) = reference {
        y0 = y0.min(r);
        y1 = y1.max(r);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (xr, yr) = (padded(x0, x1), padded(y0, y1));
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(72)
            .build_cartesian_2d(xr.clone(), yr.clone())
            .map_err(draw_error)?;
        let y_ticks = tick_format(&yr);
        let x_ticks = tick_format(&xr);
        let integer_x = !join;
        chart
            .configure_mesh()
            .x_label_formatter(&|v: &f64| {
                if integer_x {
                    integer_ticks(v)
                } else {
                    x_ticks(v)
                }
            })
            .y_label_formatter(&y_ticks)
            .x_desc(x_label)
            .y_desc(y_label)
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw_error)?;
        if let Some((r, label)) = reference {
            let grey = RGBColor(90, 90, 90);
            chart
                .draw_series(DashedLineSeries::new(
                    [(xr.start, r), (xr.end, r)],
                    6,
                    4,
                    grey.stroke_width(1),
                ))
                .map_err(draw_error)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], grey.stroke_width(1))
                });
        }
        // A small horizontal offset per series keeps whiskers at the same x apart.
        let span = if x1 > x0 { x1 - x0 } else { 1.0 };
        let count = series.len().max(1) as f64;
        for (i, (name, points)) in series.iter().enumerate() {
            let c = colour(i);
            let shift = if join {
                0.0
            } else {
                (i as f64 - (count - 1.0) / 2.0) * span * 0.004
            };
            let mut sorted = points.clone();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            let line = if join { sorted.clone() } else { Vec::new() };
            chart
                .draw_series(LineSeries::new(
                    line.iter().map(|p| (p.0 + shift, p.1)),
                    c.stroke_width(2),
                ))
                .map_err(draw_error)?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
            // Whiskers: the interval as a vertical segment with caps a fraction of the span wide.
            let cap = span * 0.012;
            chart
                .draw_series(sorted.iter().flat_map(|&(x, _, lo, hi)| {
                    let x = x + shift;
                    [
                        PathElement::new([(x, lo), (x, hi)], c.stroke_width(1)),
                        PathElement::new([(x - cap, lo), (x + cap, lo)], c.stroke_width(1)),
                        PathElement::new([(x - cap, hi), (x + cap, hi)], c.stroke_width(1)),
                    ]
                }))
                .map_err(draw_error)?;
            chart
                .draw_series(
                    sorted
                        .iter()
                        .map(|&(x, mean, _, _)| Circle::new((x + shift, mean), 3, c.filled())),
                )
                .map_err(draw_error)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// One prompt's rewards in ascending order (x = position), horizontal lines at `levels`, and
/// the chosen and rejected responses circled.
pub fn sorted_rewards(
    title: &str,
    sorted: &[f64],
    levels: &[Marker],
    chosen: Option<f64>,
    rejected: Option<f64>,
) -> Result<String> {
    let lo = sorted
        .iter()
        .chain(levels.iter().map(|m| &m.value))
        .copied()
        .fold(f64::MAX, f64::min);
    let hi = sorted
        .iter()
        .chain(levels.iter().map(|m| &m.value))
        .copied()
        .fold(f64::MIN, f64::max);
    let n = sorted.len().max(1) as f64;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5..n + 0.5, padded(lo, hi))
            .map_err(draw_error)?;
        let y_ticks = tick_format(&padded(lo, hi));
        chart
            .configure_mesh()
            .x_label_formatter(&integer_ticks)
            .y_label_formatter(&y_ticks)
            .x_desc("response, by reward (ascending)")
            .y_desc("reward")
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series(
                sorted
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| Circle::new((i as f64 + 1.0, v), 4, BLACK.mix(0.6).filled())),
            )
            .map_err(draw_error)?
            .label("response")
            .legend(|(x, y)| Circle::new((x + 9, y), 4, BLACK.mix(0.6).filled()));
        for m in levels {
            let c = colour(m.colour);
            chart
                .draw_series(LineSeries::new(
                    [(0.5, m.value), (n + 0.5, m.value)],
                    c.stroke_width(2),
                ))
                .map_err(draw_error)?
                .label(&m.label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        for (value, label, c) in [
            (chosen, "chosen", colour(2)),
            (rejected, "rejected", colour(1)),
        ] {
            let Some(value) = value else { continue };
            let position = sorted
                .iter()
                .position(|&v| v == value)
                .map(|p| p as f64 + 1.0);
            let Some(x) = position else { continue };
            chart
                .draw_series([Circle::new((x, value), 9, c.stroke_width(3))])
                .map_err(draw_error)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 9, y), 6, c.stroke_width(3)));
        }
        // Ascending points leave the upper left empty.
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_svg_with_their_labels() {
        let h = Histogram::of(&[1.0, 2.0, 2.5, 4.0], 3).unwrap();
        let marker = Marker {
            value: 2.0,
            label: "μ".into(),
            colour: 1,
        };
        let text = histogram("rewards", "reward", &h, std::slice::from_ref(&marker)).unwrap();
        assert!(text.starts_with("<svg") && text.contains("rewards") && text.contains("μ"));
        assert!(text.matches("<rect").count() >= 3);
        let text = bars("skips", "prompts", &[("zero-std".into(), 2.0)]).unwrap();
        assert!(text.contains("zero-std"));
        let text = lines("loss", "step", "nats", &[("loss".into(), vec![(1.0, 0.7)])]).unwrap();
        assert!(text.contains("loss"));
        let text = sorted_rewards("p", &[1.0, 2.0, 3.0], &[marker], Some(3.0), Some(1.0)).unwrap();
        assert!(text.contains("chosen") && text.contains("rejected"));
    }
}
