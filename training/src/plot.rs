//! Rate-distortion plots (PNG): bpp–PSNR and bpp–MS-SSIM (dB) side by side, one line per curve.

use std::path::Path;

use plotters::prelude::*;

use crate::metrics::ms_ssim_db;
use crate::rd::RdCurve;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Errors of plotting.
#[derive(Debug, thiserror::Error)]
#[error("plotting {path}: {message}")]
pub struct PlotError {
    path: String,
    message: String,
}

/// Options of a plot.
#[derive(Debug, Clone)]
pub struct PlotOptions {
    /// Title above both panels.
    pub title: String,
    /// Logarithmic rate axis.
    pub log_rate: bool,
    /// Image size in pixels.
    pub size: (u32, u32),
}

impl Default for PlotOptions {
    fn default() -> Self {
        Self {
            title: "Rate-distortion".into(),
            log_rate: false,
            size: (1500, 640),
        }
    }
}

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

type Series = (String, Vec<(f64, f64)>);

fn bounds(series: &[Series], log: bool) -> ((f64, f64), (f64, f64)) {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let (dx, dy) = ((x1 - x0).max(1e-3), (y1 - y0).max(1e-3));
    let xpad = if log { 0.05 * dx } else { 0.03 * dx };
    ((x0 - xpad, x1 + xpad), (y0 - 0.05 * dy, y1 + 0.05 * dy))
}

/// How a panel labels its axes.
struct Axes<'a> {
    x_desc: &'a str,
    y_desc: &'a str,
    x_label: &'a dyn Fn(&f64) -> String,
    y_digits: usize,
    /// Mark each point with a dot (RD curves) or not (training logs).
    dots: bool,
    legend: SeriesLabelPosition,
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    caption: &str,
    axes: &Axes<'_>,
    log: bool,
) -> Result<(), String> {
    let ((x0, x1), (y0, y1)) = bounds(series, log);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    let digits = axes.y_digits;
    chart
        .configure_mesh()
        .x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .x_label_formatter(axes.x_label)
        .y_label_formatter(&|v| format!("{v:.digits$}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
            });
        if axes.dots {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
    }
    chart
        .configure_series_labels()
        .position(axes.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())
}

/// The axes of a rate-distortion panel.
fn rd_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    caption: &str,
    y_desc: &str,
    log: bool,
    unit: &str,
) -> Result<(), String> {
    let fmt_x = |v: &f64| {
        let r = if log { 10f64.powf(*v) } else { *v };
        if r < 0.1 {
            format!("{r:.3}")
        } else {
            format!("{r:.2}")
        }
    };
    let x_desc = if log {
        format!("{unit} (log scale)")
    } else {
        unit.to_string()
    };
    let axes = Axes {
        x_desc: &x_desc,
        y_desc,
        x_label: &fmt_x,
        y_digits: 1,
        dots: true,
        legend: SeriesLabelPosition::LowerRight,
    };
    panel(area, series, caption, &axes, log)
}

/// Draws the curves into a PNG at `path`. Curves without an MS-SSIM series appear only in the PSNR
/// panel. Audio curves (`kbps`, `snr`, `segsnr`) get kbps–SNR and kbps–segmental SNR panels.
///
/// # Errors
/// [`PlotError`] if no curve has rate and PSNR, or the PNG cannot be written.
pub fn plot_rd(curves: &[RdCurve], path: &Path, opts: &PlotOptions) -> Result<(), PlotError> {
    let err = |message: String| PlotError {
        path: path.display().to_string(),
        message,
    };
    // The font is compiled in: plots need no system font libraries.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let x = |r: f64| {
        if opts.log_rate {
            r.max(1e-6).log10()
        } else {
            r
        }
    };
    let audio = curves
        .iter()
        .all(|c| c.series("bpp").is_none() && c.series("kbps").is_some());
    let mut psnr: Vec<Series> = Vec::new();
    let mut msssim: Vec<Series> = Vec::new();
    for c in curves {
        let Ok((rate, q)) = c.rate_psnr() else {
            continue;
        };
        let mut pts: Vec<(f64, f64)> = rate.iter().zip(&q).map(|(&r, &q)| (x(r), q)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        psnr.push((c.name.clone(), pts));
        let second = if audio {
            c.series("segsnr")
        } else {
            c.series("ms-ssim-rgb")
                .map(|m| m.into_iter().map(ms_ssim_db).collect())
        };
        if let Some(m) = second.filter(|m| m.len() == rate.len()) {
            let mut pts: Vec<(f64, f64)> = rate.iter().zip(&m).map(|(&r, &m)| (x(r), m)).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            msssim.push((c.name.clone(), pts));
        }
    }
    if psnr.is_empty() {
        return Err(err("no curve has both 'bpp' and 'psnr-rgb'".into()));
    }
    let root = BitMapBackend::new(path, opts.size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root
        .titled(&opts.title, ("sans-serif", 28))
        .map_err(|e| err(e.to_string()))?;
    let (left, right) = root.split_horizontally(opts.size.0 / 2);
    let (unit, first, second) = if audio {
        (
            "kbps",
            ("SNR", "SNR [dB]"),
            ("segmental SNR", "segmental SNR [dB]"),
        )
    } else {
        (
            "bits per pixel",
            ("PSNR", "PSNR-RGB [dB]"),
            ("MS-SSIM", "MS-SSIM-RGB [dB]"),
        )
    };
    rd_panel(&left, &psnr, first.0, first.1, opts.log_rate, unit).map_err(err)?;
    if msssim.is_empty() {
        right
            .draw_text(
                "no MS-SSIM series",
                &("sans-serif", 20).into_text_style(&right),
                (40, 40),
            )
            .map_err(|e| err(e.to_string()))?;
    } else {
        rd_panel(&right, &msssim, second.0, second.1, opts.log_rate, unit).map_err(err)?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

fn step_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    caption: &str,
    y_desc: &str,
) -> Result<(), String> {
    let axes = Axes {
        x_desc: "step",
        y_desc,
        x_label: &|v| format!("{v:.0}"),
        y_digits: 2,
        dots: false,
        legend: SeriesLabelPosition::UpperRight,
    };
    panel(area, series, caption, &axes, false)
}

/// Draws `loss.png` in a training run folder: the training loss (moving average of 100 steps) and
/// the validation PSNR and bpp of each quality, from `train.csv` and `val.csv`.
///
/// # Errors
/// [`PlotError`] if the logs cannot be read or the PNG cannot be written.
pub fn plot_training(run: &Path) -> Result<(), PlotError> {
    let path = run.join("loss.png");
    let err = |message: String| PlotError {
        path: path.display().to_string(),
        message,
    };
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let rows = |name: &str| -> Vec<Vec<f64>> {
        std::fs::read_to_string(run.join(name))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').map(|v| v.parse().ok()).collect())
            .collect()
    };
    let train = rows("train.csv");
    let mut loss = Vec::new();
    let mut window = std::collections::VecDeque::new();
    let mut sum = 0.0;
    for r in &train {
        if r.len() < 2 || !r[1].is_finite() {
            continue;
        }
        window.push_back(r[1]);
        sum += r[1];
        if window.len() > 100 {
            sum -= window.pop_front().unwrap_or(0.0);
        }
        loss.push((r[0], sum / window.len() as f64));
    }
    if loss.is_empty() {
        return Err(err("train.csv has no rows".into()));
    }
    let mut val: Vec<Series> = Vec::new();
    let mut val_bpp: Vec<Series> = Vec::new();
    for r in rows("val.csv") {
        if r.len() < 4 {
            continue;
        }
        let name = format!("q{}", r[1]);
        match val.iter_mut().position(|s| s.0 == name) {
            Some(i) => {
                val[i].1.push((r[0], r[3]));
                val_bpp[i].1.push((r[0], r[2]));
            }
            None => {
                val.push((name.clone(), vec![(r[0], r[3])]));
                val_bpp.push((name, vec![(r[0], r[2])]));
            }
        }
    }
    let size = (1800, 560);
    let root = BitMapBackend::new(&path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let areas = root.split_evenly((1, 3));
    step_panel(
        &areas[0],
        &[("λ·255²·MSE + bpp".to_string(), loss)],
        "Training loss (mean of 100 steps)",
        "loss",
    )
    .map_err(err)?;
    if !val.is_empty() {
        step_panel(&areas[1], &val, "Validation PSNR", "PSNR-RGB [dB]").map_err(err)?;
        step_panel(&areas[2], &val_bpp, "Validation rate", "bits per pixel").map_err(err)?;
    }
    root.present().map_err(|e| err(e.to_string()))
}
