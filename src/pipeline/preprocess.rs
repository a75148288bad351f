//! Resize + crop + normalise, matching torchvision `Resize(s)` + `CenterCrop(h, w)` + `ToTensor`
//! + `Normalize` applied to a PIL image (Pillow's antialiased bilinear filter).

use std::sync::atomic::AtomicBool;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::decode::{decode_rgb_budgeted, DecodeBudget, Limits};
use crate::error::{try_zeroed, Error, ErrorKind, Result};
use crate::model::{ChannelOrder, Crop, ModelSpec};

/// A JPEG is DCT-downscaled only while its shorter side stays at least this many times the resize
/// target, so Pillow-style antialiasing still does most of the reduction. Measured with
/// EfficientNet-Lite0 against the Python reference (min cosine; 15 photos of 1280-5640 px / 187
/// photos of 320-1024 px re-encoded as JPEG): margin 1: 0.969 / 0.990 (fails the 0.995 bar);
/// margin 2: 0.9975 / 0.9987 (0.9958 on an upscaled q75 JPEG); margin 3: 0.9993 / 0.9987;
/// no scaling: 0.9995 / 0.9987. Decoding at 1/2 scale roughly halves the decode time of a
/// typical 2560x1920 photo (44 -> 23 ms).
pub const JPEG_DCT_MARGIN: u32 = 3;

/// The geometry and normalisation a model needs, precomputed from its [`ModelSpec`].
#[derive(Debug, Clone)]
pub struct Preprocessor {
    width: u32,
    height: u32,
    resize_shorter: u32,
    crop: Crop,
    /// `lut[c][p]` = normalised value of pixel value `p` for output channel `c`.
    lut: Box<[[f32; 256]; 3]>,
    /// Source (RGB) channel feeding output channel `c`.
    src_channel: [usize; 3],
}

impl Preprocessor {
    pub fn new(spec: &ModelSpec) -> Self {
        let src_channel = match spec.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let mut lut = Box::new([[0f32; 256]; 3]);
        for (c, table) in lut.iter_mut().enumerate() {
            // Normalisation constants are listed in tensor channel order.
            let (m, s) = (spec.normalize.mean[c], spec.normalize.std[c]);
            for (p, v) in table.iter_mut().enumerate() {
                *v = (p as f32 - m) / s;
            }
        }
        Preprocessor {
            width: spec.input_width,
            height: spec.input_height,
            resize_shorter: spec.resize_shorter,
            crop: spec.crop,
            lut,
            src_channel,
        }
    }

    /// Number of f32 values one image fills: 3 x height x width.
    pub fn tensor_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// The shorter side a JPEG may be DCT-downscaled to: [`JPEG_DCT_MARGIN`] times what the resize
    /// needs.
    pub fn min_decode_short_side(&self) -> u32 {
        JPEG_DCT_MARGIN
            * match self.crop {
                Crop::Center => self.resize_shorter,
                Crop::None => self.width.max(self.height),
            }
    }

    /// Decode `bytes` and write the normalised CHW tensor of one image into `out`
    /// (`out.len() == self.tensor_len()`). Memory is bounded by `limits.max_decode_bytes`.
    pub fn process_bytes(
        &self,
        bytes: &[u8],
        limits: &Limits,
        jpeg_dct_scaling: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let budget = DecodeBudget::new(limits.max_decode_bytes);
        let stop = AtomicBool::new(false);
        self.process_bytes_budgeted(bytes, limits, jpeg_dct_scaling, &budget, &stop, out)
    }

    /// [`Preprocessor::process_bytes`] with a budget shared by the decoders of one call: the
    /// image's estimated peak (decode + preprocessing) is reserved before any pixel buffer is
    /// allocated and released when this returns. `stop` cancels a decode in progress.
    pub fn process_bytes_budgeted(
        &self,
        bytes: &[u8],
        limits: &Limits,
        jpeg_dct_scaling: bool,
        budget: &DecodeBudget,
        stop: &AtomicBool,
        out: &mut [f32],
    ) -> Result<()> {
        if out.len() != self.tensor_len() {
            return Err(self.bad_out(out.len()));
        }
        let min_short = jpeg_dct_scaling.then(|| self.min_decode_short_side());
        let post = |w, h| self.work_bytes(w, h);
        let (img, _reservation) =
            decode_rgb_budgeted(bytes, limits, min_short, budget, stop, &post)?;
        self.process_image(&img, out)
    }

    fn bad_out(&self, len: usize) -> Error {
        Error::new(
            ErrorKind::Inference,
            format!(
                "output buffer holds {len} values, expected {}",
                self.tensor_len()
            ),
        )
    }

    /// Where the crop lands in the resized image of a `w` x `h` source: the resized size and the
    /// part of the crop window inside it, `(rw, rh, left, top, x0, y0, x1, y1)` (crop window at
    /// `left, top`, possibly negative when the crop is larger than the image; `x0..x1` x `y0..y1`
    /// is its intersection with the resized image, at most the crop size).
    fn geometry(&self, w: u32, h: u32) -> Geometry {
        let (rw, rh) = match self.crop {
            Crop::Center => resized_size_u64(w, h, self.resize_shorter),
            Crop::None => (u64::from(self.width), u64::from(self.height)),
        };
        let (cw, ch) = (i64::from(self.width), i64::from(self.height));
        let left = crop_offset_i64(rw as i64, cw);
        let top = crop_offset_i64(rh as i64, ch);
        Geometry {
            rw,
            rh,
            left,
            top,
            x0: left.max(0) as u64,
            y0: top.max(0) as u64,
            x1: ((left + cw).max(0) as u64).min(rw),
            y1: ((top + ch).max(0) as u64).min(rh),
        }
    }

    /// Peak bytes [`Preprocessor::process_image`] allocates for a decoded `w` x `h` image: the
    /// resized crop region, the resizer's intermediate buffer (source columns the crop needs x
    /// crop height) and its filter coefficients. Independent of how long the resized image's
    /// long side would be.
    pub fn work_bytes(&self, w: u32, h: u32) -> u64 {
        let g = self.geometry(w, h);
        if (g.rw, g.rh) == (u64::from(w), u64::from(h)) {
            return 0;
        }
        let (bw, bh) = (g.x1 - g.x0, g.y1 - g.y0);
        let sx = f64::from(w) / g.rw as f64;
        let sy = f64::from(h) / g.rh as f64;
        let cols = ((bw as f64 * sx + 2.0 * sx.max(1.0)).ceil() as u64 + 2).min(u64::from(w));
        let win = |s: f64| 2 * s.max(1.0).ceil() as u64 + 1;
        let coeffs = (win(sx) * bw + win(sy) * bh) * 16 + (bw + bh) * 16;
        bw * bh * 3 + cols * bh * 3 + coeffs + (64 << 10)
    }

    /// Resize, crop and normalise a decoded image into `out` (CHW, `self.tensor_len()` values).
    ///
    /// Only the source rectangle that lands in the centre crop is resized (with the same filter
    /// positions as resizing the whole image, so the result equals torchvision's
    /// `Resize` + `CenterCrop`): the resize output is at most the crop size, whatever the
    /// aspect ratio of the image.
    pub fn process_image(&self, img: &RgbImage, out: &mut [f32]) -> Result<()> {
        if out.len() != self.tensor_len() {
            return Err(self.bad_out(out.len()));
        }
        let (w, h) = img.dimensions();
        let g = self.geometry(w, h);
        let region;
        // The pixels of the crop window inside the resized image: `buf` with row length `bw`,
        // holding resized-image columns `ox..` and rows `oy..`.
        let (buf, bw, ox, oy): (&[u8], u64, u64, u64) =
            if (g.rw, g.rh) == (u64::from(w), u64::from(h)) {
                (img.as_raw(), u64::from(w), 0, 0)
            } else {
                region = resize_region(img, &g)?;
                (&region, g.x1 - g.x0, g.x0, g.y0)
            };
        let plane = self.width as usize * self.height as usize;
        let ow = self.width as usize;
        let (o0, rest) = out.split_at_mut(plane);
        let (o1, o2) = rest.split_at_mut(plane);
        let [s0, s1, s2] = self.src_channel;
        let [l0, l1, l2] = [&self.lut[0], &self.lut[1], &self.lut[2]];
        let rows = o0
            .chunks_exact_mut(ow)
            .zip(o1.chunks_exact_mut(ow))
            .zip(o2.chunks_exact_mut(ow));
        let stride = bw as usize * 3;
        for (y, ((r0, r1), r2)) in rows.enumerate() {
            let sy = g.top + y as i64;
            if sy < g.y0 as i64 || sy >= g.y1 as i64 {
                // torchvision pads with zeros (black) when the crop is larger than the image.
                r0.fill(l0[0]);
                r1.fill(l1[0]);
                r2.fill(l2[0]);
                continue;
            }
            let ry = (sy as u64 - oy) as usize;
            let row = &buf[ry * stride..(ry + 1) * stride];
            for (x, ((v0, v1), v2)) in r0
                .iter_mut()
                .zip(r1.iter_mut())
                .zip(r2.iter_mut())
                .enumerate()
            {
                let sx = g.left + x as i64;
                if sx < g.x0 as i64 || sx >= g.x1 as i64 {
                    (*v0, *v1, *v2) = (l0[0], l1[0], l2[0]);
                } else {
                    let i = (sx as u64 - ox) as usize * 3;
                    let p = &row[i..i + 3];
                    (*v0, *v1, *v2) = (l0[p[s0] as usize], l1[p[s1] as usize], l2[p[s2] as usize]);
                }
            }
        }
        Ok(())
    }
}

/// See [`Preprocessor::geometry`].
#[derive(Debug, Clone, Copy)]
struct Geometry {
    rw: u64,
    rh: u64,
    left: i64,
    top: i64,
    x0: u64,
    y0: u64,
    x1: u64,
    y1: u64,
}

/// torchvision `Resize(size)` with an int: the shorter side becomes `size`, the longer side
/// `int(size * long / short)` (truncated). Saturates at `u32::MAX` (see [`resized_size_u64`]).
pub fn resized_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (a, b) = resized_size_u64(w, h, size);
    (
        u32::try_from(a).unwrap_or(u32::MAX),
        u32::try_from(b).unwrap_or(u32::MAX),
    )
}

/// [`resized_size`] without overflow: the long side of a very elongated image can exceed `u32`.
pub fn resized_size_u64(w: u32, h: u32, size: u32) -> (u64, u64) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((u64::from(size) * u64::from(long)) as f64 / f64::from(short.max(1))) as u64;
    if w <= h {
        (u64::from(size), new_long.max(1))
    } else {
        (new_long.max(1), u64::from(size))
    }
}

/// torchvision `CenterCrop` offset: `int(round((size - crop) / 2))` with Python's round-half-to-even;
/// negative when the crop is larger (torchvision pads `(crop - size) // 2` on the leading side).
pub fn crop_offset(size: u32, crop: u32) -> i64 {
    crop_offset_i64(i64::from(size), i64::from(crop))
}

fn crop_offset_i64(size: i64, crop: i64) -> i64 {
    if crop > size {
        return -((crop - size) / 2);
    }
    let d = size - crop;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Resize the part of `img` that lands in `g.x0..g.x1` x `g.y0..g.y1` of the `g.rw` x `g.rh`
/// resized image. The source box is that rectangle scaled back by the full-image scale
/// (`w / rw`, as Pillow computes it); the filter windows are clamped to the whole source image,
/// not to the box, so every output pixel is the one the full resize would produce there.
fn resize_region(img: &RgbImage, g: &Geometry) -> Result<Vec<u8>> {
    let (w, h) = img.dimensions();
    let (bw, bh) = (g.x1 - g.x0, g.y1 - g.y0);
    let (bw32, bh32) = (
        u32::try_from(bw).map_err(|_| Error::invalid("resize: crop too large"))?,
        u32::try_from(bh).map_err(|_| Error::invalid("resize: crop too large"))?,
    );
    let sx = f64::from(w) / g.rw as f64;
    let sy = f64::from(h) / g.rh as f64;
    let edge = |a: u64, full: u64, size: u32, s: f64| {
        if a >= full {
            f64::from(size)
        } else {
            (a as f64 * s).min(f64::from(size))
        }
    };
    let left = edge(g.x0, g.rw, w, sx);
    let right = edge(g.x1, g.rw, w, sx);
    let top = edge(g.y0, g.rh, h, sy);
    let bottom = edge(g.y1, g.rh, h, sy);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(left, top, right - left, bottom - top);
    resize_with(img, bw32, bh32, &opts)
}

fn resize_with(img: &RgbImage, dst_w: u32, dst_h: u32, opts: &ResizeOptions) -> Result<Vec<u8>> {
    let (w, h) = img.dimensions();
    let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3)
        .map_err(|e| Error::invalid(format!("resize: {e}")))?;
    let len = dst_w as usize * dst_h as usize * 3;
    let buf = try_zeroed::<u8>(len, "the resized image")?;
    let mut dst = Image::from_vec_u8(dst_w, dst_h, buf, PixelType::U8x3)
        .map_err(|e| Error::invalid(format!("resize: {e}")))?;
    Resizer::new()
        .resize(&src, &mut dst, opts)
        .map_err(|e| Error::invalid(format!("resize: {e}")))?;
    Ok(dst.into_vec())
}

/// Pillow-compatible antialiased bilinear resize of a whole RGB8 image.
pub fn resize_rgb(img: &RgbImage, dst_w: u32, dst_h: u32) -> Result<Vec<u8>> {
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    resize_with(img, dst_w, dst_h, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_resize_size() {
        assert_eq!(resized_size(640, 480, 256), (341, 256));
        assert_eq!(resized_size(480, 640, 256), (256, 341));
        assert_eq!(resized_size(300, 451, 256), (256, 384)); // 256*451/300 = 384.85
        assert_eq!(resized_size(256, 256, 256), (256, 256));
        assert_eq!(resized_size(1, 10000, 256), (256, 2560000));
        assert_eq!(
            resized_size_u64(1, 40_000_000, 4096),
            (4096, 163_840_000_000)
        );
        assert_eq!(resized_size(1, 40_000_000, 4096), (4096, u32::MAX));
    }

    #[test]
    fn torchvision_center_crop_rounding() {
        // Python: int(round((341 - 224) / 2.0)) == 58 (58.5 rounds to even), (343-224)/2 = 59.5 -> 60.
        assert_eq!(crop_offset(341, 224), 58);
        assert_eq!(crop_offset(343, 224), 60);
        assert_eq!(crop_offset(256, 224), 16);
        assert_eq!(crop_offset(225, 224), 0);
        assert_eq!(crop_offset(227, 224), 2);
        assert_eq!(crop_offset(224, 224), 0);
        assert_eq!(crop_offset(200, 224), -12);
        assert_eq!(crop_offset(201, 224), -11);
    }

    fn noise_image(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        let raw = (0..w as usize * h as usize * 3)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Smooth gradients plus noise, like a photo.
                let base = ((i / 3) as u32 % w * 255 / w.max(1)) as u8;
                base.wrapping_add((x % 64) as u8)
            })
            .collect();
        RgbImage::from_raw(w, h, raw).unwrap()
    }

    fn spec(resize: u32, cw: u32, ch: u32) -> ModelSpec {
        ModelSpec::from_json(&format!(
            r#"{{"format":1,"name":"t","weights":"x","input_name":"i","output_name":"o",
                "input_width":{cw},"input_height":{ch},"resize_shorter":{resize},"crop":"center",
                "channel_order":"rgb","layout":"nchw",
                "normalize":{{"mean":[0.0,0.0,0.0],"std":[1.0,1.0,1.0]}},"dims":4}}"#
        ))
        .unwrap()
    }

    /// The crop-only resize equals torchvision's Resize (whole image) + CenterCrop.
    #[test]
    fn crop_resize_equals_full_resize_then_crop() {
        let mut worst = 0u8;
        let mut differing = 0usize;
        let mut total = 0usize;
        for (i, &(w, h, resize, cw, ch)) in [
            (640, 480, 256, 224, 224),
            (480, 640, 256, 224, 224),
            (300, 451, 256, 224, 224),
            (1024, 768, 256, 224, 224),
            (333, 500, 256, 224, 224),
            (257, 1000, 256, 224, 224),
            (1000, 257, 256, 224, 224),
            (150, 100, 256, 224, 224), // upscale
            (200, 200, 256, 224, 224),
            (731, 411, 232, 224, 200), // non-square crop
            (640, 480, 200, 224, 224), // crop larger than the short side: padded
            (2000, 1500, 256, 224, 224),
        ]
        .iter()
        .enumerate()
        {
            let img = noise_image(w, h, i as u32);
            let pre = Preprocessor::new(&spec(resize, cw, ch));
            let g = pre.geometry(w, h);
            let full = resize_rgb(&img, g.rw as u32, g.rh as u32).unwrap();
            let part = resize_region(&img, &g).unwrap();
            let (bw, bh) = ((g.x1 - g.x0) as usize, (g.y1 - g.y0) as usize);
            assert_eq!(part.len(), bw * bh * 3, "{w}x{h}");
            assert!(bw <= cw as usize && bh <= ch as usize);
            for y in 0..bh {
                for x in 0..bw {
                    for c in 0..3 {
                        let a = part[(y * bw + x) * 3 + c];
                        let fy = g.y0 as usize + y;
                        let fx = g.x0 as usize + x;
                        let b = full[(fy * g.rw as usize + fx) * 3 + c];
                        let d = a.abs_diff(b);
                        worst = worst.max(d);
                        differing += usize::from(d != 0);
                        total += 1;
                    }
                }
            }
        }
        println!("crop-resize vs full resize + crop: max diff {worst}, {differing} of {total} values differ");
        assert!(worst <= 1, "max diff {worst}");
        assert!(differing * 1000 <= total, "{differing} of {total} differ");
    }

    /// Extreme aspect ratios resize only the crop: the buffers stay crop-sized.
    #[test]
    fn extreme_aspect_ratios_stay_bounded() {
        let pre = Preprocessor::new(&spec(256, 224, 224));
        for (w, h) in [
            (1u32, 1_000_000u32),
            (20000, 1),
            (65535, 1),
            (1, 1),
            (3, 40000),
        ] {
            let img = RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
            let work = pre.work_bytes(w, h);
            assert!(work < 2 << 20, "{w}x{h}: {work}");
            let mut out = vec![0f32; pre.tensor_len()];
            pre.process_image(&img, &mut out).unwrap();
            assert!(
                out[..224 * 224].iter().all(|&v| (v - 10.0).abs() < 1.5),
                "{w}x{h}"
            );
        }
    }
}
