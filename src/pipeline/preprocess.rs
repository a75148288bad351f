//! Resize + crop + normalise, matching torchvision `Resize(s)` + `CenterCrop(h, w)` + `ToTensor`
//! + `Normalize` applied to a PIL image (Pillow's antialiased bilinear filter).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::decode::{decode_rgb, Limits};
use crate::error::{Error, ErrorKind, Result};
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
    /// (`out.len() == self.tensor_len()`).
    pub fn process_bytes(
        &self,
        bytes: &[u8],
        limits: &Limits,
        jpeg_dct_scaling: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let min_short = jpeg_dct_scaling.then(|| self.min_decode_short_side());
        let img = decode_rgb(bytes, limits, min_short)?;
        self.process_image(&img, out)
    }

    /// Resize, crop and normalise a decoded image into `out` (CHW, `self.tensor_len()` values).
    pub fn process_image(&self, img: &RgbImage, out: &mut [f32]) -> Result<()> {
        if out.len() != self.tensor_len() {
            return Err(Error::new(
                ErrorKind::Inference,
                format!(
                    "output buffer holds {} values, expected {}",
                    out.len(),
                    self.tensor_len()
                ),
            ));
        }
        let (w, h) = img.dimensions();
        let (rw, rh) = match self.crop {
            Crop::Center => resized_size(w, h, self.resize_shorter),
            Crop::None => (self.width, self.height),
        };
        let resized;
        let (buf, bw, bh): (&[u8], u32, u32) = if (rw, rh) == (w, h) {
            (img.as_raw(), w, h)
        } else {
            resized = resize_rgb(img, rw, rh)?;
            (&resized, rw, rh)
        };
        let left = crop_offset(bw, self.width);
        let top = crop_offset(bh, self.height);
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
        for (y, ((r0, r1), r2)) in rows.enumerate() {
            let sy = top + y as i64;
            if sy < 0 || sy >= i64::from(bh) {
                // torchvision pads with zeros (black) when the crop is larger than the image.
                r0.fill(l0[0]);
                r1.fill(l1[0]);
                r2.fill(l2[0]);
                continue;
            }
            let stride = bw as usize * 3;
            let row = &buf[sy as usize * stride..(sy as usize + 1) * stride];
            for (x, ((v0, v1), v2)) in r0
                .iter_mut()
                .zip(r1.iter_mut())
                .zip(r2.iter_mut())
                .enumerate()
            {
                let sx = left + x as i64;
                if sx < 0 || sx >= i64::from(bw) {
                    (*v0, *v1, *v2) = (l0[0], l1[0], l2[0]);
                } else {
                    let p = &row[sx as usize * 3..sx as usize * 3 + 3];
                    (*v0, *v1, *v2) = (l0[p[s0] as usize], l1[p[s1] as usize], l2[p[s2] as usize]);
                }
            }
        }
        Ok(())
    }
}

/// torchvision `Resize(size)` with an int: the shorter side becomes `size`, the longer side
/// `int(size * long / short)` (truncated).
pub fn resized_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((u64::from(size) * u64::from(long)) as f64 / f64::from(short)) as u32;
    if w <= h {
        (size, new_long.max(1))
    } else {
        (new_long.max(1), size)
    }
}

/// torchvision `CenterCrop` offset: `int(round((size - crop) / 2))` with Python's round-half-to-even;
/// negative when the crop is larger (torchvision pads `(crop - size) // 2` on the leading side).
pub fn crop_offset(size: u32, crop: u32) -> i64 {
    let (size, crop) = (i64::from(size), i64::from(crop));
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

/// Pillow-compatible antialiased bilinear resize of an RGB8 image.
pub fn resize_rgb(img: &RgbImage, dst_w: u32, dst_h: u32) -> Result<Vec<u8>> {
    let (w, h) = img.dimensions();
    let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3)
        .map_err(|e| Error::invalid(format!("resize: {e}")))?;
    let mut dst = Image::new(dst_w, dst_h, PixelType::U8x3);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| Error::invalid(format!("resize: {e}")))?;
    Ok(dst.into_vec())
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
}
