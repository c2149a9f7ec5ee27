//! Calibrating a trained hyperprior's scale indices on real images: runs the codec on whole
//! photos at a spread of qualities and fits the [`ScaleMap`] that the weights file then carries
//! (see [`ncodec_codecs::hyperprior::calibrate`]).

use std::path::{Path, PathBuf};

use image::RgbImage;
use ncodec_bitstream::entropy::ans::cost_bits;
use ncodec_codecs::hyperprior::calibrate::{
    Calibration, ContextCalibration, ScaleMap, TableFamily, Z_SCALE_MAX, ZCalibration,
};
use ncodec_codecs::hyperprior::predict::PredictionStats;
use ncodec_codecs::hyperprior::{HyperpriorCodec, z_tables_model};

use crate::data::load_rgb;

/// Qualities calibrated by default: the low end below level 1 and every ladder level.
pub const DEFAULT_QUALITIES: [f32; 10] = [0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];

/// What a calibration measured on its own images.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationReport {
    /// Images used.
    pub images: usize,
    /// Coded `y` symbols seen (all qualities).
    pub symbols: u64,
    /// Bits of those symbols with the network's own indices and no latent prediction.
    pub bits_before: f64,
    /// Bits with the network's own indices and the fitted latent prediction (equal to
    /// `bits_before` without `predict`).
    pub bits_predicted: f64,
    /// Bits with the fitted per-channel map (of the chosen family).
    pub bits_mapped: f64,
    /// Bits with the per-channel map fitted for Gaussian tables, and for Laplace tables.
    pub bits_by_family: [f64; 2],
    /// Bits with the map and its context table (equal to `bits_mapped` without `context`).
    pub bits_after: f64,
    /// Bits of the `ẑ` symbols (all qualities) under the bottleneck's own tables.
    pub z_bits_before: f64,
    /// Bits of the same symbols under the calibrated `ẑ` tables (equal to `z_bits_before` without
    /// `z_tables`).
    pub z_bits_after: f64,
    /// With `screen_context`: the candidate third context features, measured.
    pub screened: Vec<ScreenedFeature>,
    /// With `screen_context`: the bits (in-sample) of the context table's symbols with a free
    /// histogram per (cell, mapped index), a bound on what any table shape could gain.
    pub free_slot_bits: Option<f64>,
    /// With `screen_context`: the bits (in-sample) with the better of Gaussian and Laplace tables
    /// chosen per cell of the context table.
    pub family_per_cell_bits: Option<f64>,
}

/// One candidate third context feature measured by two-fold cross-validation over the calibration
/// photos (even and odd images): each fold's table is fitted on its own symbols and costed on the
/// other's. Finer cells always fit their own symbols better; only `held_out` tells whether they
/// generalize.
#[derive(Debug, Clone, PartialEq)]
pub struct ScreenedFeature {
    /// Its name (see `ncodec calibrate --screen-context`).
    pub name: &'static str,
    /// Bits of all `y` symbols, each fold coded with the table fitted on the other.
    pub held_out: f64,
    /// Bits of all `y` symbols, each fold coded with its own table.
    pub in_sample: f64,
}

/// What a calibration fits besides the per-channel map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrateOptions {
    /// The latent predictor (see [`ncodec_codecs::hyperprior::predict`]).
    pub predict: bool,
    /// The context table.
    pub context: bool,
    /// The context table's third feature (see `ScaleMap::context_depth`).
    pub context_depth: bool,
    /// Its bins split by the far channels (see `ScaleMap::context_far`; needs `context_depth`).
    pub context_far: bool,
    /// Per quality bucket and channel, the scale of the `ẑ` tables
    /// ([`ncodec_codecs::hyperprior::calibrate::ZCalibration`]).
    pub z_tables: bool,
    /// Also measure candidate third context features ([`ScreenedFeature`]; a development tool:
    /// the table written is unchanged, and memory grows by about 7 GB at the default size).
    pub screen_context: bool,
}

/// Every `len / n`-th of `len` items (all of them if `n >= len`), spread evenly.
pub fn spread(len: usize, n: usize) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    (0..n).map(|k| k * len / n).collect()
}

/// The centre `side × side` of `img` (all of it if smaller).
fn centre(img: RgbImage, side: u32) -> RgbImage {
    if img.width() <= side && img.height() <= side {
        return img;
    }
    let (w, h) = (img.width().min(side), img.height().min(side));
    image::imageops::crop_imm(&img, (img.width() - w) / 2, (img.height() - h) / 2, w, h).to_image()
}

/// Fits the scale map of `codec` (its own map is ignored) on `paths`, each image cut to its
/// centre `max_side × max_side`, coded at every quality of `qualities`: with `predict`, first the
/// latent predictor (least squares at the qualities up to 4), then the per-channel map for
/// Gaussian and for Laplace tables on the symbols that predictor leaves (the family of fewer bits
/// is kept), then, with `context`, the context table in a last pass over the same latents.
/// `tick` is called after each image of the first pass with the file and, for an unreadable one,
/// why it was skipped.
///
/// # Errors
/// A message if no image could be used or the codec fails.
pub fn calibrate_hyperprior(
    codec: &HyperpriorCodec,
    paths: &[PathBuf],
    qualities: &[f32],
    max_side: u32,
    options: CalibrateOptions,
    tick: &dyn Fn(&Path, Option<&str>),
) -> Result<(ScaleMap, CalibrationReport), String> {
    let m = codec.config().m;
    let levels = codec.y_model().scales().len();
    let low: Vec<f32> = qualities.iter().copied().filter(|&q| q <= 4.0).collect();
    let predict_at = if low.is_empty() { qualities } else { &low };
    let mut prediction = PredictionStats::new(m);
    let mut latents = Vec::new();
    for path in paths {
        let img = match load_rgb(path) {
            Ok(img) => centre(img, max_side),
            Err(e) => {
                tick(path, Some(&e));
                continue;
            }
        };
        let y = codec.analysis(&img).map_err(|e| e.to_string())?;
        if options.predict {
            for &q in predict_at {
                codec
                    .add_to_prediction(&y, q, &mut prediction)
                    .map_err(|e| e.to_string())?;
            }
        }
        latents.push(y);
        tick(path, None);
    }
    if latents.is_empty() {
        return Err("no image could be read for the calibration".into());
    }
    let predictor = options.predict.then(|| prediction.fit());
    let mut stats = Calibration::new(m, levels);
    let mut plain = Calibration::new(m, levels);
    for y in &latents {
        for &q in qualities {
            // The statistics without the predictor only measure what it saves (same h_s pass).
            let mut pairs = vec![(predictor.as_ref(), &mut stats)];
            if predictor.is_some() {
                pairs.push((None, &mut plain));
            }
            codec
                .add_to_calibrations(y, q, &mut pairs)
                .map_err(|e| e.to_string())?;
        }
    }
    let gaussian = TableFamily::Gaussian.model();
    let identity = ScaleMap::identity(m, levels);
    let bits_predicted = stats.bits(&identity, &gaussian);
    let bits_before = if predictor.is_some() {
        plain.bits(&identity, &gaussian)
    } else {
        bits_predicted
    };
    let fits: Vec<(TableFamily, ScaleMap, f64)> = [TableFamily::Gaussian, TableFamily::Laplace]
        .into_iter()
        .map(|family| {
            let model = family.model();
            let mut map = stats.fit(&model);
            map.predict.clone_from(&predictor);
            let bits = stats.bits(&map, &model);
            (family, map, bits)
        })
        .collect();
    let bits_by_family = [fits[0].2, fits[1].2];
    let (family, map, bits_mapped) = fits
        .into_iter()
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .ok_or("no family")?;
    let y_model = family.model();
    let y_model = &y_model;
    let mut screened = Vec::new();
    let mut bounds = None;
    let (map, bits_after) = if options.context {
        let mut second =
            ContextCalibration::new(m, levels, options.context_depth, options.context_far);
        let candidates = if options.screen_context {
            screen::candidates()
        } else {
            Vec::new()
        };
        // Two folds per candidate: even and odd images.
        let mut folds: Vec<[ContextCalibration; 2]> = candidates
            .iter()
            .map(|&(_, f)| {
                [
                    ContextCalibration::with_feature(m, levels, f),
                    ContextCalibration::with_feature(m, levels, f),
                ]
            })
            .collect();
        for (n, y) in latents.iter().enumerate() {
            for &q in qualities {
                let mut all: Vec<&mut ContextCalibration> = vec![&mut second];
                all.extend(folds.iter_mut().map(|f| &mut f[n % 2]));
                codec
                    .add_to_context_calibrations(y, q, &map, &mut all)
                    .map_err(|e| e.to_string())?;
            }
        }
        screened = candidates
            .iter()
            .zip(&folds)
            .map(|(&(name, _), [a, b])| ScreenedFeature {
                name,
                held_out: a.cross_bits(b, y_model) + b.cross_bits(a, y_model),
                in_sample: a.cross_bits(a, y_model) + b.cross_bits(b, y_model),
            })
            .collect();
        if options.screen_context {
            let (g, l) = (TableFamily::Gaussian.model(), TableFamily::Laplace.model());
            bounds = Some(second.diagnose(&[&g, &l]));
        }
        let with = second.fit(&map, y_model);
        let bits = second.bits(&with, y_model);
        (with, bits)
    } else {
        (map, bits_mapped)
    };
    // The ẑ tables: symbols per quality bucket, each (bucket, channel) scaled to its least bits.
    let mut z_stats = ZCalibration::new(codec.config().n);
    for y in &latents {
        for &q in qualities {
            codec
                .add_to_z_calibration(y, q, &mut z_stats)
                .map_err(|e| e.to_string())?;
        }
    }
    let candidates = codec.z_candidates().map_err(|e| e.to_string())?;
    let z_bits = |k: i8, c: usize, v: i32| -> f64 {
        candidates[(i32::from(k) + i32::from(Z_SCALE_MAX)) as usize]
            .table(c)
            .and_then(|t| cost_bits(t, v))
            .unwrap_or(64.0)
    };
    let z_bits_before = z_stats.bits(&[], &z_bits);
    let mut map = map;
    let mut z_bits_after = z_bits_before;
    if options.z_tables {
        let scales = z_stats.fit(&z_bits);
        let tables = z_stats.tables(&scales, &|k, c, v| (-z_bits(k, c, v)).exp2());
        // One model holding every bucket's tables, indexed by cell.
        let model = z_tables_model(&tables).map_err(|e| e.to_string())?;
        z_bits_after = z_stats.table_bits(&|cell, v| {
            model
                .table(cell)
                .and_then(|t| cost_bits(t, v))
                .unwrap_or(64.0)
        });
        map.z_tables = tables;
    }
    let report = CalibrationReport {
        images: latents.len(),
        symbols: stats.symbols(),
        bits_before,
        bits_predicted,
        bits_mapped,
        bits_by_family,
        bits_after,
        z_bits_before,
        z_bits_after,
        screened,
        free_slot_bits: bounds.map(|b| b.0),
        family_per_cell_bits: bounds.map(|b| b.1),
    };
    Ok((map, report))
}

/// Candidate third context features for `--screen-context`. Each is a drop-in for the shipped third
/// feature (`ncodec_codecs::hyperprior::calibrate::context_depth_bin`), most of them that feature split further:
/// - `two`: none (the two-feature table);
/// - `depth`: the shipped one (magnitudes of the 8 channels before, at the position; 5 bins);
/// - `depth+g8`: and channel groups of 8 instead of 16;
/// - `depth+low4`: and the magnitudes of channels 0–3 at the position (4 bins);
/// - `depth+wide`: and the up-left, up-right, left-left and up-up neighbours in the channel;
/// - `depth+phase`: and whether the position is on the edge of its 4×4 cell of `ẑ`;
/// - `depth+far16`: and the magnitudes of the 16 channels before those 8, at the position.
mod screen {
    use ncodec_codecs::hyperprior::calibrate::{ThirdFeature, context_depth_bin};
    fn bin4(f: u64) -> usize {
        [1u64, 2, 4].iter().filter(|&&e| e <= f).count()
    }

    fn none(_: &[i32], _: usize, _: usize, _: usize, _: usize, _: usize) -> usize {
        0
    }

    fn depth(s: &[i32], c: usize, i: usize, j: usize, h: usize, w: usize) -> usize {
        context_depth_bin(s, c, i, j, h, w)
    }

    fn depth_g8(s: &[i32], c: usize, i: usize, j: usize, h: usize, w: usize) -> usize {
        depth(s, c, i, j, h, w) * 2 + (c / 8) % 2
    }

    fn depth_low4(s: &[i32], c: usize, i: usize, j: usize, h: usize, w: usize) -> usize {
        let at = i * w + j;
        let low: u64 = (0..c.min(4))
            .map(|k| u64::from(s[k * h * w + at].unsigned_abs()))
            .sum();
        depth(s, c, i, j, h, w) * 4 + bin4(low)
    }

    fn depth_wide(s: &[i32], c: usize, i: usize, j: usize, h: usize, w: usize) -> usize {
        let base = c * h * w;
        let mag = |ii: usize, jj: usize| u64::from(s[base + ii * w + jj].unsigned_abs());
        let mut f = 0;
        if i > 0 && j > 0 {
            f += mag(i - 1, j - 1);
        }
        if i > 0 && j + 1 < w {
            f += mag(i - 1, j + 1);
        }
        if j > 1 {
            f += mag(i, j - 2);
        }
        if i > 1 {
            f += mag(i - 2, j);
        }
        depth(s, c, i, j, h, w) * 4 + bin4(f)
    }

    fn depth_phase(s: &[i32], c: usize, i: usize, j: usize, h: usize, w: usize) -> usize {
        let edge = |x: usize| usize::from(x.is_multiple_of(4) || x % 4 == 3);
        depth(s, c, i, j, h, w) * 4 + edge(i) * 2 + edge(j)
    }

    fn depth_far16(s: &[i32], c: usize, i: usize, j: usize, h: usize, w: usize) -> usize {
        let at = i * w + j;
        let far: u64 = (c.saturating_sub(24)..c.saturating_sub(8))
            .map(|k| u64::from(s[k * h * w + at].unsigned_abs()))
            .sum();
        depth(s, c, i, j, h, w) * 4 + bin4(far)
    }

    pub(super) fn candidates() -> Vec<(&'static str, ThirdFeature)> {
        vec![
            ("two", (1, none)),
            ("depth", (5, depth)),
            ("depth+g8", (10, depth_g8)),
            ("depth+low4", (20, depth_low4)),
            ("depth+wide", (20, depth_wide)),
            ("depth+phase", (20, depth_phase)),
            ("depth+far16", (20, depth_far16)),
        ]
    }
}
