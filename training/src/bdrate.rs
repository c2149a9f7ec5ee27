//! Bjøntegaard delta rate and delta PSNR between two rate-distortion curves.
//!
//! Two interpolations are offered: [`Interp::Pchip`], the piecewise cubic (monotone Hermite,
//! Fritsch–Carlson derivatives as in SciPy's `PchipInterpolator`) used by the JVET common test
//! conditions, and [`Interp::Polynomial`], the cubic least-squares fit of VCEG-M33. Rates enter as
//! `ln(rate)`; integrals are exact over the overlapping interval.

/// Errors of the Bjøntegaard computation.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum BdError {
    /// A curve has too few points (4 for the cubic fit, 2 for PCHIP) or non-finite / non-positive values.
    #[error("{0}")]
    BadCurve(String),
    /// The curves do not overlap.
    #[error("the curves do not overlap in {0}")]
    NoOverlap(&'static str),
}

/// Interpolation of a curve between its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// Piecewise cubic Hermite (monotone), JVET style.
    Pchip,
    /// Cubic polynomial fit, VCEG-M33.
    Polynomial,
}

/// One Bjøntegaard comparison of a test curve against an anchor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BdResult {
    /// Average rate difference in percent at equal quality (negative = the test curve saves rate).
    pub rate_percent: f64,
    /// Average quality difference in dB at equal rate (positive = the test curve is better).
    pub psnr_db: f64,
    /// Overlapping quality interval (dB) used for the rate difference.
    pub quality_overlap: (f64, f64),
    /// Fraction of the narrower curve's quality range that overlaps (warn below 0.5).
    pub overlap_fraction: f64,
}

fn sorted(x: &[f64], y: &[f64]) -> Result<(Vec<f64>, Vec<f64>), BdError> {
    if x.len() != y.len() || x.iter().chain(y).any(|v| !v.is_finite()) {
        return Err(BdError::BadCurve(
            "curve with unequal lengths or non-finite values".into(),
        ));
    }
    let mut p: Vec<(f64, f64)> = x.iter().copied().zip(y.iter().copied()).collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    p.dedup_by(|a, b| a.0 == b.0);
    Ok(p.into_iter().unzip())
}

/// A 1-D interpolant with an exact integral.
enum Curve {
    Pchip {
        x: Vec<f64>,
        y: Vec<f64>,
        d: Vec<f64>,
    },
    Poly([f64; 4]),
}

fn pchip_slopes(x: &[f64], y: &[f64]) -> Vec<f64> {
    let n = x.len();
    let h: Vec<f64> = x.windows(2).map(|w| w[1] - w[0]).collect();
    let m: Vec<f64> = (0..n - 1).map(|k| (y[k + 1] - y[k]) / h[k]).collect();
    if n == 2 {
        return vec![m[0], m[0]];
    }
    let mut d = vec![0.0; n];
    for k in 1..n - 1 {
        if m[k - 1] * m[k] > 0.0 {
            let w1 = 2.0 * h[k] + h[k - 1];
            let w2 = h[k] + 2.0 * h[k - 1];
            d[k] = (w1 + w2) / (w1 / m[k - 1] + w2 / m[k]);
        }
    }
    let edge = |h0: f64, h1: f64, m0: f64, m1: f64| {
        let d = ((2.0 * h0 + h1) * m0 - h0 * m1) / (h0 + h1);
        if d.signum() != m0.signum() || m0 == 0.0 {
            0.0
        } else if m0.signum() != m1.signum() && d.abs() > 3.0 * m0.abs() {
            3.0 * m0
        } else {
            d
        }
    };
    d[0] = edge(h[0], h[1], m[0], m[1]);
    d[n - 1] = edge(h[n - 2], h[n - 3], m[n - 2], m[n - 3]);
    d
}

/// Least-squares cubic fit (normal equations solved in f64 with partial pivoting), coefficients c0..c3.
fn polyfit3(x: &[f64], y: &[f64]) -> [f64; 4] {
    let mut a = [[0.0f64; 5]; 4];
    for (&xi, &yi) in x.iter().zip(y) {
        let p = [1.0, xi, xi * xi, xi * xi * xi];
        for r in 0..4 {
            for c in 0..4 {
                a[r][c] += p[r] * p[c];
            }
            a[r][4] += p[r] * yi;
        }
    }
    for col in 0..4 {
        let piv = (col..4)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        let pivot = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col && pivot[col] != 0.0 {
                let f = row[col] / pivot[col];
                for (x, p) in row.iter_mut().zip(pivot).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let mut c = [0.0; 4];
    for i in 0..4 {
        c[i] = a[i][4] / a[i][i];
    }
    c
}

impl Curve {
    fn new(x: &[f64], y: &[f64], interp: Interp) -> Result<Self, BdError> {
        let (x, y) = sorted(x, y)?;
        match interp {
            Interp::Pchip if x.len() >= 2 => {
                let d = pchip_slopes(&x, &y);
                Ok(Self::Pchip { x, y, d })
            }
            Interp::Polynomial if x.len() >= 4 => Ok(Self::Poly(polyfit3(&x, &y))),
            _ => Err(BdError::BadCurve(format!(
                "{} distinct points are too few for {interp:?}",
                x.len()
            ))),
        }
    }

    /// ∫ from a to b (a <= b inside the data range).
    fn integral(&self, a: f64, b: f64) -> f64 {
        match self {
            Self::Poly(c) => {
                let f = |t: f64| {
                    c[0] * t + c[1] * t * t / 2.0 + c[2] * t.powi(3) / 3.0 + c[3] * t.powi(4) / 4.0
                };
                f(b) - f(a)
            }
            Self::Pchip { x, y, d } => {
                let mut total = 0.0;
                for k in 0..x.len() - 1 {
                    let (lo, hi) = (x[k].max(a), x[k + 1].min(b));
                    if hi <= lo {
                        continue;
                    }
                    let h = x[k + 1] - x[k];
                    let m = (y[k + 1] - y[k]) / h;
                    let c2 = (3.0 * m - 2.0 * d[k] - d[k + 1]) / h;
                    let c3 = (d[k] + d[k + 1] - 2.0 * m) / (h * h);
                    let f = |t: f64| {
                        y[k] * t + d[k] * t * t / 2.0 + c2 * t.powi(3) / 3.0 + c3 * t.powi(4) / 4.0
                    };
                    total += f(hi - x[k]) - f(lo - x[k]);
                }
                total
            }
        }
    }
}

/// Bjøntegaard delta of `test` against `anchor`, each given as (rates, PSNRs) with rates > 0 in any
/// unit (bpp, kbps).
///
/// # Errors
/// [`BdError`] for curves with too few or invalid points, or without overlap.
pub fn bd(
    anchor: (&[f64], &[f64]),
    test: (&[f64], &[f64]),
    interp: Interp,
) -> Result<BdResult, BdError> {
    let log = |r: &[f64]| -> Result<Vec<f64>, BdError> {
        r.iter()
            .map(|&v| {
                if v > 0.0 {
                    Ok(v.ln())
                } else {
                    Err(BdError::BadCurve(format!("rate {v} is not positive")))
                }
            })
            .collect()
    };
    let (ra, qa) = (log(anchor.0)?, anchor.1);
    let (rt, qt) = (log(test.0)?, test.1);
    let range = |v: &[f64]| {
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    // Rate difference: log-rate as a function of quality.
    let (qa_lo, qa_hi) = range(qa);
    let (qt_lo, qt_hi) = range(qt);
    let (q_lo, q_hi) = (qa_lo.max(qt_lo), qa_hi.min(qt_hi));
    if q_hi <= q_lo {
        return Err(BdError::NoOverlap("quality"));
    }
    let int_a = Curve::new(qa, &ra, interp)?.integral(q_lo, q_hi);
    let int_t = Curve::new(qt, &rt, interp)?.integral(q_lo, q_hi);
    let rate_percent = (((int_t - int_a) / (q_hi - q_lo)).exp() - 1.0) * 100.0;
    // Quality difference: quality as a function of log-rate.
    let (ra_lo, ra_hi) = range(&ra);
    let (rt_lo, rt_hi) = range(&rt);
    let (r_lo, r_hi) = (ra_lo.max(rt_lo), ra_hi.min(rt_hi));
    let psnr_db = if r_hi > r_lo {
        let a = Curve::new(&ra, qa, interp)?.integral(r_lo, r_hi);
        let t = Curve::new(&rt, qt, interp)?.integral(r_lo, r_hi);
        (t - a) / (r_hi - r_lo)
    } else {
        f64::NAN
    };
    let narrower = (qa_hi - qa_lo).min(qt_hi - qt_lo);
    Ok(BdResult {
        rate_percent,
        psnr_db,
        quality_overlap: (q_lo, q_hi),
        overlap_fraction: if narrower > 0.0 {
            (q_hi - q_lo) / narrower
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_curves_have_zero_delta() {
        let r = [0.1, 0.2, 0.4, 0.8, 1.6];
        let q = [28.0, 30.5, 33.0, 35.6, 38.0];
        for interp in [Interp::Pchip, Interp::Polynomial] {
            let b = bd((&r, &q), (&r, &q), interp).unwrap();
            assert!(
                b.rate_percent.abs() < 1e-9 && b.psnr_db.abs() < 1e-9,
                "{b:?}"
            );
        }
    }

    #[test]
    fn half_the_rate_everywhere_is_minus_fifty_percent() {
        let r = [0.1, 0.2, 0.4, 0.8, 1.6];
        let q = [28.0, 30.5, 33.0, 35.6, 38.0];
        let half: Vec<f64> = r.iter().map(|v| v / 2.0).collect();
        for interp in [Interp::Pchip, Interp::Polynomial] {
            let b = bd((&r, &q), (&half, &q), interp).unwrap();
            assert!((b.rate_percent + 50.0).abs() < 1e-9, "{interp:?}: {b:?}");
            assert!(b.psnr_db > 0.0);
        }
    }

    #[test]
    fn pchip_integral_of_a_line_is_exact() {
        let c = Curve::new(&[0.0, 1.0, 3.0], &[0.0, 2.0, 6.0], Interp::Pchip).unwrap();
        assert!((c.integral(0.5, 2.5) - (2.5f64.powi(2) - 0.25)).abs() < 1e-12);
    }

    #[test]
    fn disjoint_curves_are_an_error() {
        let r = [0.1, 0.2, 0.4, 0.8];
        assert_eq!(
            bd(
                (&r, &[20.0, 21.0, 22.0, 23.0]),
                (&r, &[30.0, 31.0, 32.0, 33.0]),
                Interp::Pchip
            )
            .unwrap_err(),
            BdError::NoOverlap("quality")
        );
    }
}
