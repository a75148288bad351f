//! Image decoding: bytes -> upright 8-bit RGB, with size limits checked from the header before
//! any pixel buffer is allocated.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};

use crate::error::{Error, ErrorKind, Result};

/// Formats this build decodes.
pub const SUPPORTED_FORMATS: &str = "JPEG, PNG, WebP, GIF, BMP, TIFF";

/// Input limits. Both are checked before decoding allocates anything sized by the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted encoded size in bytes.
    pub max_bytes: usize,
    /// Largest accepted width x height, read from the file header.
    pub max_pixels: u64,
}

impl Default for Limits {
    /// 32 MiB and 40 megapixels (e.g. 8000 x 5000).
    fn default() -> Self {
        Limits {
            max_bytes: 32 << 20,
            max_pixels: 40_000_000,
        }
    }
}

/// Decode `bytes` into an upright RGB image: EXIF orientation applied, alpha composited on white,
/// greyscale expanded to RGB, GIF/WebP animations reduced to their first frame.
///
/// `min_short_side`: when set, a JPEG may be decoded at a reduced DCT scale (1/2, 1/4, 1/8) as long
/// as its shorter side stays at least this long; other formats are always decoded at full size.
pub fn decode_rgb(bytes: &[u8], limits: &Limits, min_short_side: Option<u32>) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::invalid("empty input (0 bytes) is not an image"));
    }
    if bytes.len() > limits.max_bytes {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "image is {} bytes, over the limit of {} bytes",
                bytes.len(),
                limits.max_bytes
            ),
        )
        .with_hint("raise the max_bytes limit or send a smaller file"));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        Error::invalid("input is not a recognised image")
            .with_hint(format!("supported formats: {SUPPORTED_FORMATS}"))
    })?;
    // Decoders parse untrusted data: turn a decoder panic into an error rather than unwinding
    // through the caller.
    let result = catch_unwind(AssertUnwindSafe(|| match format {
        ImageFormat::Jpeg => decode_jpeg(bytes, limits, min_short_side),
        ImageFormat::Png
        | ImageFormat::WebP
        | ImageFormat::Gif
        | ImageFormat::Bmp
        | ImageFormat::Tiff => decode_with_image(bytes, format, limits),
        other => Err(Error::new(
            ErrorKind::Unsupported,
            format!("{} images are not supported", format_name(other)),
        )
        .with_hint(format!("supported formats: {SUPPORTED_FORMATS}"))),
    }));
    match result {
        Ok(r) => r,
        Err(_) => Err(Error::invalid(format!(
            "the {} decoder failed on this input (corrupt image)",
            format_name(format)
        ))),
    }
}

fn format_name(f: ImageFormat) -> String {
    match f {
        ImageFormat::Jpeg => "JPEG".into(),
        ImageFormat::Png => "PNG".into(),
        ImageFormat::WebP => "WebP".into(),
        ImageFormat::Gif => "GIF".into(),
        ImageFormat::Bmp => "BMP".into(),
        ImageFormat::Tiff => "TIFF".into(),
        other => other
            .extensions_str()
            .first()
            .map_or_else(|| format!("{other:?}"), |e| e.to_ascii_uppercase()),
    }
}

/// Refuse zero-sized and too-large images from their header dimensions.
pub(crate) fn check_dimensions(width: u32, height: u32, limits: &Limits) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(format!(
            "image has a zero dimension ({width}x{height})"
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "image is {width}x{height} = {pixels} pixels, over the limit of {} pixels",
                limits.max_pixels
            ),
        )
        .with_hint("raise the max_pixels limit or downscale the image"));
    }
    Ok(())
}

fn decode_jpeg(bytes: &[u8], limits: &Limits, min_short_side: Option<u32>) -> Result<RgbImage> {
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.read_info().map_err(jpeg_error)?;
    let info = dec
        .info()
        .ok_or_else(|| Error::invalid("JPEG header could not be read"))?;
    check_dimensions(u32::from(info.width), u32::from(info.height), limits)?;
    if info.pixel_format == jpeg_decoder::PixelFormat::CMYK32 {
        // The image crate's decoder converts CMYK (including Adobe's inverted form) to RGB.
        return decode_with_image(bytes, ImageFormat::Jpeg, limits);
    }
    if let Some(min) = min_short_side {
        let min = u16::try_from(min).unwrap_or(u16::MAX);
        // `scale` picks the smallest 1/8..1 scale whose output reaches the request on at least one
        // axis: ask on the shorter axis only.
        let (rw, rh) = if info.width <= info.height {
            (min, u16::MAX)
        } else {
            (u16::MAX, min)
        };
        dec.scale(rw, rh).map_err(jpeg_error)?;
    }
    dec.set_max_decoding_buffer_size(
        usize::try_from(limits.max_pixels.saturating_mul(4)).unwrap_or(usize::MAX),
    );
    let pixels = match dec.decode() {
        Ok(p) => p,
        Err(jpeg_decoder::Error::Unsupported(_)) => {
            return decode_with_image(bytes, ImageFormat::Jpeg, limits)
        }
        Err(e) => return Err(jpeg_error(e)),
    };
    let info = dec
        .info()
        .ok_or_else(|| Error::invalid("JPEG header could not be read"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let n = w as usize * h as usize;
    let img = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 if pixels.len() >= n * 3 => {
            RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
        }
        jpeg_decoder::PixelFormat::L8 if pixels.len() >= n => {
            image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
        }
        jpeg_decoder::PixelFormat::L16 if pixels.len() >= n * 2 => {
            // 16-bit lossless greyscale, big-endian samples: keep the high byte.
            let v: Vec<u8> = pixels.chunks_exact(2).map(|c| c[0]).collect();
            image::GrayImage::from_raw(w, h, v).map(DynamicImage::ImageLuma8)
        }
        _ => None,
    }
    .ok_or_else(|| Error::invalid("JPEG decoder returned a short pixel buffer"))?;
    let orientation = dec
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    let mut img = img;
    img.apply_orientation(orientation);
    Ok(to_rgb_on_white(img))
}

fn jpeg_error(e: jpeg_decoder::Error) -> Error {
    match e {
        jpeg_decoder::Error::Format(m) => Error::invalid(format!("corrupt JPEG: {m}")),
        jpeg_decoder::Error::Unsupported(f) => Error::new(
            ErrorKind::Unsupported,
            format!("unsupported JPEG feature: {f:?}"),
        ),
        jpeg_decoder::Error::Io(io) => {
            Error::invalid(format!("truncated or unreadable JPEG: {io}"))
        }
        other => Error::invalid(format!("corrupt JPEG: {other}")),
    }
}

fn decode_with_image(bytes: &[u8], format: ImageFormat, limits: &Limits) -> Result<RgbImage> {
    let name = format_name(format);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut lim = image::Limits::default();
    // Decoders' own working buffers: a generous bound derived from the pixel limit (16 bytes per
    // pixel covers RGBA 32-bit float) plus slack for headers and palettes.
    lim.max_alloc = Some(
        limits
            .max_pixels
            .saturating_mul(16)
            .saturating_add(16 << 20),
    );
    reader.limits(lim);
    let mut dec = reader.into_decoder().map_err(|e| image_error(e, &name))?;
    let (w, h) = dec.dimensions();
    check_dimensions(w, h, limits)?;
    let orientation = dec.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(dec).map_err(|e| image_error(e, &name))?;
    img.apply_orientation(orientation);
    Ok(to_rgb_on_white(img))
}

fn image_error(e: ImageError, format: &str) -> Error {
    match e {
        ImageError::Decoding(d) => {
            Error::invalid(format!("corrupt or truncated {format} image: {d}"))
        }
        ImageError::Unsupported(u) => Error::new(
            ErrorKind::Unsupported,
            format!("unsupported {format} image: {u}"),
        ),
        ImageError::Limits(l) => Error::new(
            ErrorKind::LimitExceeded,
            format!("{format} image exceeds a decoder limit: {l}"),
        )
        .with_hint("raise the max_pixels limit or downscale the image"),
        ImageError::IoError(io) => {
            Error::invalid(format!("truncated or unreadable {format} image: {io}"))
        }
        other => Error::invalid(format!("cannot decode {format} image: {other}")),
    }
}

/// Flatten to 8-bit RGB: alpha is composited over white, greyscale is replicated.
pub fn to_rgb_on_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return match img {
            DynamicImage::ImageRgb8(i) => i,
            other => other.to_rgb8(),
        };
    }
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    let src = rgba.into_raw();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for p in src.chunks_exact(4) {
        let a = u32::from(p[3]);
        let ia = 255 - a;
        for &c in &p[..3] {
            // Rounded (c * a + 255 * (255 - a)) / 255.
            out.push(((u32::from(c) * a + 255 * ia + 127) / 255) as u8);
        }
    }
    RgbImage::from_raw(w, h, out).expect("buffer sized for w*h*3")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage() {
        let l = Limits::default();
        assert_eq!(
            decode_rgb(b"", &l, None).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let e = decode_rgb(b"hello, this is plain text and not a picture", &l, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.hint().unwrap().contains("JPEG"));
    }

    #[test]
    fn byte_limit() {
        let l = Limits {
            max_bytes: 10,
            max_pixels: 100,
        };
        let e = decode_rgb(&[0u8; 11], &l, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    }

    #[test]
    fn dimensions() {
        let l = Limits {
            max_bytes: 1,
            max_pixels: 100,
        };
        assert!(check_dimensions(10, 10, &l).is_ok());
        assert_eq!(
            check_dimensions(10, 11, &l).unwrap_err().kind(),
            ErrorKind::LimitExceeded
        );
        assert_eq!(
            check_dimensions(0, 11, &l).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        // No overflow on huge headers.
        assert_eq!(
            check_dimensions(u32::MAX, u32::MAX, &l).unwrap_err().kind(),
            ErrorKind::LimitExceeded
        );
    }

    #[test]
    fn composite_on_white() {
        let img =
            image::RgbaImage::from_raw(3, 1, vec![255, 0, 0, 255, 255, 0, 0, 0, 255, 0, 0, 128])
                .unwrap();
        let rgb = to_rgb_on_white(DynamicImage::ImageRgba8(img));
        assert_eq!(
            rgb.into_raw(),
            vec![255, 0, 0, 255, 255, 255, 255, 127, 127]
        );
    }
}
