//! The PNG chart: one group of horizontal bars per workload (and durability class, for
//! writing workloads), one bar per comparison (target ÷ reference within the class, log
//! scale, 1 = as fast as the reference).
//!
//! Text is drawn with plotters' ab_glyph backend from a TTF file read at run time
//! (DejaVu Sans by default), so no fontconfig is needed; without a font the chart is
//! skipped with a message.

use crate::report::{Class, Record};
use crate::targets::Role;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const COLORS: &[RGBColor] = &[
    RGBColor(230, 126, 34),
    RGBColor(41, 128, 185),
    RGBColor(39, 174, 96),
];

/// Register a TTF as "sans-serif"; returns the path used.
fn load_font(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => FONTS.iter().map(PathBuf::from).collect(),
    };
    for p in candidates {
        if let Ok(bytes) = std::fs::read(&p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{}: not a usable TTF", p.display()))?;
            return Ok(p);
        }
    }
    Err(format!(
        "no TTF font found (tried {}; pass --font)",
        FONTS.join(", ")
    ))
}

/// The comparisons drawn, as roles, and their legend.
const BARS: &[(Role, Role, &str)] = &[
    (
        Role::FuseOverlayfs2,
        Role::Kernel,
        "fuse-overlayfs 2.0 ÷ kernel",
    ),
    (Role::Unionmount, Role::Kernel, "unionmount ÷ kernel"),
    (
        Role::Unionmount,
        Role::FuseOverlayfs2,
        "unionmount ÷ fuse-overlayfs 2.0",
    ),
    (Role::Unionmount, Role::Baseline, "unionmount ÷ baseline"),
];

/// Draw `rec`'s ratios to `out`: one row per workload and section (writing workloads
/// have a durable and a volatile row), the comparisons taken within the row's section.
pub fn draw(rec: &Record, out: &Path, font: Option<&Path>) -> Result<(), String> {
    load_font(font)?;
    let mut rows: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    for class in Class::ALL {
        for id in rec.section_workloads(class) {
            let bars = BARS
                .iter()
                .map(|&(a, b, _)| {
                    let (a, b) = (rec.member(class, a)?, rec.member(class, b)?);
                    rec.ratio(id, &a.id, &b.id)
                })
                .collect::<Vec<_>>();
            let label = match class {
                Class::Reads => id.to_string(),
                c => format!("{id} ({})", c.short()),
            };
            rows.push((label, bars));
        }
    }
    let used: Vec<usize> = (0..BARS.len())
        .filter(|&c| rows.iter().any(|r| r.1[c].is_some()))
        .collect();
    if used.is_empty() {
        return Err("no ratios to draw (one target per section)".into());
    }
    let rows: Vec<(String, Vec<Option<f64>>)> = rows
        .into_iter()
        .map(|(l, v)| (l, used.iter().map(|&c| v[c]).collect::<Vec<_>>()))
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .collect();
    let cols: Vec<&str> = used.iter().map(|&c| BARS[c].2).collect();
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.1.iter().flatten().copied())
        .filter(|x| *x > 0.0)
        .collect();
    let lo = all.iter().copied().fold(1.0f64, f64::min) / 1.6;
    let hi = all.iter().copied().fold(1.0f64, f64::max) * 3.0;
    let n = rows.len();
    let height = 120 + 40 * n as u32;
    draw_inner(out, height, lo, hi, &rows, &cols, rec)
        .map_err(|e| format!("drawing {}: {e}", out.display()))
}

fn draw_inner(
    out: &Path,
    height: u32,
    lo: f64,
    hi: f64,
    rows: &[(String, Vec<Option<f64>>)],
    cols: &[&str],
    rec: &Record,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = rows.len();
    let root = BitMapBackend::new(out, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "unionmount-bench: median ratio within a durability class (log scale, <1 = faster) — {} scale, {} cores",
        rec.scale.name, rec.machine.cores
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(150)
        .build_cartesian_2d((lo..hi).log_scale(), -0.5f64..(n as f64 - 0.5))?;
    chart
        .configure_mesh()
        .y_labels(n + 1)
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() > 1e-6 || i < 0.0 || i as usize >= n {
                return String::new();
            }
            rows[n - 1 - i as usize].0.clone()
        })
        .x_label_formatter(&|x| format!("{x}x"))
        .x_desc("ratio")
        .disable_y_mesh()
        .label_style(("sans-serif", 14))
        .draw()?;
    let k = cols.len() as f64;
    for (c, label) in cols.iter().enumerate() {
        let color = COLORS[c % COLORS.len()];
        let bars: Vec<(f64, f64)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.1[c].map(|v| (v, (n - 1 - i) as f64 + 0.4 - (c as f64 + 1.0) * 0.8 / k))
            })
            .collect();
        let h = 0.8 / k;
        chart
            .draw_series(bars.iter().map(|&(v, y0)| {
                Rectangle::new([(lo, y0 + 0.05 * h), (v, y0 + 0.95 * h)], color.filled())
            }))?
            .label(label.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart.draw_series(bars.iter().map(|&(v, y0)| {
            Text::new(
                format!(" {v:.2}x"),
                (v, y0 + 0.8 * h),
                ("sans-serif", 12).into_font(),
            )
        }))?;
    }
    chart.draw_series(LineSeries::new(
        [(1.0, -0.5), (1.0, n as f64 - 0.5)],
        BLACK.stroke_width(1),
    ))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}
