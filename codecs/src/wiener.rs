//! Adaptive restoration filter: a Wiener filter fitted by the encoder to each image and sent in
//! the file, applied by the decoder to the decoded pixels (in the spirit of the adaptive loop
//! filter of VVC, Tsai et al. 2013, here after the picture rather than in a prediction loop).
//!
//! The decoder sorts every pixel of the decoded image into one of up to 7 × 3 classes by the local
//! activity and direction of its luminance (sums of 1-D Laplacians over a 5 × 5 window), and each
//! colour channel of each class gets its own 27-tap linear filter: the 24 neighbours of a diamond of
//! radius 3, the two other colour channels at the same pixel (all as differences to the pixel
//! itself) and a constant. Coefficients are integers in 1/128, applied in integer arithmetic, so the
//! filter gives the same pixels on every machine. The encoder fits each (channel, class) filter by
//! least squares against the original, sends it only where it pays in `λ·SSE/3 + bits`, and picks
//! how finely to split the classes; the file says which.
//!
//! Two codings of the coefficients exist. The first ([`Filter::to_bytes`], stream label 2) sends
//! all 27 of every filter. The compact one ([`Filter::to_compact_bytes`], label 3, what the encoder
//! writes) sends point-symmetric filters (each neighbour shares its coefficient with its mirror
//! image: 15 values) as differences to the previous filter of the channel or the same class's filter
//! of the previous colour, in steps of 1/128 to 8/128 chosen per filter by rate and distortion: on 8
//! held-out training photos the filter's bytes fell by 45–55 % at the same PSNR.
//!
//! A second, **clipped** stage may follow ([`fit_clipped`], [`Filter::to_clipped_bytes`], stream
//! label 4): the same kind of filter fitted to the first stage's output, with each neighbour
//! difference clamped to `±clip` (2, 4 or 8), which makes it a nonlinear smoother that removes
//! small ripples without blurring edges. On 8 held-out training photos (never Kodak) it gained
//! 0.03–0.05 dB at equal rate at q0.5–4, about 1 % of the rate.
//!
//! Both stages also run on a **fixed-point** picture ([`Fixed`], [`Filter::apply_fixed`]): the
//! hyperprior's fine path (stream labels 5 and 6) keeps the synthesis at 1/16 of a level until
//! the last stage and rounds to 8 bits once, where the 8-bit path rounds after the synthesis and
//! after each stage (each rounding adds about 1/12 of a squared level of error: 0.05–0.1 dB at
//! 41 dB). Every quantity in pixel levels (activity thresholds, clip, the constant feature, the
//! output range) scales with the precision; the coefficients do not.
//!
//! Why: the hyperprior's transforms are short-trained and close to a 16×16 block coder, and what
//! they leave (blocking, ringing, lost contrast in texture) differs from image to image. On 8
//! held-out training photos (never Kodak) the filter took 8.7 % off the BD-rate of the hyperprior;
//! with its dead-zone rounding, 11.4 % on Kodak (`assets/README.md`). `docs/BITSTREAM.md` §7,
//! "Restoration filter", is the normative description.

use image::RgbImage;
use ncodec_bitstream::BitstreamError;

use crate::linalg::cholesky_solve;

/// Radius of the diamond of neighbours (`|dy| + |dx| ≤ RADIUS`).
const RADIUS: i32 = 3;
/// Filter taps: 24 neighbours, 2 other channels, 1 constant.
pub const TAPS: usize = 27;
/// Fraction bits of the coefficients.
pub const FRAC_BITS: u32 = 7;
/// Largest coefficient magnitude a file may hold.
pub const MAX_COEF: i32 = 1 << 14;
/// Activity thresholds: mean |1-D Laplacian| of `(R + G + B)/3` per pixel and direction, summed
/// over both directions (class `a` = the number of thresholds the activity reaches).
const ACTIVITY: [u32; 6] = [2, 5, 10, 20, 40, 80];
/// Most activity classes.
pub const MAX_ACTIVITY_CLASSES: u8 = 7;
/// Largest Exp-Golomb order of a coefficient list.
const MAX_ORDER: u32 = 7;
/// Longest run of leading zeros a valid Exp-Golomb code has (values ≤ 2·MAX_COEF + 2^MAX_ORDER).
const MAX_ZEROS: u32 = 16;
/// Pixels sampled by the fit at most (rows are skipped evenly above it).
const FIT_SAMPLES: usize = 1 << 21;
/// Bits a stream costs in the container beyond its payload (label, kind, length, checksum).
const STREAM_OVERHEAD_BITS: f64 = 80.0;
/// Coefficients of a point-symmetric filter: 12 mirrored neighbour pairs (the diamond's first 12
/// offsets in row-major order with their mirror images `23 − k`), the 2 other channels, 1 constant.
pub const SYM_TAPS: usize = 15;
/// Neighbour pairs of a symmetric filter.
const PAIRS: usize = (TAPS - 3) / 2;
/// Reference a compactly coded filter is predicted from: none, the last filter sent for the same
/// channel, or the same class's filter of the previous channel.
const REF_NONE: u32 = 0;
const REF_PREVIOUS_CLASS: u32 = 1;
const REF_PREVIOUS_CHANNEL: u32 = 2;
/// Largest shift of a compactly coded filter's differences (steps of 1/128 … 8/128).
const MAX_SHIFT: u32 = 3;

/// Neighbour offsets `(dy, dx)` of the diamond without its centre, row-major.
fn offsets() -> impl Iterator<Item = (i32, i32)> {
    (-RADIUS..=RADIUS)
        .flat_map(|dy| (-RADIUS..=RADIUS).map(move |dx| (dy, dx)))
        .filter(|&(dy, dx)| (dy, dx) != (0, 0) && dy.abs() + dx.abs() <= RADIUS)
}

/// How finely pixels are classed: `activity` classes (1..=7, the first `activity − 1` thresholds)
/// times `directions` (1, or 3: neither, horizontal, vertical).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classing {
    /// Activity classes (1..=7).
    pub activity: u8,
    /// Direction classes (1 or 3).
    pub directions: u8,
}

impl Classing {
    /// Number of classes.
    pub fn classes(self) -> usize {
        usize::from(self.activity) * usize::from(self.directions)
    }

    /// The class of a pixel of finest class `fine` (`activity·3 + direction`).
    fn class(self, fine: u8) -> usize {
        let (a, d) = (fine / 3, fine % 3);
        let a = usize::from(a.min(self.activity - 1));
        if self.directions == 3 {
            a * 3 + usize::from(d)
        } else {
            a
        }
    }

    fn is_valid(self) -> bool {
        (1..=MAX_ACTIVITY_CLASSES).contains(&self.activity) && matches!(self.directions, 1 | 3)
    }
}

/// The finest classing; every [`Classing`] merges its classes.
const FINEST: Classing = Classing {
    activity: MAX_ACTIVITY_CLASSES,
    directions: 3,
};
/// The classings the encoder tries.
const CANDIDATES: [Classing; 5] = [
    FINEST,
    Classing {
        activity: 7,
        directions: 1,
    },
    Classing {
        activity: 4,
        directions: 1,
    },
    Classing {
        activity: 2,
        directions: 1,
    },
    Classing {
        activity: 1,
        directions: 1,
    },
];

/// A restoration filter: a classing and, per colour channel and class, the coefficients (`None`:
/// that class of that channel is left as decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// How pixels are classed.
    pub classing: Classing,
    /// `[channel][class]` coefficients in 1/128 (`TAPS` each).
    pub coefs: [Vec<Option<[i32; TAPS]>>; 3],
    /// The largest neighbour difference the filter sees (each is clamped to `±clip`; 0: none).
    /// Only the second, clipped stage ([`CLIPS`]) has one; the first stage's codings cannot.
    pub clip: u8,
}

/// Clip values the encoder tries for the second, clipped filter stage. A filter of clamped
/// neighbour differences is a nonlinear smoother (in the spirit of VVC's nonlinear ALF): it
/// averages away the small ripples that ringing and quantization noise leave without blurring
/// the edges, which a linear filter cannot tell apart. On 8 held-out training photos (never
/// Kodak), one such filter per colour after the linear one saved 0.05 dB at q4 and 0.08 dB at
/// q1 (in-sample least squares with clip 4; 0.01 dB unclipped).
pub const CLIPS: [u8; 3] = [2, 4, 8];

/// A sample of a picture the filter reads and writes: 8-bit, or 16-bit fixed point ([`Fixed`]).
trait Sample: Copy {
    fn get(self) -> i32;
    /// `v`, already clamped to the picture's range.
    fn put(v: i64) -> Self;
}

impl Sample for u8 {
    fn get(self) -> i32 {
        i32::from(self)
    }
    fn put(v: i64) -> Self {
        v as u8
    }
}

impl Sample for u16 {
    fn get(self) -> i32 {
        i32::from(self)
    }
    fn put(v: i64) -> Self {
        v as u16
    }
}

/// The finest class (`activity·3 + direction`) of every pixel of `img`, row-major.
pub fn classes(img: &RgbImage) -> Vec<u8> {
    classes_raw(img.as_raw(), img.width() as usize, img.height() as usize, 0)
}

/// [`classes`] of a fixed-point picture: the activity thresholds scale with its precision.
pub fn classes_of(pic: &Fixed) -> Vec<u8> {
    let (raw, w, h, shift) = pic.raw();
    classes_raw(raw, w, h, shift)
}

/// [`classes`] of interleaved RGB samples in units of `2^−shift` of a level.
fn classes_raw<S: Sample>(raw: &[S], w: usize, h: usize, shift: u32) -> Vec<u8> {
    if w == 0 || h == 0 {
        return Vec::new();
    }
    let luma = |y: usize, x: usize| -> i32 {
        let i = (y * w + x) * 3;
        raw[i].get() + raw[i + 1].get() + raw[i + 2].get()
    };
    // Row sums over 5 columns of the vertical and horizontal Laplacians (each ≤ 5·1530·2^shift),
    // for the 5 rows around the current one (row `r` in slot `r % 5`, computed once).
    let mut slots: Vec<(usize, Vec<u32>, Vec<u32>)> = (0..5)
        .map(|_| (usize::MAX, vec![0; w], vec![0; w]))
        .collect();
    let (mut gv, mut gh) = (vec![0u32; w], vec![0u32; w]);
    let mut row = |y: usize, slot: &mut (usize, Vec<u32>, Vec<u32>)| {
        let (up, down) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for x in 0..w {
            let (left, right) = (x.saturating_sub(1), (x + 1).min(w - 1));
            let c = 2 * luma(y, x);
            gv[x] = (c - luma(up, x) - luma(down, x)).unsigned_abs();
            gh[x] = (c - luma(y, left) - luma(y, right)).unsigned_abs();
        }
        for x in 0..w {
            let (mut sv, mut sh) = (0u32, 0u32);
            for dx in -2i64..=2 {
                let xx = (x as i64 + dx).clamp(0, w as i64 - 1) as usize;
                sv += gv[xx];
                sh += gh[xx];
            }
            slot.1[x] = sv;
            slot.2[x] = sh;
        }
        slot.0 = y;
    };
    let mut out = vec![0u8; w * h];
    let mut rows = [0usize; 5];
    for y in 0..h {
        for (k, dy) in (-2i64..=2).enumerate() {
            let yy = (y as i64 + dy).clamp(0, h as i64 - 1) as usize;
            if slots[yy % 5].0 != yy {
                row(yy, &mut slots[yy % 5]);
            }
            rows[k] = yy % 5;
        }
        for x in 0..w {
            let (mut sv, mut sh) = (0u64, 0u64);
            for &r in &rows {
                sv += u64::from(slots[r].1[x]);
                sh += u64::from(slots[r].2[x]);
            }
            // Thresholds are per pixel of (R+G+B)/3: the sums cover 25 pixels of R+G+B.
            let a = sv + sh;
            let act = ACTIVITY
                .iter()
                .filter(|&&t| a >= u64::from(t * 75) << shift)
                .count() as u8;
            let dir = if sh > 2 * sv {
                1
            } else if sv > 2 * sh {
                2
            } else {
                0
            };
            out[y * w + x] = act * 3 + dir;
        }
    }
    out
}

/// The features of channel `c` at `(y, x)`: neighbours and the other channels minus the pixel,
/// then 1 (positions outside the image read the nearest edge pixel).
/// Neighbour differences are clamped to `±clip` (`0`: not clamped), the constant is `one`
/// (both in the picture's units: `2^shift` per 8-bit level).
#[allow(clippy::too_many_arguments)]
fn features<S: Sample>(
    raw: &[S],
    w: usize,
    h: usize,
    y: usize,
    x: usize,
    c: usize,
    (clip, one): (i32, i32),
    f: &mut [i32; TAPS],
) {
    let at = |yy: i64, xx: i64, cc: usize| -> i32 {
        let yy = yy.clamp(0, h as i64 - 1) as usize;
        let xx = xx.clamp(0, w as i64 - 1) as usize;
        raw[(yy * w + xx) * 3 + cc].get()
    };
    let centre = raw[(y * w + x) * 3 + c].get();
    for (k, (dy, dx)) in offsets().enumerate() {
        f[k] = at(y as i64 + i64::from(dy), x as i64 + i64::from(dx), c) - centre;
    }
    if clip > 0 {
        for v in &mut f[..TAPS - 3] {
            *v = (*v).clamp(-clip, clip);
        }
    }
    let p = (y * w + x) * 3;
    f[24] = raw[p + (c + 1) % 3].get() - centre;
    f[25] = raw[p + (c + 2) % 3].get() - centre;
    f[26] = one;
}

/// A picture in fixed point: interleaved RGB rows, each sample in units of `2^−shift` of an 8-bit
/// level (`0 ..= 255·2^shift`). The hyperprior's fine filter path ([`FINE_SHIFT`]) keeps the
/// synthesis at 1/16 of a level until the last filter has run, so that only one rounding to 8 bits
/// is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    width: usize,
    height: usize,
    shift: u32,
    data: Vec<u16>,
}

/// Fraction bits of the fine restoration filter path (stream labels 5 and 6).
pub const FINE_SHIFT: u32 = 4;
/// Most fraction bits a [`Fixed`] picture may have (`255·2^8` still fits 16 bits).
pub const MAX_SHIFT_BITS: u32 = 8;

impl Fixed {
    /// A `width × height` picture of `3·width·height` samples with `shift` fraction bits, each at
    /// most `255·2^shift`; `None` for another length, a shift above [`MAX_SHIFT_BITS`] or a sample
    /// out of range.
    pub fn new(width: usize, height: usize, shift: u32, data: Vec<u16>) -> Option<Self> {
        let ok = shift <= MAX_SHIFT_BITS
            && width.checked_mul(height).and_then(|n| n.checked_mul(3)) == Some(data.len())
            && data.iter().all(|&v| u32::from(v) <= 255 << shift);
        ok.then_some(Self {
            width,
            height,
            shift,
            data,
        })
    }

    /// An 8-bit picture as it is (shift 0).
    pub fn from_rgb(img: &RgbImage) -> Self {
        Self {
            width: img.width() as usize,
            height: img.height() as usize,
            shift: 0,
            data: img.as_raw().iter().map(|&v| u16::from(v)).collect(),
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Fraction bits of every sample.
    pub fn shift(&self) -> u32 {
        self.shift
    }

    /// The samples, interleaved RGB rows.
    pub fn data(&self) -> &[u16] {
        &self.data
    }

    /// The samples, given up.
    pub fn into_data(self) -> Vec<u16> {
        self.data
    }

    /// The samples with the width, height and fraction bits, as the kernels take them.
    fn raw(&self) -> Raw<'_, u16> {
        (&self.data, self.width, self.height, self.shift)
    }

    /// Rounded to 8 bits (halves up).
    pub fn to_rgb(&self) -> RgbImage {
        let half = (1u32 << self.shift) >> 1;
        let data = self
            .data
            .iter()
            .map(|&v| ((u32::from(v) + half) >> self.shift).min(255) as u8)
            .collect();
        RgbImage::from_raw(self.width as u32, self.height as u32, data)
            .unwrap_or_else(|| RgbImage::new(self.width as u32, self.height as u32))
    }
}

impl Filter {
    /// `img` filtered (the decoder's step). Pixels of classes without coefficients are unchanged.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        let mut out = img.clone();
        let (w, h) = (img.width() as usize, img.height() as usize);
        self.apply_raw(img.as_raw(), (w, h, 0), out.as_mut());
        out
    }

    /// [`Self::apply`] to a fixed-point picture, in its precision: the clip value and the constant
    /// feature are scaled by `2^shift`, the output clamped to `0 ..= 255·2^shift`.
    pub fn apply_fixed(&self, pic: &Fixed) -> Fixed {
        let mut out = pic.clone();
        self.apply_raw(&pic.data, (pic.width, pic.height, pic.shift), &mut out.data);
        out
    }

    /// The filter of `raw` (`w × h`, `shift` fraction bits) written into `out` (a copy of `raw`).
    fn apply_raw<S: Sample>(&self, raw: &[S], (w, h, shift): (usize, usize, u32), out: &mut [S]) {
        let fine = classes_raw(raw, w, h, shift);
        let units = (i32::from(self.clip) << shift, 1 << shift);
        let max = 255i64 << shift;
        let mut f = [0i32; TAPS];
        for y in 0..h {
            for x in 0..w {
                let class = self.classing.class(fine[y * w + x]);
                for c in 0..3 {
                    let Some(coefs) = &self.coefs[c][class] else {
                        continue;
                    };
                    features(raw, w, h, y, x, c, units, &mut f);
                    let acc: i64 = coefs
                        .iter()
                        .zip(&f)
                        .map(|(&a, &b)| i64::from(a) * i64::from(b))
                        .sum();
                    let delta = (acc + (1 << (FRAC_BITS - 1))) >> FRAC_BITS;
                    let p = (y * w + x) * 3 + c;
                    out[p] = S::put((i64::from(raw[p].get()) + delta).clamp(0, max));
                }
            }
        }
    }

    /// The stream payload: bytes `activity`, `directions`, then bits (most significant first; the
    /// last byte padded with zeros): per channel and class a flag, and with it the Exp-Golomb order
    /// (3 bits) and the 27 coefficients (signed Exp-Golomb).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bits = BitWriter::default();
        for channel in &self.coefs {
            for class in channel {
                match class {
                    None => bits.put(0, 1),
                    Some(coefs) => {
                        bits.put(1, 1);
                        let order = best_order(coefs);
                        bits.put(order, 3);
                        for &v in coefs {
                            bits.put_exp_golomb(zigzag(v), order);
                        }
                    }
                }
            }
        }
        let mut out = vec![self.classing.activity, self.classing.directions];
        out.extend(bits.finish());
        out
    }

    /// Parses a stream payload. Never panics: anything malformed is [`BitstreamError::Corrupt`].
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] for a payload no encoder writes.
    pub fn from_bytes(data: &[u8]) -> Result<Self, BitstreamError> {
        let (classing, rest) = header(data)?;
        let mut bits = BitReader::new(rest);
        let mut coefs: [Vec<Option<[i32; TAPS]>>; 3] = Default::default();
        for channel in &mut coefs {
            for _ in 0..classing.classes() {
                let on = bits.get(1).ok_or_else(|| corrupt("truncated"))?;
                if on == 0 {
                    channel.push(None);
                    continue;
                }
                let order = bits.get(3).ok_or_else(|| corrupt("truncated"))?;
                let mut c = [0i32; TAPS];
                for v in &mut c {
                    let u = bits
                        .get_exp_golomb(order)
                        .ok_or_else(|| corrupt("bad coefficient code"))?;
                    *v = unzigzag(u).ok_or_else(|| corrupt("coefficient out of range"))?;
                }
                channel.push(Some(c));
            }
        }
        if !bits.only_zero_padding_left() {
            return Err(corrupt("bytes after the last coefficient"));
        }
        Ok(Filter {
            classing,
            coefs,
            clip: 0,
        })
    }

    /// The filter of `(channel, class)` folded to its [`SYM_TAPS`] symmetric coefficients, or
    /// `None` if it is not point-symmetric.
    fn symmetric(coefs: &[i32; TAPS]) -> Option<[i32; SYM_TAPS]> {
        let mut s = [0i32; SYM_TAPS];
        for k in 0..PAIRS {
            if coefs[k] != coefs[TAPS - 4 - k] {
                return None;
            }
            s[k] = coefs[k];
        }
        s[PAIRS..].copy_from_slice(&coefs[TAPS - 3..]);
        Some(s)
    }

    /// The compact payload (stream label 3): bytes `activity`, `directions`, then bits as in
    /// [`Self::to_bytes`], but each filter sent is point-symmetric and coded as its
    /// [`SYM_TAPS`] differences to a reference filter (2 bits: none, the last filter sent for the same
    /// channel, the same class's filter of the previous channel) after its Exp-Golomb order. `None`
    /// if a filter is not point-symmetric (what [`fit`] makes always is), holds a coefficient
    /// beyond ±[`MAX_COEF`], or the lists do not match the classing.
    pub fn to_compact_bytes(&self) -> Option<Vec<u8>> {
        if self.clip != 0 {
            return None;
        }
        self.compact_payload()
    }

    /// The payload of a clipped second-stage filter (stream label 4): its clip value (one of
    /// [`CLIPS`]) in one byte, then the compact coding of [`Self::to_compact_bytes`]. `None` as
    /// there, or if the clip value is not one of [`CLIPS`].
    pub fn to_clipped_bytes(&self) -> Option<Vec<u8>> {
        if !CLIPS.contains(&self.clip) {
            return None;
        }
        let mut out = vec![self.clip];
        out.extend(self.compact_payload()?);
        Some(out)
    }

    /// Parses [`Self::to_clipped_bytes`].
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] for an empty payload, a clip value outside [`CLIPS`], or a
    /// compact coding that [`Self::from_compact_bytes`] refuses.
    pub fn from_clipped_bytes(data: &[u8]) -> Result<Self, BitstreamError> {
        let Some((&clip, rest)) = data.split_first() else {
            return Err(corrupt("empty clipped restoration filter"));
        };
        if !CLIPS.contains(&clip) {
            return Err(corrupt("restoration filter clip value"));
        }
        Ok(Filter {
            clip,
            ..Self::from_compact_bytes(rest)?
        })
    }

    fn compact_payload(&self) -> Option<Vec<u8>> {
        if !self.classing.is_valid()
            || self
                .coefs
                .iter()
                .any(|c| c.len() != self.classing.classes())
        {
            return None;
        }
        let mut bits = BitWriter::default();
        let mut sent: [Vec<Option<[i32; SYM_TAPS]>>; 3] = Default::default();
        for c in 0..3 {
            let mut last: Option<[i32; SYM_TAPS]> = None;
            for (k, class) in self.coefs[c].iter().enumerate() {
                let Some(coefs) = class else {
                    bits.put(0, 1);
                    sent[c].push(None);
                    continue;
                };
                let sym = Self::symmetric(coefs)?;
                if sym.iter().any(|v| !(-MAX_COEF..=MAX_COEF).contains(v)) {
                    return None;
                }
                let above = if c > 0 {
                    sent[c - 1].get(k).copied().flatten()
                } else {
                    None
                };
                let (mode, shift, order, _) = compact_code(&sym, last.as_ref(), above.as_ref());
                let reference = match mode {
                    REF_PREVIOUS_CLASS => last,
                    REF_PREVIOUS_CHANNEL => above,
                    _ => None,
                }
                .unwrap_or([0; SYM_TAPS]);
                bits.put(1, 1);
                bits.put(mode, 2);
                bits.put(shift, 2);
                bits.put(order, 3);
                for (&v, &r) in sym.iter().zip(&reference) {
                    bits.put_exp_golomb(zigzag((v - r) >> shift), order);
                }
                last = Some(sym);
                sent[c].push(Some(sym));
            }
        }
        let mut out = vec![self.classing.activity, self.classing.directions];
        out.extend(bits.finish());
        Some(out)
    }

    /// Parses a compact payload ([`Self::to_compact_bytes`]). Never panics.
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] for a payload no encoder writes (including a reference to a
    /// filter that was not sent, and coefficients beyond the range of [`Self::from_bytes`]).
    pub fn from_compact_bytes(data: &[u8]) -> Result<Self, BitstreamError> {
        let (classing, rest) = header(data)?;
        let mut bits = BitReader::new(rest);
        let mut coefs: [Vec<Option<[i32; TAPS]>>; 3] = Default::default();
        let mut sent: [Vec<Option<[i32; SYM_TAPS]>>; 3] = Default::default();
        for c in 0..3 {
            let mut last: Option<[i32; SYM_TAPS]> = None;
            for k in 0..classing.classes() {
                let on = bits.get(1).ok_or_else(|| corrupt("truncated"))?;
                if on == 0 {
                    coefs[c].push(None);
                    sent[c].push(None);
                    continue;
                }
                let mode = bits.get(2).ok_or_else(|| corrupt("truncated"))?;
                let reference = match mode {
                    REF_NONE => [0; SYM_TAPS],
                    REF_PREVIOUS_CLASS => last.ok_or_else(|| corrupt("no previous filter"))?,
                    REF_PREVIOUS_CHANNEL if c > 0 => sent[c - 1][k]
                        .ok_or_else(|| corrupt("no filter in the previous channel"))?,
                    _ => return Err(corrupt("unknown reference")),
                };
                let shift = bits.get(2).ok_or_else(|| corrupt("truncated"))?;
                let order = bits.get(3).ok_or_else(|| corrupt("truncated"))?;
                let mut sym = [0i32; SYM_TAPS];
                for (v, &r) in sym.iter_mut().zip(&reference) {
                    let u = bits
                        .get_exp_golomb(order)
                        .ok_or_else(|| corrupt("bad coefficient code"))?;
                    let d = unzigzag(u).ok_or_else(|| corrupt("coefficient out of range"))?;
                    *v = r + (d << shift);
                    if v.abs() > MAX_COEF {
                        return Err(corrupt("coefficient out of range"));
                    }
                }
                coefs[c].push(Some(expand(&sym)));
                sent[c].push(Some(sym));
                last = Some(sym);
            }
        }
        if !bits.only_zero_padding_left() {
            return Err(corrupt("bytes after the last coefficient"));
        }
        Ok(Filter {
            classing,
            coefs,
            clip: 0,
        })
    }
}

/// A malformed filter payload.
fn corrupt(what: &str) -> BitstreamError {
    BitstreamError::Corrupt {
        what: format!("restoration filter: {what}"),
        offset: 0,
    }
}

/// The classing bytes both payloads start with, and the bit string after them.
fn header(data: &[u8]) -> Result<(Classing, &[u8]), BitstreamError> {
    let [activity, directions, rest @ ..] = data else {
        return Err(corrupt("shorter than its header"));
    };
    let classing = Classing {
        activity: *activity,
        directions: *directions,
    };
    if !classing.is_valid() {
        return Err(corrupt("unknown classing"));
    }
    Ok((classing, rest))
}

/// The full [`TAPS`] coefficients of a symmetric filter.
fn expand(sym: &[i32; SYM_TAPS]) -> [i32; TAPS] {
    let mut full = [0i32; TAPS];
    for k in 0..PAIRS {
        full[k] = sym[k];
        full[TAPS - 4 - k] = sym[k];
    }
    full[TAPS - 3..].copy_from_slice(&sym[PAIRS..]);
    full
}

/// The cheapest coding of the symmetric filter `sym` given the filters it may be predicted from:
/// `(reference mode, shift, Exp-Golomb order, bits including flag, mode, shift and order)`. The
/// differences to the reference are sent divided by `2^shift`, the largest power of two (up to
/// [`MAX_SHIFT`]) that divides them all.
fn compact_code(
    sym: &[i32; SYM_TAPS],
    last: Option<&[i32; SYM_TAPS]>,
    above: Option<&[i32; SYM_TAPS]>,
) -> (u32, u32, u32, u32) {
    let zero = [0i32; SYM_TAPS];
    [
        (REF_NONE, Some(&zero)),
        (REF_PREVIOUS_CLASS, last),
        (REF_PREVIOUS_CHANNEL, above),
    ]
    .into_iter()
    .filter_map(|(mode, r)| {
        let r = r?;
        let diff: Vec<i32> = sym.iter().zip(r).map(|(&v, &r)| v - r).collect();
        if diff.iter().any(|d| d.abs() > MAX_COEF) {
            return None;
        }
        let shift = diff
            .iter()
            .filter(|&&d| d != 0)
            .map(|d| d.trailing_zeros())
            .min()
            .unwrap_or(MAX_SHIFT)
            .min(MAX_SHIFT);
        let coded: Vec<u32> = diff.iter().map(|&d| zigzag(d >> shift)).collect();
        let (order, bits) = (0..=MAX_ORDER)
            .map(|k| (k, coded.iter().map(|&u| exp_golomb_bits(u, k)).sum::<u32>()))
            .min_by_key(|&(k, b)| (b, k))?;
        Some((mode, shift, order, 1 + 2 + 2 + 3 + bits))
    })
    .min_by_key(|&(mode, _, _, bits)| (bits, mode))
    .unwrap_or((REF_NONE, 0, 0, u32::MAX))
}

/// The symmetric filter of least `bits − weight·(SSE saved)` near the least-squares solution `w`
/// (1/128 units): for each reference and shift, `w` rounded to the reference plus a multiple of
/// `2^shift`. Returns it with that cost.
fn best_compact(
    stats: &Stats,
    w: &[f64; SYM_TAPS],
    last: Option<&[i32; SYM_TAPS]>,
    above: Option<&[i32; SYM_TAPS]>,
    weight: f64,
) -> Option<([i32; SYM_TAPS], f64)> {
    let zero = [0i32; SYM_TAPS];
    let mut best: Option<([i32; SYM_TAPS], f64)> = None;
    for r in [Some(&zero), last, above].into_iter().flatten() {
        for shift in 0..=MAX_SHIFT {
            let step = f64::from(1u32 << shift);
            let mut q = [0i32; SYM_TAPS];
            for ((q, &w), &r) in q.iter_mut().zip(w).zip(r) {
                let v = f64::from(r) + ((w - f64::from(r)) / step).round() * step;
                *q = v.clamp(-f64::from(MAX_COEF), f64::from(MAX_COEF)) as i32;
            }
            let bits = compact_code(&q, last, above).3;
            if bits == u32::MAX {
                continue;
            }
            let j = f64::from(bits) - weight * stats.saved(&expand(&q));
            if best.as_ref().is_none_or(|(_, b)| j < *b) {
                best = Some((q, j));
            }
        }
    }
    best
}

/// Least-squares statistics of one (channel, class): `AᵀA` (upper triangle used), `Aᵀt`, `tᵀt`
/// and the pixel count, in exact integers.
#[derive(Clone)]
struct Stats {
    ata: Vec<i64>,
    atb: [i64; TAPS],
    btb: i64,
    n: i64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            ata: vec![0; TAPS * TAPS],
            atb: [0; TAPS],
            btb: 0,
            n: 0,
        }
    }
}

impl Stats {
    fn merge(&mut self, o: &Stats) {
        self.ata.iter_mut().zip(&o.ata).for_each(|(a, b)| *a += b);
        self.atb.iter_mut().zip(&o.atb).for_each(|(a, b)| *a += b);
        self.btb += o.btb;
        self.n += o.n;
    }

    /// The squared error left by coefficients `w` (pixel units), without the output rounding.
    fn sse(&self, w: &[f64]) -> f64 {
        let mut s = self.btb as f64;
        for i in 0..TAPS {
            s -= 2.0 * w[i] * self.atb[i] as f64;
            for j in 0..TAPS {
                let (a, b) = (i.min(j), i.max(j));
                s += w[i] * w[j] * self.ata[a * TAPS + b] as f64;
            }
        }
        s
    }

    /// The least-squares point-symmetric filter ([`SYM_TAPS`] coefficients in 1/128 units, not
    /// rounded), or `None` when the system is degenerate.
    fn fit_symmetric(&self) -> Option<[f64; SYM_TAPS]> {
        if self.n < 2 * SYM_TAPS as i64 {
            return None;
        }
        // Symmetric tap i gathers the full taps of `members(i)`.
        let members = |i: usize| -> [usize; 2] {
            if i < PAIRS {
                [i, TAPS - 4 - i]
            } else {
                [i + PAIRS, usize::MAX]
            }
        };
        let full = |a: usize, b: usize| self.ata[a.min(b) * TAPS + a.max(b)] as f64;
        let mut a = vec![0.0f64; SYM_TAPS * SYM_TAPS];
        let mut b = vec![0.0f64; SYM_TAPS];
        for i in 0..SYM_TAPS {
            for &p in members(i).iter().filter(|&&p| p != usize::MAX) {
                b[i] += self.atb[p] as f64;
                for j in 0..SYM_TAPS {
                    for &q in members(j).iter().filter(|&&q| q != usize::MAX) {
                        a[i * SYM_TAPS + j] += full(p, q);
                    }
                }
            }
        }
        for i in 0..SYM_TAPS {
            a[i * SYM_TAPS + i] += 1e-3 * self.n as f64;
        }
        let w = cholesky_solve(a, b, SYM_TAPS);
        if w.iter().all(|&v| v == 0.0) {
            return None;
        }
        let scale = f64::from(1u32 << FRAC_BITS);
        let mut out = [0.0f64; SYM_TAPS];
        for (o, &v) in out.iter_mut().zip(&w) {
            *o = (v * scale).clamp(-f64::from(MAX_COEF), f64::from(MAX_COEF));
        }
        Some(out)
    }

    /// The squared error the coefficients `q` (1/128 units) save, output rounding included.
    fn saved(&self, q: &[i32; TAPS]) -> f64 {
        let scale = f64::from(1u32 << FRAC_BITS);
        let wq: Vec<f64> = q.iter().map(|&v| f64::from(v) / scale).collect();
        // Rounding the output adds about 1/12 per pixel.
        self.btb as f64 - self.sse(&wq) - self.n as f64 / 12.0
    }

    /// The least-squares coefficients (1/128 units) and the squared error they save (output
    /// rounding included), or `None` when the system is degenerate.
    fn fit(&self) -> Option<([i32; TAPS], f64)> {
        if self.n < 2 * TAPS as i64 {
            return None;
        }
        let mut a = vec![0.0f64; TAPS * TAPS];
        for i in 0..TAPS {
            for j in i..TAPS {
                let v = self.ata[i * TAPS + j] as f64;
                a[i * TAPS + j] = v;
                a[j * TAPS + i] = v;
            }
            // A light ridge keeps flat classes (constant neighbours) solvable. It is in the
            // picture's squared units, so 256 times lighter relative to the data at 1/16 of a
            // level; it only matters for nearly flat classes.
            a[i * TAPS + i] += 1e-3 * self.n as f64;
        }
        let b: Vec<f64> = self.atb.iter().map(|&v| v as f64).collect();
        let w = cholesky_solve(a, b, TAPS);
        if w.iter().all(|&v| v == 0.0) {
            return None;
        }
        let scale = f64::from(1u32 << FRAC_BITS);
        let mut q = [0i32; TAPS];
        for (q, &v) in q.iter_mut().zip(&w) {
            *q = (v * scale)
                .round()
                .clamp(-f64::from(MAX_COEF), f64::from(MAX_COEF)) as i32;
        }
        let wq: Vec<f64> = q.iter().map(|&v| f64::from(v) / scale).collect();
        // Rounding the output adds about 1/12 per pixel.
        let saved = self.btb as f64 - self.sse(&wq) - self.n as f64 / 12.0;
        Some((q, saved))
    }
}

/// Fits the restoration filter of `decoded` against `original` (same size) for a rate-distortion
/// trade-off of `lambda` (the `λ` of `λ·255²·MSE + bpp`): per (channel, class), least squares,
/// sent where `λ·ΔSSE/3` (SSE in 0–255 units) exceeds its bits; the classing of least total cost.
/// `None` when no filter pays for itself (or the sizes differ).
pub fn fit(original: &RgbImage, decoded: &RgbImage, lambda: f64) -> Option<Filter> {
    fit_with(original, decoded, lambda, true)
}

/// [`fit`] for the compact coding (`compact`: symmetric filters, sizes of
/// [`Filter::to_compact_bytes`]) or the full one (any filters, sizes of [`Filter::to_bytes`]).
pub fn fit_with(
    original: &RgbImage,
    decoded: &RgbImage,
    lambda: f64,
    compact: bool,
) -> Option<Filter> {
    let (w, h) = (decoded.width() as usize, decoded.height() as usize);
    let pic = (decoded.as_raw().as_slice(), w, h, 0);
    fit_cost(original, pic, &classes(decoded), lambda, compact, 0).map(|(_, f)| f)
}

/// [`fit`] for a fixed-point decoding (compact coding), in its precision.
pub fn fit_fixed(original: &RgbImage, decoded: &Fixed, lambda: f64) -> Option<Filter> {
    fit_cost(
        original,
        decoded.raw(),
        &classes_of(decoded),
        lambda,
        true,
        0,
    )
    .map(|(_, f)| f)
}

/// The second, clipped filter stage for the output `filtered` of the first: the filter of least
/// cost among the clip values of [`CLIPS`] (compact coding), or `None` when none pays for its
/// bits. Its stream ([`Filter::to_clipped_bytes`]) is the compact coding after one clip byte.
pub fn fit_clipped(original: &RgbImage, filtered: &RgbImage, lambda: f64) -> Option<Filter> {
    let (w, h) = (filtered.width() as usize, filtered.height() as usize);
    fit_clipped_raw(original, (filtered.as_raw(), w, h, 0), lambda)
}

/// [`fit_clipped`] for a fixed-point first-stage output, in its precision.
pub fn fit_clipped_fixed(original: &RgbImage, filtered: &Fixed, lambda: f64) -> Option<Filter> {
    fit_clipped_raw(original, filtered.raw(), lambda)
}

/// A picture's samples with its width, height and fraction bits.
type Raw<'a, S> = (&'a [S], usize, usize, u32);

fn fit_clipped_raw<S: Sample>(original: &RgbImage, pic: Raw<'_, S>, lambda: f64) -> Option<Filter> {
    let fine = classes_raw(pic.0, pic.1, pic.2, pic.3);
    CLIPS
        .iter()
        .filter_map(|&clip| fit_cost(original, pic, &fine, lambda, true, clip))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, f)| f)
}

/// [`fit_with`] with neighbour differences clamped to `±clip` (0: none), and the filter's cost
/// (bits − `λ·ΔSSE/3`, negative when it pays); `fine` holds the finest classes of `decoded`.
fn fit_cost<S: Sample>(
    original: &RgbImage,
    (raw, w, h, shift): Raw<'_, S>,
    fine: &[u8],
    lambda: f64,
    compact: bool,
    clip: u8,
) -> Option<(f64, Filter)> {
    if (original.width() as usize, original.height() as usize) != (w, h) || w == 0 {
        return None;
    }
    let orig = original.as_raw();
    let units = (i32::from(clip) << shift, 1 << shift);
    // Every `step`-th row, so that large images cost a bounded fit.
    let step = (w * h).div_ceil(FIT_SAMPLES).max(1);
    let mut stats: [Vec<Stats>; 3] =
        std::array::from_fn(|_| vec![Stats::default(); FINEST.classes()]);
    let mut f = [0i32; TAPS];
    for y in (0..h).step_by(step) {
        for x in 0..w {
            let class = usize::from(fine[y * w + x]);
            for (c, stats) in stats.iter_mut().enumerate() {
                features(raw, w, h, y, x, c, units, &mut f);
                let p = (y * w + x) * 3 + c;
                let t = (i64::from(orig[p]) << shift) - i64::from(raw[p].get());
                let s = &mut stats[class];
                for i in 0..TAPS {
                    let fi = i64::from(f[i]);
                    s.atb[i] += fi * t;
                    let row = &mut s.ata[i * TAPS..(i + 1) * TAPS];
                    for j in i..TAPS {
                        row[j] += fi * i64::from(f[j]);
                    }
                }
                s.btb += t * t;
                s.n += 1;
            }
        }
    }
    // Squared errors are in the picture's units: 4^shift per squared 8-bit level.
    let weight = lambda / 3.0 * step as f64 / f64::from(1u32 << (2 * shift));
    let mut best: Option<(f64, Filter)> = None;
    for classing in CANDIDATES {
        let mut cost = 16.0 + STREAM_OVERHEAD_BITS;
        let mut coefs: [Vec<Option<[i32; TAPS]>>; 3] = Default::default();
        let mut sent: [Vec<Option<[i32; SYM_TAPS]>>; 3] = Default::default();
        for c in 0..3 {
            let mut merged = vec![Stats::default(); classing.classes()];
            for (fine_class, s) in stats[c].iter().enumerate() {
                merged[classing.class(fine_class as u8)].merge(s);
            }
            let mut last: Option<[i32; SYM_TAPS]> = None;
            for (k, s) in merged.iter().enumerate() {
                let choice = if compact {
                    let above = if c > 0 { sent[c - 1][k] } else { None };
                    s.fit_symmetric().and_then(|w| {
                        best_compact(s, &w, last.as_ref(), above.as_ref(), weight)
                            .filter(|&(_, j)| j < 1.0)
                    })
                } else {
                    None
                };
                if let Some((q, _)) = choice {
                    last = Some(q);
                }
                sent[c].push(choice.map(|(q, _)| q));
                let choice = if compact {
                    choice.map(|(q, j)| (expand(&q), j))
                } else {
                    s.fit().and_then(|(q, saved)| {
                        let bits = 1.0 + 3.0 + coefficient_bits(&q, best_order(&q)) as f64;
                        (bits - weight * saved < 1.0).then_some((q, bits - weight * saved))
                    })
                };
                match choice {
                    Some((q, j)) => {
                        cost += j;
                        coefs[c].push(Some(q));
                    }
                    None => {
                        cost += 1.0;
                        coefs[c].push(None);
                    }
                }
            }
        }
        if clip > 0 {
            cost += 8.0;
        }
        if cost < 0.0 && best.as_ref().is_none_or(|(b, _)| cost < *b) {
            best = Some((
                cost,
                Filter {
                    classing,
                    coefs,
                    clip,
                },
            ));
        }
    }
    best
}

fn zigzag(v: i32) -> u32 {
    let v = i64::from(v);
    // Coefficients are within ±MAX_COEF; wider values (hand-made filters) wrap, never panic.
    (if v > 0 { 2 * v - 1 } else { -2 * v }) as u32
}

fn unzigzag(u: u32) -> Option<i32> {
    let v = if u % 2 == 1 {
        i64::from(u / 2) + 1
    } else {
        -i64::from(u / 2)
    };
    (v.abs() <= i64::from(MAX_COEF)).then_some(v as i32)
}

/// Length of the Exp-Golomb code of order `k` of `u`.
fn exp_golomb_bits(u: u32, k: u32) -> u32 {
    let v = u64::from(u) + (1u64 << k);
    let n = 63 - v.leading_zeros();
    2 * n + 1 - k
}

fn coefficient_bits(coefs: &[i32; TAPS], order: u32) -> u32 {
    coefs
        .iter()
        .map(|&v| exp_golomb_bits(zigzag(v), order))
        .sum()
}

/// The Exp-Golomb order (0..=7) of fewest bits for `coefs`.
fn best_order(coefs: &[i32; TAPS]) -> u32 {
    (0..=MAX_ORDER)
        .min_by_key(|&k| (coefficient_bits(coefs, k), k))
        .unwrap_or(0)
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u32,
}

impl BitWriter {
    /// Appends the low `n` bits of `v`, most significant first.
    fn put(&mut self, v: u32, n: u32) {
        for i in (0..n).rev() {
            let bit = ((v >> i) & 1) as u8;
            if self.used == 0 {
                self.bytes.push(bit << 7);
            } else if let Some(last) = self.bytes.last_mut() {
                *last |= bit << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }

    fn put_exp_golomb(&mut self, u: u32, k: u32) {
        let v = u64::from(u) + (1u64 << k);
        let n = 63 - v.leading_zeros();
        self.put(0, n - k);
        // n ≤ 32 for the coefficient range; write the n + 1 bits of v in two parts if needed.
        let high = (v >> 16) as u32;
        if n >= 16 {
            self.put(high, n + 1 - 16);
            self.put((v & 0xffff) as u32, 16);
        } else {
            self.put(v as u32, n + 1);
        }
    }

    fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = self.bytes.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn get(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    fn get_exp_golomb(&mut self, k: u32) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > MAX_ZEROS {
                return None;
            }
        }
        let n = zeros + k;
        // The leading 1 was read; the n bits after it complete v = u + 2^k.
        let rest = u64::from(self.get(n)?);
        let v = (1u64 << n) | rest;
        u32::try_from(v - (1u64 << k)).ok()
    }

    /// True when at most 7 bits are left and all of them are 0.
    fn only_zero_padding_left(&mut self) -> bool {
        let left = self.bytes.len() * 8 - self.pos;
        left < 8 && self.get(left as u32) == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo_like(w: u32, h: u32, seed: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = |k: u32| {
                let s = ((x * 7 + y * 13 + k * 29 + seed) % 97) as f32;
                let smooth =
                    120.0 + 60.0 * ((x as f32 / 9.0).sin() + (y as f32 / 7.0 + k as f32).cos());
                (smooth + if (x / 8 + y / 8) % 2 == 0 { s } else { 0.0 }).clamp(0.0, 255.0) as u8
            };
            image::Rgb([v(0), v(1), v(2)])
        })
    }

    /// The original blurred by a 3×3 box plus a colour cast: something a filter can undo.
    fn degrade(img: &RgbImage) -> RgbImage {
        let (w, h) = img.dimensions();
        RgbImage::from_fn(w, h, |x, y| {
            let mut px = [0u8; 3];
            for (c, p) in px.iter_mut().enumerate() {
                let mut s = 0u32;
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let xx = (i64::from(x) + dx).clamp(0, i64::from(w) - 1) as u32;
                        let yy = (i64::from(y) + dy).clamp(0, i64::from(h) - 1) as u32;
                        s += u32::from(img.get_pixel(xx, yy)[c]);
                    }
                }
                *p = (s / 9).saturating_sub(3 * c as u32) as u8;
            }
            image::Rgb(px)
        })
    }

    fn sse(a: &RgbImage, b: &RgbImage) -> u64 {
        a.as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| (i64::from(x) - i64::from(y)).pow(2) as u64)
            .sum()
    }

    #[test]
    fn the_diamond_has_24_neighbours() {
        assert_eq!(offsets().count(), TAPS - 3);
    }

    #[test]
    fn a_fitted_filter_undoes_a_blur_and_survives_its_bytes() {
        let orig = photo_like(96, 80, 3);
        let blurred = degrade(&orig);
        let filter = fit(&orig, &blurred, 1.0).expect("a blur is worth undoing");
        let restored = filter.apply(&blurred);
        let (before, after) = (sse(&orig, &blurred), sse(&orig, &restored));
        assert!(after * 2 < before, "SSE {before} -> {after}");
        let back = Filter::from_bytes(&filter.to_bytes()).unwrap();
        assert_eq!(back, filter);
        assert_eq!(back.apply(&blurred), restored);
    }

    /// `img` at `shift` fraction bits, exactly.
    fn widen(img: &RgbImage, shift: u32) -> Fixed {
        let mut pic = Fixed::from_rgb(img);
        pic.shift = shift;
        pic.data.iter_mut().for_each(|v| *v <<= shift);
        pic
    }

    #[test]
    fn the_fixed_point_path_scales_with_its_precision() {
        let original = photo_like(64, 48, 5);
        let decoded = degrade(&original);
        // The same picture at 1/16 of a level has the same classes, and the same filter moves it
        // 16 times as far (up to the rounding of each path).
        let fine = widen(&decoded, FINE_SHIFT);
        assert_eq!(classes_of(&fine), classes(&decoded));
        assert_eq!(fine.to_rgb(), decoded);
        let filter = fit(&original, &decoded, 1.0).expect("a filter");
        let (a, b) = (filter.apply(&decoded), filter.apply_fixed(&fine));
        assert_eq!(b.shift, FINE_SHIFT);
        let worst = a
            .as_raw()
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| (i64::from(x) * 16 - i64::from(y)).abs())
            .max()
            .unwrap_or(0);
        assert!(worst <= 8, "{worst}/16 of a level apart");
        // Fitted on the fine picture, a filter sees what 8 bits lose: a blur kept at 1/16 of a
        // level is undone more closely than the same blur rounded to 8 bits.
        let (w, h) = (original.width() as usize, original.height() as usize);
        let mut blurred = widen(&original, FINE_SHIFT);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let mut sum = 0u32;
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let (yy, xx) = ((y + dy).min(h - 1), (x + dx).min(w - 1));
                        sum += u32::from(original.as_raw()[(yy * w + xx) * 3 + c]);
                    }
                    blurred.data[(y * w + x) * 3 + c] = (sum * 4) as u16;
                }
            }
        }
        let rounded = blurred.to_rgb();
        let eight = fit(&original, &rounded, 1.0).map_or(rounded.clone(), |f| f.apply(&rounded));
        let fixed = fit_fixed(&original, &blurred, 1.0).expect("a fine filter");
        let fixed = fixed.apply_fixed(&blurred).to_rgb();
        assert!(
            sse(&original, &fixed) < sse(&original, &eight),
            "{} fine, {} 8-bit",
            sse(&original, &fixed),
            sse(&original, &eight)
        );
    }

    #[test]
    fn symmetric_taps_pair_each_neighbour_with_its_mirror_image() {
        let o: Vec<(i32, i32)> = offsets().collect();
        for k in 0..PAIRS {
            assert_eq!(o[k], (-o[TAPS - 4 - k].0, -o[TAPS - 4 - k].1), "pair {k}");
        }
        let sym: [i32; SYM_TAPS] = std::array::from_fn(|i| i as i32 - 7);
        assert_eq!(Filter::symmetric(&expand(&sym)), Some(sym));
        let mut lopsided = expand(&sym);
        lopsided[0] += 1;
        assert_eq!(Filter::symmetric(&lopsided), None);
    }

    #[test]
    fn the_compact_coding_round_trips_and_is_smaller() {
        let orig = photo_like(128, 96, 11);
        let blurred = degrade(&orig);
        let filter = fit(&orig, &blurred, 1.0).expect("a blur is worth undoing");
        let compact = filter
            .to_compact_bytes()
            .expect("fit makes symmetric filters");
        let back = Filter::from_compact_bytes(&compact).unwrap();
        assert_eq!(back, filter);
        assert_eq!(back.apply(&blurred), filter.apply(&blurred));
        // Fewer bytes than the full coding of the very same coefficients.
        let full = filter.to_bytes();
        assert!(
            compact.len() * 3 < full.len() * 2,
            "{} vs {}",
            compact.len(),
            full.len()
        );
        // The compact filter restores as well as a free-form one (within 2 % of its SSE gain).
        let before = sse(&orig, &blurred) as f64;
        let free = fit_with(&orig, &blurred, 1.0, false).unwrap();
        let (a, b) = (
            sse(&orig, &filter.apply(&blurred)) as f64,
            sse(&orig, &free.apply(&blurred)) as f64,
        );
        assert!(
            before - a > 0.98 * (before - b),
            "{before} -> {a} compact, {b} free"
        );
        // Filters that are not point-symmetric have no compact coding.
        let mut lopsided = free.clone();
        if let Some(c) = lopsided.coefs[0].iter_mut().flatten().next() {
            c[0] = c[TAPS - 4] + 1;
        }
        assert_eq!(lopsided.to_compact_bytes(), None);
    }

    #[test]
    fn a_hand_made_compact_payload_decodes_as_documented() {
        // BITSTREAM.md §7, label 3, with A = 2 activity classes and D = 1: per channel and class a
        // flag, then mode (2 bits), shift (2), order (3) and 15 signed Exp-Golomb differences.
        let mut w = BitWriter::default();
        let filter = |w: &mut BitWriter, mode: u32, shift: u32, d: &[(usize, i32)]| {
            w.put(1, 1);
            w.put(mode, 2);
            w.put(shift, 2);
            w.put(0, 3);
            for i in 0..SYM_TAPS {
                let v = d.iter().find(|&&(j, _)| j == i).map_or(0, |&(_, v)| v);
                w.put_exp_golomb(zigzag(v), 0);
            }
        };
        // Channel 0: class 0 from zeros in steps of 2; class 1 from class 0 ("previous class").
        filter(&mut w, REF_NONE, 1, &[(0, 1), (1, -1), (14, 2)]);
        filter(&mut w, REF_PREVIOUS_CLASS, 0, &[(12, 3)]);
        // Channel 1: class 0 not sent; class 1 from channel 0's class 1 ("previous channel").
        w.put(0, 1);
        filter(&mut w, REF_PREVIOUS_CHANNEL, 0, &[(0, -1)]);
        // Channel 2: nothing.
        w.put(0, 2);
        let mut bytes = vec![2, 1];
        bytes.extend(w.finish());
        let f = Filter::from_compact_bytes(&bytes).unwrap();
        let mut a = [0i32; SYM_TAPS];
        (a[0], a[1], a[14]) = (2, -2, 4);
        let mut b = a;
        b[12] = 3;
        let mut c = b;
        c[0] = 1;
        assert_eq!(f.coefs[0], vec![Some(expand(&a)), Some(expand(&b))]);
        assert_eq!(f.coefs[1], vec![None, Some(expand(&c))]);
        assert_eq!(f.coefs[2], vec![None, None]);
        // Mirrored pairs share the value: offsets 0 and 23 are (−3, 0) and (3, 0).
        let full = expand(&c);
        assert_eq!((full[0], full[23], full[1], full[22]), (1, 1, -2, -2));
        assert_eq!((full[24], full[25], full[26]), (3, 0, 4));
        // Written back, the same filter; the writer is free to pick other references.
        let again = Filter::from_compact_bytes(&f.to_compact_bytes().unwrap()).unwrap();
        assert_eq!(again, f);
    }

    #[test]
    fn damaged_compact_payloads_are_refused_without_panic() {
        let orig = photo_like(96, 64, 4);
        let filter = fit(&orig, &degrade(&orig), 1.0).unwrap();
        let bytes = filter.to_compact_bytes().unwrap();
        for n in 0..bytes.len() {
            assert!(
                Filter::from_compact_bytes(&bytes[..n]).is_err(),
                "truncated to {n}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Filter::from_compact_bytes(&longer).is_err());
        for i in 0..bytes.len() {
            for v in [0u8, 0x55, 0xaa, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Ok(f) = Filter::from_compact_bytes(&b) {
                    let _ = f.apply(&orig);
                }
            }
        }
        // One class, channel 0: flag 1 then reference "previous class" (none was sent), "previous
        // channel" (there is none), or the reserved 3.
        for mode in 1..=3u8 {
            let e =
                Filter::from_compact_bytes(&[1, 1, 0x80 | (mode << 5), 0, 0, 0, 0]).unwrap_err();
            assert!(e.to_string().contains("restoration filter"), "{e}");
        }
        // A difference that takes a coefficient past the range.
        let mut w = BitWriter::default();
        let mut b = vec![1, 1];
        let mut ok = b.clone();
        let mut w_ok = BitWriter::default();
        for (w, first) in [(&mut w, MAX_COEF / 8 + 1), (&mut w_ok, MAX_COEF / 8)] {
            if w.bytes.is_empty() {
                w.put(1, 1);
                w.put(REF_NONE, 2);
                w.put(3, 2);
                w.put(0, 3);
            }
            w.put_exp_golomb(zigzag(first), 0);
            for _ in 1..SYM_TAPS {
                w.put_exp_golomb(0, 0);
            }
            // Channels 1 and 2 send nothing.
            w.put(0, 2);
        }
        b.extend(w.finish());
        ok.extend(w_ok.finish());
        let e = Filter::from_compact_bytes(&b).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let at_the_limit = Filter::from_compact_bytes(&ok).unwrap();
        assert_eq!(at_the_limit.coefs[0][0].unwrap()[0], MAX_COEF);
    }

    /// Flat areas with sharp steps of 100 between them, and the same with a small ripple (±3)
    /// everywhere: what only a filter of clipped differences can clean without blurring the steps.
    fn rippled_steps(w: u32, h: u32) -> (RgbImage, RgbImage) {
        let clean = RgbImage::from_fn(w, h, |x, y| {
            let v = if (x / 12 + y / 10) % 2 == 0 { 70 } else { 170 };
            image::Rgb([v, v + 10, v - 10])
        });
        let mut rippled = clean.clone();
        for (i, v) in rippled.as_mut().iter_mut().enumerate() {
            let r = (i as u32).wrapping_mul(2_654_435_761) >> 29; // 0..8
            *v = (i32::from(*v) + r as i32 % 7 - 3) as u8;
        }
        (clean, rippled)
    }

    #[test]
    fn the_clipped_stage_smooths_a_ripple_that_the_linear_filter_cannot() {
        let (clean, rippled) = rippled_steps(120, 90);
        let linear = fit(&clean, &rippled, 1.0).expect("a ripple is worth smoothing");
        let clipped = fit_clipped(&clean, &rippled, 1.0).expect("and more with clipping");
        assert!(CLIPS.contains(&clipped.clip));
        let (before, lin, clp) = (
            sse(&clean, &rippled),
            sse(&clean, &linear.apply(&rippled)),
            sse(&clean, &clipped.apply(&rippled)),
        );
        assert!(clp * 3 < before, "SSE {before} -> {clp} clipped");
        assert!(clp * 10 < lin * 9, "SSE {lin} linear, {clp} clipped");
        // Its own coding carries the clip value; the first stage's codings cannot.
        assert_eq!(clipped.to_compact_bytes(), None);
        let bytes = clipped
            .to_clipped_bytes()
            .expect("compact and a valid clip");
        assert_eq!(bytes[0], clipped.clip);
        let back = Filter::from_clipped_bytes(&bytes).unwrap();
        assert_eq!(back, clipped);
        assert_eq!(back.apply(&rippled), clipped.apply(&rippled));
        assert_eq!(linear.to_clipped_bytes(), None, "clip 0 is the first stage");
        // Damaged payloads are refused without panic.
        for n in 0..bytes.len() {
            assert!(
                Filter::from_clipped_bytes(&bytes[..n]).is_err(),
                "truncated to {n}"
            );
        }
        for clip in [0u8, 1, 3, 255] {
            let mut b = bytes.clone();
            b[0] = clip;
            let e = Filter::from_clipped_bytes(&b).unwrap_err();
            assert!(e.to_string().contains("clip"), "{clip}: {e}");
        }
    }

    #[test]
    fn a_perfect_decoding_gets_no_filter() {
        let orig = photo_like(64, 64, 1);
        assert_eq!(fit(&orig, &orig, 1.0), None);
    }

    #[test]
    fn a_tiny_lambda_sends_nothing() {
        let orig = photo_like(64, 48, 5);
        assert_eq!(fit(&orig, &degrade(&orig), 1e-9), None);
    }

    #[test]
    fn classes_cover_flat_and_busy_areas() {
        let flat = RgbImage::from_pixel(16, 16, image::Rgb([90, 90, 90]));
        assert!(classes(&flat).iter().all(|&c| c == 0));
        let stripes = RgbImage::from_fn(16, 16, |x, _| {
            let v = if x % 2 == 0 { 0 } else { 255 };
            image::Rgb([v, v, v])
        });
        // Columns alternate: a strong horizontal Laplacian, none vertical.
        assert!(classes(&stripes).iter().all(|&c| c == 6 * 3 + 1));
    }

    #[test]
    fn exp_golomb_round_trips_every_coefficient() {
        let mut w = BitWriter::default();
        let values: Vec<i32> = (-MAX_COEF..=MAX_COEF)
            .step_by(97)
            .chain([0, 1, -1, MAX_COEF])
            .collect();
        let mut expected_bits = 0;
        for k in 0..=MAX_ORDER {
            for &v in &values {
                w.put_exp_golomb(zigzag(v), k);
                expected_bits += exp_golomb_bits(zigzag(v), k) as usize;
            }
        }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for k in 0..=MAX_ORDER {
            for &v in &values {
                let u = r.get_exp_golomb(k).unwrap();
                assert_eq!(unzigzag(u), Some(v));
            }
        }
        // The cost the encoder minimizes is the length it writes.
        assert_eq!(r.pos, expected_bits);
        assert!(r.only_zero_padding_left());
        assert_eq!(unzigzag(zigzag(MAX_COEF) + 2), None);
    }

    #[test]
    fn damaged_payloads_are_refused_without_panic() {
        let orig = photo_like(64, 64, 9);
        let filter = fit(&orig, &degrade(&orig), 1.0).unwrap();
        let bytes = filter.to_bytes();
        for n in 0..bytes.len() {
            assert!(Filter::from_bytes(&bytes[..n]).is_err(), "truncated to {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Filter::from_bytes(&longer).is_err());
        assert!(Filter::from_bytes(&[8, 1]).is_err());
        assert!(Filter::from_bytes(&[1, 2]).is_err());
        // Every single-byte change either parses to some filter or is refused; none panics.
        for i in 0..bytes.len() {
            for v in [0u8, 0x55, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Ok(f) = Filter::from_bytes(&b) {
                    let _ = f.apply(&orig);
                }
            }
        }
        // Endless zeros are not a coefficient.
        assert!(Filter::from_bytes(&[1, 1, 0x80, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
