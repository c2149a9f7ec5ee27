//! Distortion metrics: PSNR and MS-SSIM for images, SNR and segmental SNR for audio, per-frame PSNR
//! for video. Plain Rust on sample buffers (no Burn), so evaluation numbers do not depend on a backend.

/// Errors of the metrics.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum MetricError {
    /// The two signals do not have the same shape.
    #[error("shape mismatch: {0:?} vs {1:?}")]
    Shape(Vec<usize>, Vec<usize>),
    /// The image is too small for the metric.
    #[error("{what} needs at least {min} pixels per side, got {got}")]
    TooSmall {
        /// The metric.
        what: &'static str,
        /// Smallest side it needs.
        min: usize,
        /// Smallest side given.
        got: usize,
    },
}

/// Peak signal-to-noise ratio in dB of two 8-bit buffers of equal length (`+inf` when identical),
/// computed over all samples (CompressAI's `psnr-rgb` on an interleaved RGB image).
///
/// # Errors
/// [`MetricError::Shape`] if the lengths differ or are zero.
pub fn psnr_u8(a: &[u8], b: &[u8]) -> Result<f64, MetricError> {
    if a.len() != b.len() || a.is_empty() {
        return Err(MetricError::Shape(vec![a.len()], vec![b.len()]));
    }
    let se: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = i64::from(x) - i64::from(y);
            (d * d) as u64
        })
        .sum();
    let mse = se as f64 / a.len() as f64;
    Ok(10.0 * (255.0f64 * 255.0 / mse).log10())
}

/// The 5-scale weights of Wang, Simoncelli & Bovik (2003).
pub const MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
const WIN: usize = 11;
const SIGMA: f64 = 1.5;

fn gaussian_window() -> [f64; WIN] {
    let mut g = [0.0; WIN];
    let c = (WIN / 2) as f64;
    for (i, v) in g.iter_mut().enumerate() {
        let d = i as f64 - c;
        *v = (-(d * d) / (2.0 * SIGMA * SIGMA)).exp();
    }
    let s: f64 = g.iter().sum();
    g.iter_mut().for_each(|v| *v /= s);
    g
}

/// One channel plane in [0, 1].
#[derive(Clone)]
struct Plane {
    w: usize,
    h: usize,
    v: Vec<f64>,
}

impl Plane {
    /// Separable Gaussian filter, "valid" (no padding): (w − 10) × (h − 10).
    #[cfg(test)]
    fn blur(&self, g: &[f64; WIN]) -> Plane {
        let (w2, h2) = (self.w - (WIN - 1), self.h - (WIN - 1));
        let mut tmp = vec![0.0; w2 * self.h];
        for y in 0..self.h {
            let row = &self.v[y * self.w..(y + 1) * self.w];
            for x in 0..w2 {
                tmp[y * w2 + x] = (0..WIN).map(|k| g[k] * row[x + k]).sum();
            }
        }
        let mut out = vec![0.0; w2 * h2];
        for y in 0..h2 {
            for x in 0..w2 {
                out[y * w2 + x] = (0..WIN).map(|k| g[k] * tmp[(y + k) * w2 + x]).sum();
            }
        }
        Plane {
            w: w2,
            h: h2,
            v: out,
        }
    }

    #[cfg(test)]
    fn map2(&self, o: &Plane, f: impl Fn(f64, f64) -> f64) -> Plane {
        Plane {
            w: self.w,
            h: self.h,
            v: self.v.iter().zip(&o.v).map(|(&a, &b)| f(a, b)).collect(),
        }
    }

    /// 2×2 average pooling with zero padding of (h mod 2, w mod 2) counted in the average
    /// (PyTorch `avg_pool2d(kernel 2, padding = size % 2)`, as pytorch_msssim does).
    fn downsample(&self) -> Plane {
        let (pw, ph) = (self.w % 2, self.h % 2);
        let (w2, h2) = ((self.w + 2 * pw - 2) / 2 + 1, (self.h + 2 * ph - 2) / 2 + 1);
        let at = |x: isize, y: isize| -> f64 {
            if x < 0 || y < 0 || x >= self.w as isize || y >= self.h as isize {
                0.0
            } else {
                self.v[y as usize * self.w + x as usize]
            }
        };
        let mut v = Vec::with_capacity(w2 * h2);
        for y in 0..h2 {
            for x in 0..w2 {
                let (x0, y0) = (
                    (2 * x) as isize - pw as isize,
                    (2 * y) as isize - ph as isize,
                );
                v.push((at(x0, y0) + at(x0 + 1, y0) + at(x0, y0 + 1) + at(x0 + 1, y0 + 1)) / 4.0);
            }
        }
        Plane { w: w2, h: h2, v }
    }
}

/// (mean SSIM, mean contrast-structure) of two planes.
///
/// Streams over rows: the five blurred statistics (x, y, x², y², xy) are blurred horizontally one
/// input row at a time into a ring of the last [`WIN`] rows, and vertically one output row at a
/// time, so the memory beyond the planes is `5 × WIN` rows (an 8K plane would otherwise need nine
/// more planes of its size). The sums run in the same order as blurring whole planes
/// (`ssim_cs_planes`, the test reference), so the result is the same to the last bit.
fn ssim_cs(x: &Plane, y: &Plane, g: &[f64; WIN]) -> (f64, f64) {
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let (w, w2, h2) = (x.w, x.w - (WIN - 1), x.h - (WIN - 1));
    let mut ring = vec![0.0f64; 5 * WIN * w2];
    let (mut ssim, mut cs) = (0.0, 0.0);
    for r in 0..x.h {
        let (xr, yr) = (&x.v[r * w..(r + 1) * w], &y.v[r * w..(r + 1) * w]);
        let slot = r % WIN;
        for q in 0..5 {
            let row = &mut ring[(q * WIN + slot) * w2..(q * WIN + slot + 1) * w2];
            let at = |i: usize| match q {
                0 => xr[i],
                1 => yr[i],
                2 => xr[i] * xr[i],
                3 => yr[i] * yr[i],
                _ => xr[i] * yr[i],
            };
            for (i, v) in row.iter_mut().enumerate() {
                *v = (0..WIN).map(|k| g[k] * at(i + k)).sum();
            }
        }
        let Some(top) = (r + 1).checked_sub(WIN) else {
            continue;
        };
        for i in 0..w2 {
            let blur = |q: usize| -> f64 {
                (0..WIN)
                    .map(|k| g[k] * ring[(q * WIN + (top + k) % WIN) * w2 + i])
                    .sum()
            };
            let (m1, m2) = (blur(0), blur(1));
            let s1 = blur(2) - m1 * m1;
            let s2 = blur(3) - m2 * m2;
            let s12 = blur(4) - m1 * m2;
            let c = (2.0 * s12 + c2) / (s1 + s2 + c2);
            cs += c;
            ssim += (2.0 * m1 * m2 + c1) / (m1 * m1 + m2 * m2 + c1) * c;
        }
    }
    let n = (w2 * h2) as f64;
    (ssim / n, cs / n)
}

/// [`ssim_cs`] on whole planes (the definition, kept as the streaming version's reference).
#[cfg(test)]
fn ssim_cs_planes(x: &Plane, y: &Plane, g: &[f64; WIN]) -> (f64, f64) {
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let mu1 = x.blur(g);
    let mu2 = y.blur(g);
    let xx = x.map2(x, |a, b| a * b).blur(g);
    let yy = y.map2(y, |a, b| a * b).blur(g);
    let xy = x.map2(y, |a, b| a * b).blur(g);
    let n = mu1.v.len() as f64;
    let (mut ssim, mut cs) = (0.0, 0.0);
    for i in 0..mu1.v.len() {
        let (m1, m2) = (mu1.v[i], mu2.v[i]);
        let s1 = xx.v[i] - m1 * m1;
        let s2 = yy.v[i] - m2 * m2;
        let s12 = xy.v[i] - m1 * m2;
        let c = (2.0 * s12 + c2) / (s1 + s2 + c2);
        cs += c;
        ssim += (2.0 * m1 * m2 + c1) / (m1 * m1 + m2 * m2 + c1) * c;
    }
    (ssim / n, cs / n)
}

/// Multi-scale SSIM (5 scales, 11-tap Gaussian window σ = 1.5, K = (0.01, 0.03), data range 1) of two
/// interleaved 8-bit images with `channels` channels, averaged over channels: the definition of
/// pytorch_msssim's `ms_ssim(data_range=1)` that CompressAI reports as `ms-ssim-rgb`.
///
/// # Errors
/// [`MetricError::Shape`] for mismatched buffers, [`MetricError::TooSmall`] below 161 pixels per side.
pub fn ms_ssim_u8(
    a: &[u8],
    b: &[u8],
    width: usize,
    height: usize,
    channels: usize,
) -> Result<f64, MetricError> {
    let n = width * height * channels;
    if a.len() != n || b.len() != n || n == 0 {
        return Err(MetricError::Shape(vec![a.len(), b.len()], vec![n]));
    }
    let min = (WIN - 1) * 16 + 1;
    if width.min(height) < min {
        return Err(MetricError::TooSmall {
            what: "MS-SSIM",
            min,
            got: width.min(height),
        });
    }
    let g = gaussian_window();
    let plane = |buf: &[u8], c: usize| Plane {
        w: width,
        h: height,
        v: (0..width * height)
            .map(|i| f64::from(buf[i * channels + c]) / 255.0)
            .collect(),
    };
    let mut total = 0.0;
    for c in 0..channels {
        let (mut x, mut y) = (plane(a, c), plane(b, c));
        let mut value = 1.0;
        for (level, &w) in MS_SSIM_WEIGHTS.iter().enumerate() {
            let (ssim, cs) = ssim_cs(&x, &y, &g);
            if level + 1 < MS_SSIM_WEIGHTS.len() {
                value *= cs.max(0.0).powf(w);
                x = x.downsample();
                y = y.downsample();
            } else {
                value *= ssim.max(0.0).powf(w);
            }
        }
        total += value;
    }
    Ok(total / channels as f64)
}

/// MS-SSIM in dB, `−10 log10(1 − ms_ssim)`, as rate-distortion plots show it.
pub fn ms_ssim_db(v: f64) -> f64 {
    -10.0 * (1.0 - v).max(1e-12).log10()
}

/// Signal-to-noise ratio in dB, `10 log10(Σx² / Σ(x − y)²)` over all samples.
///
/// # Errors
/// [`MetricError::Shape`] if the lengths differ.
pub fn snr(x: &[f64], y: &[f64]) -> Result<f64, MetricError> {
    if x.len() != y.len() {
        return Err(MetricError::Shape(vec![x.len()], vec![y.len()]));
    }
    let s: f64 = x.iter().map(|v| v * v).sum();
    let e: f64 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
    Ok(10.0 * (s / e).log10())
}

/// Segmental SNR in dB: the mean over non-overlapping frames of `frame_len` interleaved samples of the
/// per-frame SNR (ε = 1e-10 in both sums), each clipped to [−10, 35] dB — the definition of the
/// shared audio anchors (20 ms frames: `frame_len = 0.02 · rate · channels`).
///
/// # Errors
/// [`MetricError::Shape`] if the lengths differ or `frame_len` is 0.
pub fn segmental_snr(x: &[f64], y: &[f64], frame_len: usize) -> Result<f64, MetricError> {
    if x.len() != y.len() || frame_len == 0 {
        return Err(MetricError::Shape(vec![x.len(), frame_len], vec![y.len()]));
    }
    let frames: Vec<f64> = x
        .chunks(frame_len)
        .zip(y.chunks(frame_len))
        .filter(|(a, _)| a.len() == frame_len)
        .map(|(a, b)| {
            let s: f64 = a.iter().map(|v| v * v).sum::<f64>() + 1e-10;
            let e: f64 = a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum::<f64>() + 1e-10;
            (10.0 * (s / e).log10()).clamp(-10.0, 35.0)
        })
        .collect();
    Ok(if frames.is_empty() {
        0.0
    } else {
        frames.iter().sum::<f64>() / frames.len() as f64
    })
}

/// PSNR of the luma (BT.601 Y from 8-bit RGB, full range) of two interleaved RGB frames.
///
/// # Errors
/// [`MetricError::Shape`] for mismatched buffers.
pub fn psnr_y_rgb8(a: &[u8], b: &[u8]) -> Result<f64, MetricError> {
    if a.len() != b.len() || a.is_empty() || !a.len().is_multiple_of(3) {
        return Err(MetricError::Shape(vec![a.len()], vec![b.len()]));
    }
    let y = |p: &[u8]| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
    let mse: f64 = a
        .chunks(3)
        .zip(b.chunks(3))
        .map(|(p, q)| (y(p) - y(q)).powi(2))
        .sum::<f64>()
        / (a.len() / 3) as f64;
    Ok(10.0 * (255.0f64 * 255.0 / mse).log10())
}

/// Per-frame PSNRs (RGB and Y) of two videos and their means over the sequence.
///
/// # Errors
/// [`MetricError::Shape`] if the frame counts or sizes differ.
pub fn video_psnr(a: &[Vec<u8>], b: &[Vec<u8>]) -> Result<VideoPsnr, MetricError> {
    if a.len() != b.len() || a.is_empty() {
        return Err(MetricError::Shape(vec![a.len()], vec![b.len()]));
    }
    let rgb = a
        .iter()
        .zip(b)
        .map(|(x, y)| psnr_u8(x, y))
        .collect::<Result<Vec<_>, _>>()?;
    let y = a
        .iter()
        .zip(b)
        .map(|(x, y)| psnr_y_rgb8(x, y))
        .collect::<Result<Vec<_>, _>>()?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(VideoPsnr {
        mean_rgb: mean(&rgb),
        mean_y: mean(&y),
        rgb,
        y,
    })
}

/// Video PSNR per frame and per sequence (mean of frames).
#[derive(Debug, Clone, PartialEq)]
pub struct VideoPsnr {
    /// RGB PSNR of each frame.
    pub rgb: Vec<f64>,
    /// Y PSNR of each frame.
    pub y: Vec<f64>,
    /// Mean RGB PSNR.
    pub mean_rgb: f64,
    /// Mean Y PSNR.
    pub mean_y: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_known_values() {
        assert_eq!(psnr_u8(&[10, 20], &[10, 20]).unwrap(), f64::INFINITY);
        // MSE 1 → 48.1308 dB.
        assert!((psnr_u8(&[0, 0], &[1, 1]).unwrap() - 48.130_803_608_679_1).abs() < 1e-9);
        assert!(psnr_u8(&[0], &[0, 1]).is_err());
    }

    #[test]
    fn streamed_ssim_is_the_whole_plane_definition_to_the_bit() {
        let (w, h) = (53, 37);
        let mut state = 12345u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            f64::from(state >> 8) / f64::from(1u32 << 24)
        };
        let x = Plane {
            w,
            h,
            v: (0..w * h).map(|_| next()).collect(),
        };
        let y = Plane {
            w,
            h,
            v: x.v.iter().map(|&v| (v + 0.2 * next()).min(1.0)).collect(),
        };
        let g = gaussian_window();
        let (a, b) = (ssim_cs(&x, &y, &g), ssim_cs_planes(&x, &y, &g));
        assert_eq!(a.0.to_bits(), b.0.to_bits(), "{a:?} {b:?}");
        assert_eq!(a.1.to_bits(), b.1.to_bits(), "{a:?} {b:?}");
        assert!(a.0 < 0.99 && a.0 > 0.0, "{a:?}");
    }

    #[test]
    fn ms_ssim_is_one_for_identical_and_drops_with_noise() {
        let (w, h) = (200, 170);
        let img: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        assert!((ms_ssim_u8(&img, &img, w, h, 3).unwrap() - 1.0).abs() < 1e-12);
        let noisy: Vec<u8> = img
            .iter()
            .enumerate()
            .map(|(i, &v)| v.saturating_add((i % 13) as u8 * 9))
            .collect();
        let v = ms_ssim_u8(&img, &noisy, w, h, 3).unwrap();
        assert!(v < 0.999 && v > 0.5, "{v}");
        assert!(ms_ssim_u8(&img[..150 * 150 * 3], &img[..150 * 150 * 3], 150, 150, 3).is_err());
    }

    #[test]
    fn snr_known_values() {
        let x = [1.0, -1.0, 1.0, -1.0];
        let y = [0.9, -0.9, 0.9, -0.9];
        assert!((snr(&x, &y).unwrap() - 20.0).abs() < 1e-9);
        assert!((segmental_snr(&x, &y, 2).unwrap() - 20.0).abs() < 1e-6);
        assert_eq!(segmental_snr(&x, &x, 2).unwrap(), 35.0);
    }
}
