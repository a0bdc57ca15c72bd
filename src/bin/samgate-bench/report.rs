//! The outputs: `results.csv`, `results.md` and two PNG plots (plotters,
//! bitmap backend, text rendered with the DejaVu Sans font embedded from
//! the `dejavu` crate, so no system fonts are needed).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// One line of the results.
#[derive(Debug, Clone)]
pub struct Row {
    /// `nginx`, `samgate-sqlite`, `samgate-postgres`.
    pub contender: String,
    /// `keep-alive max`, `rate 25%`, ..., `new TLS conn`.
    pub mode: String,
    /// Open-loop target rate.
    pub target_rps: Option<f64>,
    /// Connections (workers).
    pub conns: usize,
    /// 2xx answers per second.
    pub rps: f64,
    /// 2xx answers.
    pub ok: u64,
    /// Non-2xx answers, transport failures and unsent requests.
    pub errors: u64,
    /// Latency percentiles (ms): p50, p90, p99, p99.9, max.
    pub p: [f64; 5],
    /// CPU seconds of the proxy process(es) per 1,000 requests.
    pub cpu_per_1k: f64,
    /// Cores used by the proxy on average during the measurement.
    pub cores: f64,
    /// Open loop: p99 of the generator's timer lateness (ms).
    pub lag_p99: Option<f64>,
    /// samgate: audit check text (`ok`, or the mismatch).
    pub audit: String,
    /// samgate: mean audit records per group-commit batch.
    pub audit_batch: Option<f64>,
}

/// The five latency percentiles with `decimals` digits, joined by `sep`
/// (the same columns in the CSV and the Markdown table).
fn percentiles(p: &[f64; 5], decimals: usize, sep: &str) -> String {
    p.map(|v| format!("{v:.decimals$}")).join(sep)
}

/// Writes the CSV.
pub fn write_csv(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut s = String::from(
        "contender,mode,target_rps,connections,rps,ok,errors,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,cpu_s_per_1k,proxy_cores,generator_lag_p99_ms,audit_check,audit_records_per_batch\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{:.1},{},{},{},{:.4},{:.2},{},{},{}",
            r.contender,
            r.mode,
            r.target_rps.map(|t| format!("{t:.0}")).unwrap_or_default(),
            r.conns,
            r.rps,
            r.ok,
            r.errors,
            percentiles(&r.p, 3, ","),
            r.cpu_per_1k,
            r.cores,
            r.lag_p99.map(|t| format!("{t:.3}")).unwrap_or_default(),
            r.audit,
            r.audit_batch.map(|b| format!("{b:.2}")).unwrap_or_default(),
        );
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// The Markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| contender | mode | target req/s | conns | req/s (2xx) | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | CPU s / 1k req | proxy cores | audit check | records / batch |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {:.3} | {:.2} | {} | {} |",
            r.contender,
            r.mode,
            r.target_rps
                .map(|t| format!("{t:.0}"))
                .unwrap_or_else(|| "-".into()),
            r.conns,
            r.rps,
            r.errors,
            percentiles(&r.p, 2, " | "),
            r.cpu_per_1k,
            r.cores,
            r.audit,
            r.audit_batch
                .map_or_else(|| "-".to_owned(), |b| format!("{b:.1}")),
        );
    }
    s
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
];

fn color(i: usize) -> RGBColor {
    COLORS.get(i % COLORS.len()).copied().unwrap_or(BLACK)
}

/// Registers the embedded font once.
pub fn register_font() -> anyhow::Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow::anyhow!("the embedded DejaVu font did not load"))
}

/// Bars: keep-alive max throughput and new-connection throughput per
/// contender.
pub fn plot_throughput(path: &Path, rows: &[Row], contenders: &[String]) -> anyhow::Result<()> {
    let modes = ["keep-alive max", "new TLS conn"];
    let get = |c: &str, m: &str| {
        rows.iter()
            .find(|r| r.contender == c && r.mode == m)
            .map_or(0.0, |r| r.rps)
    };
    let top = contenders
        .iter()
        .flat_map(|c| modes.iter().map(move |m| (c, m)))
        .map(|(c, m)| get(c, m))
        .fold(1.0_f64, f64::max)
        * 1.15;
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let n = contenders.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput (2xx req/s), loopback, same 1 KB body",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n, 0.0..top)
        .map_err(plot_err)?;
    let names = contenders.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(contenders.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor();
            if (x - i - 0.5).abs() < 0.01 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("requests per second")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    for (mi, m) in modes.iter().enumerate() {
        let bars: Vec<_> = contenders
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                let x0 = ci as f64 + 0.1 + mi as f64 * 0.4;
                Rectangle::new([(x0, 0.0), (x0 + 0.38, get(c, m))], color(mi).filled())
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(plot_err)?
            .label(*m)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 14, y + 6)], color(mi).filled())
            });
    }
    for (ci, c) in contenders.iter().enumerate() {
        for (mi, m) in modes.iter().enumerate() {
            let v = get(c, m);
            let x = ci as f64 + 0.12 + mi as f64 * 0.4;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{v:.0}"),
                    (x, v + top * 0.01),
                    ("sans-serif", 14),
                )))
                .map_err(plot_err)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight, 15)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Latency percentiles at the open-loop rates: one panel per rate, one line
/// per contender, log scale.
pub fn plot_latency(
    path: &Path,
    rows: &[Row],
    contenders: &[String],
    rate_modes: &[String],
) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            "Latency percentiles at fixed rates (open loop, from intended send time)",
            ("sans-serif", 22),
        )
        .map_err(plot_err)?;
    let panels = body.split_evenly((1, rate_modes.len().max(1)));
    let max = rows
        .iter()
        .filter(|r| rate_modes.contains(&r.mode))
        .map(|r| r.p[3])
        .fold(1.0_f64, f64::max)
        * 1.5;
    let labels = ["p50", "p90", "p99", "p99.9"];
    for (panel, mode) in panels.iter().zip(rate_modes) {
        let mut chart = ChartBuilder::on(panel)
            .caption(mode.as_str(), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.3_f64..3.3, (0.05_f64..max).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_labels(4)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 {
                    labels
                        .get(i as usize)
                        .map(|s| (*s).to_owned())
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("ms (log)")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        for (ci, c) in contenders.iter().enumerate() {
            let Some(r) = rows.iter().find(|r| &r.contender == c && &r.mode == mode) else {
                continue;
            };
            let pts: Vec<(f64, f64)> = (0..4)
                .filter_map(|i| r.p.get(i).map(|v| (i as f64, v.max(0.05))))
                .collect();
            let col = color(ci);
            chart
                .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(plot_err)?
                .label(c.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, col.filled())))
                .map_err(plot_err)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight, 13)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The series legend, framed, at `position`.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font_size: u32,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", font_size))
        .position(position)
        .draw()
        .map_err(plot_err)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e:?}")
}
