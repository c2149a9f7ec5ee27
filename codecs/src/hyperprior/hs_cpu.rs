//! The deterministic hyper-synthesis: `h_s` in plain Rust, identical to the last bit on every
//! machine and backend.
//!
//! The scale index of every latent is chosen from `σ = h_s(ẑ)`; if the encoder and the decoder
//! computed σ differently by a single ULP next to a scale-table boundary, they would pick different
//! probability tables and the ANS stream would desynchronize from that symbol on. Burn's backends
//! promise no summation order, so `h_s` is not run in Burn at coding time. Instead this module
//! evaluates it in f32 with a fixed order:
//!
//! * every output element is accumulated by one thread, bias first, then over kernel rows, kernel
//!   columns and input channels in that order;
//! * the innermost loop runs over *output* channels, which are independent lanes, so SIMD of any
//!   width (SSE, AVX, NEON) and the choice of thread count change nothing;
//! * only IEEE-754 `+` and `×` (correctly rounded everywhere; Rust never contracts them to FMA) and
//!   comparisons are used: no transcendental function, no library reduction.
//!
//! The input `ẑ` is an integer tensor and the weights are loaded from the same file on both sides,
//! so both sides compute bit-identical σ and μ, hence identical scale indices.

use std::thread;

use super::model::{Hyperprior, LEAKY_SLOPE};

/// One layer's weights, laid out `[ky][kx][cin][cout]` (output channels innermost).
#[derive(Debug, Clone)]
struct Layer {
    cin: usize,
    cout: usize,
    k: usize,
    /// Stride 2 transposed convolution (5×5, padding 2, output padding 1) if true, else a stride 1
    /// convolution with padding `k / 2`.
    up: bool,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Layer {
    /// Re-lays Burn's weight (`[cin, cout, k, k]` if `up`, else `[cout, cin, k, k]`) out as
    /// `[ky][kx][cin][cout]`.
    fn new(
        weight: burn::tensor::Tensor<4>,
        bias: Option<&burn::module::Param<burn::tensor::Tensor<1>>>,
        up: bool,
    ) -> Result<Self, String> {
        let (d, w) = tensor_values(weight)?;
        let (cin, cout, k) = if up {
            (d[0], d[1], d[2])
        } else {
            (d[1], d[0], d[2])
        };
        let mut r = vec![0.0f32; w.len()];
        for ci in 0..cin {
            for co in 0..cout {
                let src = if up { ci * cout + co } else { co * cin + ci } * k * k;
                for t in 0..k * k {
                    r[(t * cin + ci) * cout + co] = w[src + t];
                }
            }
        }
        let b = match bias {
            Some(b) => tensor_values(b.val())?.1,
            None => vec![0.0; cout],
        };
        Ok(Self {
            cin,
            cout,
            k,
            up,
            w: r,
            b,
        })
    }
}

/// A feature map, `[H][W][C]` (channels innermost).
#[derive(Debug, Clone, PartialEq)]
pub struct Hwc {
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// `h·w·c` values.
    pub data: Vec<f32>,
}

/// `h_s` as plain f32 arithmetic in a fixed order.
#[derive(Debug, Clone)]
pub struct HyperSynthesisCpu {
    layers: Vec<Layer>,
    threads: usize,
}

fn tensor_values<const D: usize>(
    t: burn::tensor::Tensor<D>,
) -> Result<(Vec<usize>, Vec<f32>), String> {
    let dims = t.dims().to_vec();
    let v = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| format!("cannot read weights: {e:?}"))?;
    Ok((dims, v))
}

impl HyperSynthesisCpu {
    /// Copies `h_s`'s weights out of `model`.
    ///
    /// # Errors
    /// A message if the weights cannot be read back from the device.
    pub fn from_model(model: &Hyperprior) -> Result<Self, String> {
        let mut layers = Vec::new();
        for conv in &model.hs_up {
            // Burn's transposed convolution weight is [cin, cout, k, k].
            layers.push(Layer::new(conv.weight.val(), conv.bias.as_ref(), true)?);
        }
        // Burn's convolution weight is [cout, cin, k, k].
        let conv = &model.hs_out;
        layers.push(Layer::new(conv.weight.val(), conv.bias.as_ref(), false)?);
        let threads = thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16);
        Ok(Self { layers, threads })
    }

    /// Uses at most `threads` threads (results do not depend on it).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Channels of `ẑ`.
    pub fn input_channels(&self) -> usize {
        self.layers.first().map_or(0, |l| l.cin)
    }

    /// Runs `h_s` on `ẑ` (`[C][H][W]` integers, channel-major as coded) and returns the raw output
    /// `[4H][4W][2M]`: scales in channels `0..M`, means in `M..2M`.
    pub fn run(&self, z_hat: &[i32], h: usize, w: usize) -> Hwc {
        let c = self.input_channels();
        let mut x = Hwc {
            h,
            w,
            c,
            data: vec![0.0; h * w * c],
        };
        for ci in 0..c {
            for i in 0..h * w {
                x.data[i * c + ci] = z_hat[ci * h * w + i] as f32;
            }
        }
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.layer(layer, &x, i < last);
        }
        x
    }

    fn layer(&self, l: &Layer, x: &Hwc, leaky: bool) -> Hwc {
        let (oh, ow) = if l.up { (2 * x.h, 2 * x.w) } else { (x.h, x.w) };
        let mut out = vec![0.0f32; oh * ow * l.cout];
        let row = ow * l.cout;
        let rows_per = oh.div_ceil(self.threads).max(1);
        thread::scope(|s| {
            for (t, chunk) in out.chunks_mut(rows_per * row).enumerate() {
                s.spawn(move || {
                    for (r, out_row) in chunk.chunks_mut(row).enumerate() {
                        let oy = t * rows_per + r;
                        for ox in 0..ow {
                            let acc = &mut out_row[ox * l.cout..(ox + 1) * l.cout];
                            acc.copy_from_slice(&l.b);
                            accumulate(l, x, oy, ox, acc);
                            if leaky {
                                for v in acc.iter_mut() {
                                    if *v < 0.0 {
                                        *v *= LEAKY_SLOPE as f32;
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        Hwc {
            h: oh,
            w: ow,
            c: l.cout,
            data: out,
        }
    }
}

/// The input row/column feeding output `o` through kernel tap `k`, if any.
#[inline]
fn source(l: &Layer, o: usize, k: usize, len: usize) -> Option<usize> {
    if l.up {
        // Transposed conv, stride 2, padding 2: o = 2·i − 2 + k.
        let t = (o + 2).checked_sub(k)?;
        (t % 2 == 0 && t / 2 < len).then_some(t / 2)
    } else {
        // Convolution (cross-correlation), stride 1, padding k/2: i = o + k − k/2.
        let t = (o + k).checked_sub(l.k / 2)?;
        (t < len).then_some(t)
    }
}

#[inline]
fn accumulate(l: &Layer, x: &Hwc, oy: usize, ox: usize, acc: &mut [f32]) {
    for ky in 0..l.k {
        let Some(iy) = source(l, oy, ky, x.h) else {
            continue;
        };
        for kx in 0..l.k {
            let Some(ix) = source(l, ox, kx, x.w) else {
                continue;
            };
            let input = &x.data[(iy * x.w + ix) * l.cin..(iy * x.w + ix + 1) * l.cin];
            let taps = &l.w[(ky * l.k + kx) * l.cin * l.cout..(ky * l.k + kx + 1) * l.cin * l.cout];
            for (ci, &a) in input.iter().enumerate() {
                if a == 0.0 {
                    // Adding a·w = ±0 never changes a sum that started from a finite bias.
                    continue;
                }
                let wrow = &taps[ci * l.cout..(ci + 1) * l.cout];
                for (o, &wv) in acc.iter_mut().zip(wrow) {
                    *o += a * wv;
                }
            }
        }
    }
}
