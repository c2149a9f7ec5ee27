//! `ncodec eval`: encode and decode every image of a folder at a list of rate points through the real
//! files (bits counted from the bytes written), measure PSNR and MS-SSIM, and average per point as
//! CompressAI does. Learned codecs run through the codec registry; classical codecs (JPEG, WebP,
//! AVIF, JPEG XL) through their Debian command-line tools.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use image::RgbImage;
use ncodec_bitstream::{Container, Limits};
use ncodec_codecs::{Codec, EncodeOptions, Media, Quality};

use crate::metrics::{ms_ssim_u8, psnr_u8};
use crate::rd::{ItemRow, RdCurve};

/// Errors of an evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// An external encoder is not installed.
    #[error("{tool} is not installed: apt-get install {package}")]
    MissingTool {
        /// The command.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// An external tool failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// The command.
        tool: String,
        /// Its stderr or the reason.
        message: String,
    },
    /// The learned codec failed.
    #[error(transparent)]
    Codec(#[from] ncodec_codecs::CodecError),
    /// The bitstream layer refused the file.
    #[error(transparent)]
    Bitstream(#[from] ncodec_bitstream::BitstreamError),
    /// Reading an image failed.
    #[error("{path}: {message}")]
    Image {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Nothing to evaluate.
    #[error("{0}")]
    Empty(String),
    /// Filesystem error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One encode + decode of one image.
#[derive(Debug)]
pub struct Coded {
    /// Size of the file a user would store.
    pub bytes: u64,
    /// The decoded image.
    pub decoded: RgbImage,
    /// Encoding seconds.
    pub encoding_time: f64,
    /// Decoding seconds.
    pub decoding_time: f64,
}

/// Something that codes images at a quality point.
pub trait ImageRunner: Sync {
    /// Curve name.
    fn name(&self) -> String;
    /// Curve description (tool versions, settings).
    fn description(&self) -> String;
    /// Quality points used when the user gives none.
    fn default_qualities(&self) -> Vec<String>;
    /// Encodes and decodes `image` (whose source file is `source`) at `quality`, using `scratch` for
    /// temporary files.
    ///
    /// # Errors
    /// [`EvalError`] for a failure of this item.
    fn code(
        &self,
        image: &RgbImage,
        source: &Path,
        quality: &str,
        scratch: &Path,
    ) -> Result<Coded, EvalError>;
}

/// A learned ncodec codec, through its real bitstream.
pub struct CodecRunner<'a> {
    /// The codec.
    pub codec: &'a dyn Codec,
}

impl ImageRunner for CodecRunner<'_> {
    fn name(&self) -> String {
        format!("ncodec-{}", self.codec.info().name)
    }

    fn description(&self) -> String {
        format!(
            "ncodec {} ({})",
            self.codec.info().name,
            self.codec.info().description
        )
    }

    fn default_qualities(&self) -> Vec<String> {
        (1..=8).map(|q| q.to_string()).collect()
    }

    fn code(
        &self,
        image: &RgbImage,
        _source: &Path,
        quality: &str,
        _scratch: &Path,
    ) -> Result<Coded, EvalError> {
        let quality: Quality = quality.parse()?;
        let t = Instant::now();
        let file = self
            .codec
            .encode(&Media::Image(image.clone()), &EncodeOptions { quality })?;
        let bytes = file.to_bytes()?;
        let encoding_time = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let parsed = Container::parse(&bytes, &Limits::default())?;
        let decoded = match self.codec.decode(&parsed, &Limits::default())? {
            Media::Image(img) => img,
            other => {
                return Err(EvalError::Empty(format!(
                    "codec decoded {} instead of an image",
                    other.kind_name()
                )));
            }
        };
        Ok(Coded {
            bytes: bytes.len() as u64,
            decoded,
            encoding_time,
            decoding_time: t.elapsed().as_secs_f64(),
        })
    }
}

/// The classical codecs ncodec can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classical {
    /// libjpeg-turbo `cjpeg -quality Q -sample 2x2 -optimize`.
    Jpeg,
    /// libwebp `cwebp -q Q -m 6`.
    Webp,
    /// libavif `avifenc --min Q --max Q -s 6 -y 420` (Q = quantizer 0..63, lower is better).
    Avif,
    /// libjxl `cjxl -d Q -e 7` (Q = butteraugli distance, lower is better).
    Jxl,
}

impl Classical {
    /// By command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "jpeg" | "jpg" => Self::Jpeg,
            "webp" => Self::Webp,
            "avif" => Self::Avif,
            "jxl" | "jpegxl" => Self::Jxl,
            _ => return None,
        })
    }

    fn tools(self) -> [(&'static str, &'static str); 2] {
        match self {
            Self::Jpeg => [
                ("cjpeg", "libjpeg-turbo-progs"),
                ("djpeg", "libjpeg-turbo-progs"),
            ],
            Self::Webp => [("cwebp", "webp"), ("dwebp", "webp")],
            Self::Avif => [("avifenc", "libavif-bin"), ("avifdec", "libavif-bin")],
            Self::Jxl => [("cjxl", "libjxl-tools"), ("djxl", "libjxl-tools")],
        }
    }

    /// Checks that the encoder and decoder are installed.
    ///
    /// # Errors
    /// [`EvalError::MissingTool`] naming the Debian package.
    pub fn check_tools(self) -> Result<(), EvalError> {
        for (tool, package) in self.tools() {
            let found = std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
            if !found {
                return Err(EvalError::MissingTool { tool, package });
            }
        }
        Ok(())
    }
}

fn run_tool(tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), EvalError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| EvalError::Tool {
            tool: tool.into(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(EvalError::Tool {
            tool: tool.into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Writes a binary PPM (P6).
///
/// # Errors
/// I/O errors.
pub fn write_ppm(path: &Path, img: &RgbImage) -> std::io::Result<()> {
    let mut data = format!("P6\n{} {}\n255\n", img.width(), img.height()).into_bytes();
    data.extend_from_slice(img.as_raw());
    std::fs::write(path, data)
}

/// Reads a binary 8-bit PPM (P6) as written by djpeg and djxl.
///
/// # Errors
/// [`EvalError::Image`] for anything but an 8-bit P6 file.
pub fn read_ppm(path: &Path) -> Result<RgbImage, EvalError> {
    let bad = |m: &str| EvalError::Image {
        path: path.display().to_string(),
        message: m.into(),
    };
    let data = std::fs::read(path)?;
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 {
        while pos < data.len() && data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos < data.len() && data[pos] == b'#' {
            while pos < data.len() && data[pos] != b'\n' {
                pos += 1;
            }
            continue;
        }
        let start = pos;
        while pos < data.len() && !data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if start == pos {
            return Err(bad("truncated PPM header"));
        }
        fields.push(String::from_utf8_lossy(&data[start..pos]).into_owned());
    }
    pos += 1;
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad("bad PPM number"));
    if fields[0] != "P6" || num(&fields[3])? != 255 {
        return Err(bad("not an 8-bit binary PPM"));
    }
    let (w, h) = (num(&fields[1])?, num(&fields[2])?);
    let need = w as usize * h as usize * 3;
    let pixels = data
        .get(pos..pos + need)
        .ok_or_else(|| bad("truncated PPM data"))?;
    RgbImage::from_raw(w, h, pixels.to_vec()).ok_or_else(|| bad("PPM size"))
}

fn load_png(path: &Path) -> Result<RgbImage, EvalError> {
    Ok(image::open(path)
        .map_err(|e| EvalError::Image {
            path: path.display().to_string(),
            message: e.to_string(),
        })?
        .to_rgb8())
}

impl ImageRunner for Classical {
    fn name(&self) -> String {
        match self {
            Self::Jpeg => "JPEG",
            Self::Webp => "WebP",
            Self::Avif => "AVIF",
            Self::Jxl => "JPEG XL",
        }
        .into()
    }

    fn description(&self) -> String {
        match self {
            Self::Jpeg => "cjpeg -quality Q -sample 2x2 -optimize (libjpeg-turbo)",
            Self::Webp => "cwebp -q Q -m 6 (libwebp)",
            Self::Avif => {
                "avifenc --min Q --max Q -s 6 -y 420 (libavif; Q = quantizer, lower is better)"
            }
            Self::Jxl => "cjxl -d Q -e 7 (libjxl; Q = butteraugli distance, lower is better)",
        }
        .into()
    }

    fn default_qualities(&self) -> Vec<String> {
        let q: &[&str] = match self {
            Self::Jpeg => &["5", "10", "20", "35", "50", "70", "85", "95"],
            Self::Webp => &["5", "15", "30", "50", "70", "85", "95"],
            Self::Avif => &["60", "52", "44", "36", "28", "20", "12"],
            Self::Jxl => &["12", "6", "4", "2.5", "1.5", "1", "0.5"],
        };
        q.iter().map(|s| (*s).to_string()).collect()
    }

    fn code(
        &self,
        image: &RgbImage,
        _source: &Path,
        quality: &str,
        scratch: &Path,
    ) -> Result<Coded, EvalError> {
        // Integer qualities (quantizers) for all but JPEG XL, whose knob is a decimal distance.
        let valid = if *self == Self::Jxl {
            quality
                .parse::<f64>()
                .is_ok_and(|d| d.is_finite() && d > 0.0)
        } else {
            quality.parse::<u32>().is_ok()
        };
        if !valid {
            return Err(EvalError::Tool {
                tool: self.name(),
                message: format!("quality '{quality}' is not valid for {}", self.name()),
            });
        }
        let q = quality.to_string();
        let os = |s: &str| std::ffi::OsString::from(s);
        let (input, coded, output) = match self {
            Self::Jpeg => ("in.ppm", "x.jpg", "out.ppm"),
            Self::Webp => ("in.png", "x.webp", "out.ppm"),
            Self::Avif => ("in.png", "x.avif", "out.png"),
            Self::Jxl => ("in.png", "x.jxl", "out.ppm"),
        };
        let (input, coded, output) = (
            scratch.join(input),
            scratch.join(coded),
            scratch.join(output),
        );
        if input.extension().is_some_and(|e| e == "ppm") {
            write_ppm(&input, image)?;
        } else {
            image.save(&input).map_err(|e| EvalError::Image {
                path: input.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let (i, c, o) = (input.as_os_str(), coded.as_os_str(), output.as_os_str());
        let t = Instant::now();
        match self {
            Self::Jpeg => run_tool(
                "cjpeg",
                &[
                    &os("-quality"),
                    &os(&q),
                    &os("-sample"),
                    &os("2x2"),
                    &os("-optimize"),
                    &os("-outfile"),
                    c,
                    i,
                ],
            )?,
            Self::Webp => run_tool(
                "cwebp",
                &[
                    &os("-quiet"),
                    &os("-q"),
                    &os(&q),
                    &os("-m"),
                    &os("6"),
                    i,
                    &os("-o"),
                    c,
                ],
            )?,
            Self::Avif => run_tool(
                "avifenc",
                &[
                    &os("--min"),
                    &os(&q),
                    &os("--max"),
                    &os(&q),
                    &os("-s"),
                    &os("6"),
                    &os("-y"),
                    &os("420"),
                    i,
                    c,
                ],
            )?,
            Self::Jxl => run_tool(
                "cjxl",
                &[
                    i,
                    c,
                    &os("-d"),
                    &os(&q),
                    &os("-e"),
                    &os("7"),
                    &os("--quiet"),
                ],
            )?,
        }
        let encoding_time = t.elapsed().as_secs_f64();
        let t = Instant::now();
        match self {
            Self::Jpeg => run_tool("djpeg", &[&os("-ppm"), &os("-outfile"), o, c])?,
            Self::Webp => run_tool("dwebp", &[&os("-quiet"), c, &os("-ppm"), &os("-o"), o])?,
            Self::Avif => run_tool("avifdec", &[c, o])?,
            Self::Jxl => run_tool("djxl", &[c, o, &os("--quiet")])?,
        }
        let decoding_time = t.elapsed().as_secs_f64();
        let decoded = if output.extension().is_some_and(|e| e == "ppm") {
            read_ppm(&output)?
        } else {
            load_png(&output)?
        };
        Ok(Coded {
            bytes: std::fs::metadata(&coded)?.len(),
            decoded,
            encoding_time,
            decoding_time,
        })
    }
}

/// The images of a dataset folder (PNG/JPEG, sorted by name).
///
/// # Errors
/// [`EvalError::Empty`] if the folder has none, I/O errors.
pub fn dataset_images(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let mut items: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    items.sort();
    if items.is_empty() {
        return Err(EvalError::Empty(format!(
            "{} holds no PNG or JPEG images",
            dir.display()
        )));
    }
    Ok(items)
}

/// Progress reporting for [`evaluate`]: called once per finished (item, quality) job.
pub trait Progress: Sync {
    /// A job finished; `failure` names an item that was skipped.
    fn tick(&self, failure: Option<String>);
}

impl Progress for () {
    fn tick(&self, _failure: Option<String>) {}
}

/// Evaluates `runner` on `items` at `qualities` with `threads` workers.
///
/// An item that fails (unreadable, tool error) is reported through `progress` and left out of the
/// means; the evaluation fails only if every item of a rate point failed.
///
/// # Errors
/// [`EvalError::Empty`] if a rate point has no successful item.
pub fn evaluate(
    runner: &dyn ImageRunner,
    items: &[PathBuf],
    qualities: &[String],
    threads: usize,
    progress: &dyn Progress,
) -> Result<RdCurve, EvalError> {
    // Workers take whole items: each image is decoded once and held by one worker at a time, so
    // memory stays bounded by the number of workers whatever the dataset's size.
    let rows: Mutex<Vec<(usize, ItemRow)>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let scratch_root = tempfile::tempdir()?;
    std::thread::scope(|s| {
        for worker in 0..threads.max(1) {
            let (rows, next) = (&rows, &next);
            let scratch = scratch_root.path().join(format!("w{worker}"));
            s.spawn(move || {
                let _ = std::fs::create_dir_all(&scratch);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = items.get(i) else { break };
                    let image = load_png(path);
                    for (q, quality) in qualities.iter().enumerate() {
                        let result = match &image {
                            Err(e) => Err(e.to_string()),
                            Ok(img) => runner
                                .code(img, path, quality, &scratch)
                                .and_then(|coded| row(img, &coded, path, quality))
                                .map_err(|e| format!("{}: {e}", path.display())),
                        };
                        match result {
                            Ok(r) => {
                                if let Ok(mut rows) = rows.lock() {
                                    rows.push((q, r));
                                }
                                progress.tick(None);
                            }
                            Err(e) => progress.tick(Some(e)),
                        }
                    }
                }
            });
        }
    });
    let mut rows = rows.into_inner().unwrap_or_default();
    rows.sort_by(|a, b| (a.0, &a.1.item).cmp(&(b.0, &b.1.item)));
    let mut curve = RdCurve {
        name: runner.name(),
        description: format!(
            "{}; {} items; qualities {}; mean over items",
            runner.description(),
            items.len(),
            qualities.join(",")
        ),
        results: Default::default(),
        per_item: Vec::new(),
    };
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mut series: [Vec<f64>; 5] = Default::default();
    for (q, quality) in qualities.iter().enumerate() {
        let point: Vec<&ItemRow> = rows.iter().filter(|r| r.0 == q).map(|r| &r.1).collect();
        if point.is_empty() {
            return Err(EvalError::Empty(format!(
                "every item failed at quality {quality}"
            )));
        }
        series[0].push(mean(point.iter().map(|r| r.bpp).collect()));
        series[1].push(mean(point.iter().map(|r| r.psnr_rgb).collect()));
        series[2].push(mean(point.iter().filter_map(|r| r.ms_ssim_rgb).collect()));
        series[3].push(mean(point.iter().map(|r| r.encoding_time).collect()));
        series[4].push(mean(point.iter().map(|r| r.decoding_time).collect()));
    }
    for (key, s) in [
        "bpp",
        "psnr-rgb",
        "ms-ssim-rgb",
        "encoding_time",
        "decoding_time",
    ]
    .iter()
    .zip(&series)
    {
        curve.set_series(key, s);
    }
    if let Ok(q) = qualities
        .iter()
        .map(|q| q.parse::<f64>())
        .collect::<Result<Vec<_>, _>>()
    {
        curve.set_series("quality", &q);
    }
    curve.per_item = rows.into_iter().map(|r| r.1).collect();
    Ok(curve)
}

fn row(img: &RgbImage, coded: &Coded, path: &Path, quality: &str) -> Result<ItemRow, EvalError> {
    if coded.decoded.dimensions() != img.dimensions() {
        return Err(EvalError::Image {
            path: path.display().to_string(),
            message: format!(
                "decoded size {:?} differs from {:?}",
                coded.decoded.dimensions(),
                img.dimensions()
            ),
        });
    }
    let (w, h) = img.dimensions();
    // A lossless item has infinite PSNR, which JSON cannot hold (serde writes null): report the PSNR
    // of the smallest nonzero error instead (one sample off by one), the upper bound of lossy results.
    let psnr = psnr_u8(img.as_raw(), coded.decoded.as_raw())
        .map_err(|e| EvalError::Empty(e.to_string()))?;
    let psnr = if psnr.is_finite() {
        psnr
    } else {
        10.0 * (255.0f64 * 255.0 * img.as_raw().len() as f64).log10()
    };
    Ok(ItemRow {
        item: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        quality: quality.to_string(),
        bytes: coded.bytes,
        bpp: coded.bytes as f64 * 8.0 / (f64::from(w) * f64::from(h)),
        psnr_rgb: psnr,
        ms_ssim_rgb: ms_ssim_u8(
            img.as_raw(),
            coded.decoded.as_raw(),
            w as usize,
            h as usize,
            3,
        )
        .ok(),
        encoding_time: coded.encoding_time,
        decoding_time: coded.decoding_time,
    })
}

/// Rate-distortion results of an audio codec, in the schema of the shared audio anchors
/// (`../shared/reference/classical/audio-*.json`): one point per quality, plain means over files.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AudioCurve {
    /// Curve name.
    pub name: String,
    /// What was measured, how.
    pub description: String,
    /// The quality points.
    pub quality: Vec<String>,
    /// `kbps`, `snr`, `segsnr` (dB), `encoding_time`, `decoding_time` (s), and
    /// `realtime_encode`/`realtime_decode` (× real time), one value per point.
    pub results: std::collections::BTreeMap<String, Vec<f64>>,
    /// One row per file and point: (file, quality, kbps, snr, segsnr). (Not `per_item`, whose rows
    /// are the image schema's.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_file: Vec<(String, String, f64, f64, f64)>,
}

/// Encodes and decodes every WAV of `items` with `codec` at each quality through the real file,
/// and measures kbps (whole file size), SNR and segmental SNR (20 ms frames, clipped to
/// [−10, 35] dB, the definition of the shared anchors).
///
/// # Errors
/// [`EvalError`] for unreadable files or codec failures.
pub fn evaluate_audio(
    codec: &dyn Codec,
    items: &[PathBuf],
    qualities: &[String],
    progress: &dyn Progress,
) -> Result<AudioCurve, EvalError> {
    use crate::metrics::{segmental_snr, snr};
    let limits = Limits::default();
    let mut per_item = Vec::new();
    let mut results: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let audios = items
        .iter()
        .map(|p| {
            ncodec_codecs::media::audio::read_wav_file(p, &limits).map_err(|e| EvalError::Image {
                path: p.display().to_string(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for quality in qualities {
        let q: Quality = quality.parse()?;
        let mut sums = [0.0f64; 7];
        for (path, audio) in items.iter().zip(&audios) {
            let t = Instant::now();
            let file = codec.encode(&Media::Audio(audio.clone()), &EncodeOptions { quality: q })?;
            let bytes = file.to_bytes()?;
            let enc = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let parsed = Container::parse(&bytes, &limits)?;
            let Media::Audio(back) = codec.decode(&parsed, &limits)? else {
                return Err(EvalError::Empty(
                    "codec decoded something else than audio".into(),
                ));
            };
            let dec = t.elapsed().as_secs_f64();
            let f = |v: &[f32]| v.iter().map(|&s| f64::from(s)).collect::<Vec<_>>();
            let (x, y) = (f(&audio.samples), f(&back.samples));
            let frame = (audio.sample_rate as usize / 50).max(1) * usize::from(audio.channels);
            let s = snr(&x, &y).map_err(|e| EvalError::Empty(e.to_string()))?;
            let seg = segmental_snr(&x, &y, frame).map_err(|e| EvalError::Empty(e.to_string()))?;
            let secs = audio.seconds().max(1e-9);
            let kbps = bytes.len() as f64 * 8.0 / secs / 1000.0;
            for (acc, v) in sums
                .iter_mut()
                .zip([kbps, s, seg, enc, dec, secs / enc, secs / dec])
            {
                *acc += v;
            }
            per_item.push((
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                quality.clone(),
                kbps,
                s,
                seg,
            ));
            progress.tick(None);
        }
        let n = items.len().max(1) as f64;
        for (key, v) in [
            "kbps",
            "snr",
            "segsnr",
            "encoding_time",
            "decoding_time",
            "realtime_encode",
            "realtime_decode",
        ]
        .iter()
        .zip(sums)
        {
            results.entry((*key).to_string()).or_default().push(v / n);
        }
    }
    Ok(AudioCurve {
        name: format!("ncodec-{}", codec.info().name),
        description: format!(
            "ncodec {} ({}); {} files: {}; kbps from whole file size; snr, segsnr (20 ms frames, clipped [-10, 35] dB); means over files",
            codec.info().name,
            codec.info().description,
            items.len(),
            items
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        quality: qualities.to_vec(),
        results,
        per_file: per_item,
    })
}
