//! Image decoding: bytes -> upright 8-bit RGB, with size limits checked from the header before
//! any pixel buffer is allocated.
//!
//! Memory: every buffer sized by the input is bounded before it is allocated, and allocated
//! fallibly ([`ErrorKind::OutOfMemory`] instead of an abort):
//!
//! * `max_bytes` bounds the encoded input, `max_pixels` the header's width x height;
//! * the estimated peak of decoding + preprocessing one image (see [`estimate_peak`] and the
//!   format-specific terms below) is reserved from a [`DecodeBudget`] of `max_decode_bytes`
//!   before any pixel buffer exists: an image whose estimate is over the whole budget is refused
//!   ([`ErrorKind::LimitExceeded`]); parallel decoders of one batch share one budget and wait for
//!   each other when it is momentarily used up;
//! * the same estimate is handed to the `image` crate's decoders as `image::Limits::max_alloc`
//!   (and to `jpeg-decoder` as its decoding buffer limit), which bounds their internal buffers
//!   (GIF frame buffers, TIFF strips, PNG metadata chunks, WebP chunks).
//!
//! Animated GIF / APNG / WebP decode their first frame only (the other frames are never read);
//! a multi-page TIFF decodes its first page.

use std::io::{self, BufRead, Cursor, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use image::metadata::Orientation;
use image::{ColorType, DynamicImage, ImageBuffer, ImageDecoder, ImageError, ImageFormat};
use image::{ImageReader, RgbImage};

use crate::error::{try_with_capacity, try_zeroed, Error, ErrorKind, Result};

/// Formats this build decodes.
pub const SUPPORTED_FORMATS: &str = "JPEG, PNG, WebP, GIF, BMP, TIFF";

/// A progressive JPEG with more scans than this is refused ([`ErrorKind::LimitExceeded`]): every
/// scan is a pass over the whole coefficient buffer, so thousands of tiny scans make a "scan bomb"
/// that burns CPU for minutes. Real encoders write at most a few dozen (libjpeg's default
/// progression: 10; mozjpeg: up to about 20).
pub const MAX_JPEG_SCANS: usize = 100;

/// Fixed slack in every estimate: decoder state, Huffman/LZW tables, palettes, small metadata.
const ESTIMATE_SLACK: u64 = 2 << 20;

/// What a decoder may allocate while parsing the header, before the dimensions are known (ICC
/// profiles, text chunks, TIFF directories), on top of the input size.
const HEADER_ALLOC: u64 = 16 << 20;

fn header_allowance(ctx: &Ctx<'_, '_>) -> u64 {
    (HEADER_ALLOC + ctx.bytes.len() as u64).min(ctx.budget.total())
}

/// Input limits. `max_bytes` and `max_pixels` are checked before decoding starts;
/// `max_decode_bytes` bounds the memory decoding and preprocessing use at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted encoded size in bytes.
    pub max_bytes: usize,
    /// Largest accepted width x height, read from the file header.
    pub max_pixels: u64,
    /// The most memory (bytes) that decoding + preprocessing of one call may use at once: one
    /// image, or all the images a batch decodes in parallel together. An image whose estimated
    /// peak (from its header, see the module documentation) is over it is refused with
    /// [`ErrorKind::LimitExceeded`]; smaller ones wait for a share of it.
    pub max_decode_bytes: u64,
}

impl Default for Limits {
    /// 32 MiB, 40 megapixels (e.g. 8000 x 5000) and a 256 MiB decode budget (enough for a
    /// 40-megapixel RGB PNG or baseline JPEG; a 40-megapixel progressive JPEG or 16-bit PNG needs
    /// a larger budget).
    fn default() -> Self {
        Limits {
            max_bytes: 32 << 20,
            max_pixels: 40_000_000,
            max_decode_bytes: 256 << 20,
        }
    }
}

/// A memory budget shared by the decoders of one call. Each decode reserves its estimated peak
/// before allocating pixel buffers and releases it when its [`Reservation`] is dropped.
///
/// No deadlock: a decode holds at most one reservation, never waits while holding one, and no
/// single reservation is larger than the budget, so a waiting decode proceeds as soon as the
/// others finish.
#[derive(Debug)]
pub struct DecodeBudget {
    total: u64,
    used: Mutex<u64>,
    freed: Condvar,
    peak: AtomicU64,
}

impl DecodeBudget {
    pub fn new(total: u64) -> Self {
        DecodeBudget {
            total,
            used: Mutex::new(0),
            freed: Condvar::new(),
            peak: AtomicU64::new(0),
        }
    }

    /// The largest amount reserved at once so far (the sum of the estimates in use together).
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The whole budget.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes reserved right now.
    pub fn in_use(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserve `bytes`, waiting while other reservations use the budget. Fails at once with
    /// [`ErrorKind::LimitExceeded`] when `bytes` is over the whole budget, and with
    /// [`ErrorKind::Cancelled`] when `stop` is set while waiting.
    pub fn reserve(&self, bytes: u64, stop: &AtomicBool) -> Result<Reservation<'_>> {
        if bytes > self.total {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "decoding this image needs an estimated {} MiB, over the decode memory limit of {} MiB",
                    bytes.div_ceil(1 << 20),
                    self.total >> 20
                ),
            )
            .with_hint("raise the decode memory limit (max_decode_bytes) or send a smaller image"));
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used + bytes > self.total {
            if stop.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            used = self
                .freed
                .wait_timeout(used, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *used += bytes;
        self.peak.fetch_max(*used, Ordering::Relaxed);
        Ok(Reservation {
            budget: self,
            bytes,
        })
    }
}

/// A share of a [`DecodeBudget`], given back on drop.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a DecodeBudget,
    bytes: u64,
}

impl Reservation<'_> {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.bytes);
        drop(used);
        self.budget.freed.notify_all();
    }
}

fn cancelled() -> Error {
    Error::new(ErrorKind::Cancelled, "embedding was cancelled")
}

/// Decode `bytes` into an upright RGB image: EXIF orientation applied, alpha composited on white,
/// greyscale expanded to RGB, GIF/WebP/APNG animations reduced to their first frame.
///
/// `min_short_side`: when set, a JPEG may be decoded at a reduced DCT scale (1/2, 1/4, 1/8) as long
/// as its shorter side stays at least this long; other formats are always decoded at full size.
///
/// Memory is bounded by `limits.max_decode_bytes` (the estimate for this one image, decoding only).
pub fn decode_rgb(bytes: &[u8], limits: &Limits, min_short_side: Option<u32>) -> Result<RgbImage> {
    let budget = DecodeBudget::new(limits.max_decode_bytes);
    let stop = AtomicBool::new(false);
    decode_rgb_budgeted(bytes, limits, min_short_side, &budget, &stop, &|_, _| 0)
        .map(|(img, _)| img)
}

/// [`decode_rgb`] against a shared budget. `post(w, h)` is the extra memory the caller will use on
/// the decoded `w` x `h` image (preprocessing); it is part of the reservation, which the caller
/// holds until done with the image. `stop` aborts a decode in progress (the reader fails at its
/// next read) and a wait for the budget: the result is then [`ErrorKind::Cancelled`].
pub fn decode_rgb_budgeted<'b>(
    bytes: &[u8],
    limits: &Limits,
    min_short_side: Option<u32>,
    budget: &'b DecodeBudget,
    stop: &AtomicBool,
    post: &dyn Fn(u32, u32) -> u64,
) -> Result<(RgbImage, Reservation<'b>)> {
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
    let ctx = Ctx {
        bytes,
        limits,
        budget,
        stop,
        post,
    };
    // Decoders parse untrusted data: turn a decoder panic into an error rather than unwinding
    // through the caller.
    let result = catch_unwind(AssertUnwindSafe(|| match format {
        ImageFormat::Jpeg => decode_jpeg(&ctx, min_short_side),
        ImageFormat::Png
        | ImageFormat::WebP
        | ImageFormat::Gif
        | ImageFormat::Bmp
        | ImageFormat::Tiff => decode_with_image(&ctx, format, None),
        other => Err(Error::new(
            ErrorKind::Unsupported,
            format!("{} images are not supported", format_name(other)),
        )
        .with_hint(format!("supported formats: {SUPPORTED_FORMATS}"))),
    }));
    let result = match result {
        Ok(r) => r,
        Err(_) => Err(Error::invalid(format!(
            "the {} decoder failed on this input (corrupt image)",
            format_name(format)
        ))),
    };
    match result {
        Err(e) if stop.load(Ordering::Relaxed) && e.kind() != ErrorKind::LimitExceeded => {
            Err(cancelled())
        }
        r => r,
    }
}

struct Ctx<'a, 'b> {
    bytes: &'a [u8],
    limits: &'a Limits,
    budget: &'b DecodeBudget,
    stop: &'a AtomicBool,
    post: &'a dyn Fn(u32, u32) -> u64,
}

/// The input as a reader that fails as soon as `stop` is set, so that a long decode can be
/// abandoned (decoders read incrementally while they decode).
struct StopReader<'a> {
    inner: Cursor<&'a [u8]>,
    stop: &'a AtomicBool,
}

impl StopReader<'_> {
    fn check(&self) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            Err(io::Error::other("decoding cancelled"))
        } else {
            Ok(())
        }
    }
}

impl Read for StopReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.read(buf)
    }
}

impl BufRead for StopReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.check()?;
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
    }
}

impl Seek for StopReader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
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

/// Estimated peak bytes of turning a decoded `w` x `h` image with `native_bpp` bytes per pixel
/// into upright RGB8, excluding the decoder's own working memory: the native buffer, the RGB
/// conversion (`in_place` for RGB8/RGBA8, a second buffer otherwise) and a copy when the EXIF
/// orientation is not the identity; plus `post` for the caller's preprocessing of the result.
pub fn estimate_peak(
    w: u32,
    h: u32,
    native_bpp: u64,
    in_place: bool,
    rotated: bool,
    post: u64,
) -> u64 {
    let px = u64::from(w) * u64::from(h);
    let native = px * native_bpp;
    let rgb = px * 3;
    let convert = if in_place { native } else { native + rgb };
    let orient = if rotated { 2 * rgb } else { rgb };
    convert.max(orient).max(rgb + post) + ESTIMATE_SLACK
}

// ---------------------------------------------------------------------------------------------
// JPEG

/// What the marker scan of a JPEG found before decoding.
#[derive(Debug, Default, Clone)]
pub(crate) struct JpegLayout {
    pub scans: usize,
    pub progressive: bool,
    /// (horizontal, vertical) sampling factor of each component.
    pub components: Vec<(u8, u8)>,
    pub width: u32,
    pub height: u32,
}

/// Walk the JPEG markers (no decoding): count the scans and read the frame header.
pub(crate) fn jpeg_layout(b: &[u8]) -> JpegLayout {
    let mut out = JpegLayout::default();
    let mut i = 2; // after SOI
    while i + 1 < b.len() {
        if b[i] != 0xFF {
            i += 1;
            continue;
        }
        let m = b[i + 1];
        i += 2;
        match m {
            0xFF => i -= 1, // fill byte
            0x00 | 0x01 | 0xD0..=0xD7 => {}
            0xD9 => break,
            _ => {
                if i + 1 >= b.len() {
                    break;
                }
                let len = usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
                let seg = &b[i..b.len().min(i + len)];
                if matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC) && seg.len() >= 8 {
                    out.progressive |= matches!(m, 0xC2 | 0xC6 | 0xCA | 0xCE);
                    out.height = u32::from(u16::from_be_bytes([seg[3], seg[4]]));
                    out.width = u32::from(u16::from_be_bytes([seg[5], seg[6]]));
                    let n = usize::from(seg[7]);
                    out.components = (0..n)
                        .filter_map(|c| seg.get(8 + c * 3 + 1))
                        .map(|&s| ((s >> 4).max(1), (s & 15).max(1)))
                        .collect();
                }
                i += len.max(2);
                if m == 0xDA {
                    out.scans += 1;
                    // Skip the entropy-coded data up to the next real marker.
                    while i + 1 < b.len()
                        && !(b[i] == 0xFF && b[i + 1] != 0 && !(0xD0..=0xD7).contains(&b[i + 1]))
                    {
                        i += 1;
                    }
                }
            }
        }
    }
    out
}

/// jpeg-decoder's buffers for a frame: per component, its blocks padded to whole MCUs; `dct` is
/// the decoded block side (8 at full scale, 4/2/1 when DCT-scaled).
fn jpeg_component_bytes(l: &JpegLayout, per_block: u64) -> u64 {
    let hmax = u64::from(l.components.iter().map(|c| c.0).max().unwrap_or(1));
    let vmax = u64::from(l.components.iter().map(|c| c.1).max().unwrap_or(1));
    let mcux = u64::from(l.width).div_ceil(8 * hmax);
    let mcuy = u64::from(l.height).div_ceil(8 * vmax);
    l.components
        .iter()
        .map(|&(h, v)| mcux * u64::from(h) * mcuy * u64::from(v) * per_block)
        .sum()
}

fn decode_jpeg<'b>(
    ctx: &Ctx<'_, 'b>,
    min_short_side: Option<u32>,
) -> Result<(RgbImage, Reservation<'b>)> {
    let layout = jpeg_layout(ctx.bytes);
    if layout.scans > MAX_JPEG_SCANS {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "JPEG has {} scans, over the limit of {MAX_JPEG_SCANS}",
                layout.scans
            ),
        )
        .with_hint("re-encode the image (a normal progressive JPEG has about 10 scans)"));
    }
    let reader = StopReader {
        inner: Cursor::new(ctx.bytes),
        stop: ctx.stop,
    };
    let mut dec = jpeg_decoder::Decoder::new(reader);
    dec.read_info().map_err(jpeg_error)?;
    let info = dec
        .info()
        .ok_or_else(|| Error::invalid("JPEG header could not be read"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    check_dimensions(w, h, ctx.limits)?;
    if info.pixel_format == jpeg_decoder::PixelFormat::CMYK32 || layout.components.len() > 3 {
        // The image crate's decoder converts CMYK (including Adobe's inverted form) to RGB.
        return decode_with_image(ctx, ImageFormat::Jpeg, Some(&layout));
    }
    let (mut ow, mut oh) = (w, h);
    if let Some(min) = min_short_side {
        let min = u16::try_from(min).unwrap_or(u16::MAX);
        // `scale` picks the smallest 1/8..1 scale whose output reaches the request on at least one
        // axis: ask on the shorter axis only.
        let (rw, rh) = if info.width <= info.height {
            (min, u16::MAX)
        } else {
            (u16::MAX, min)
        };
        let (sw, sh) = dec.scale(rw, rh).map_err(jpeg_error)?;
        (ow, oh) = (u32::from(sw), u32::from(sh));
    }
    // Estimate from the marker scan (falls back to the decoder's header when the scan missed it).
    let mut l = layout;
    if l.components.is_empty() || (l.width, l.height) != (w, h) {
        l.width = w;
        l.height = h;
        l.components = vec![(1, 1); 3];
    }
    let ncomp = l.components.len().max(1) as u64;
    let dct = u64::from(8 * ow / w.max(1)).clamp(1, 8);
    let coefficients = if l.progressive {
        jpeg_component_bytes(&l, 128)
    } else {
        0
    };
    let planes = jpeg_component_bytes(&l, dct * dct * 2); // u8 planes (u16 for 16-bit lossless)
    let output = u64::from(ow) * u64::from(oh) * ncomp * 2;
    let decoder = coefficients + planes + output;
    let rotated = jpeg_orientation_hint(ctx.bytes);
    let post = (ctx.post)(ow, oh).max((ctx.post)(oh, ow));
    let need = decoder + estimate_peak(ow, oh, 3, true, rotated, post);
    let reservation = ctx.budget.reserve(need, ctx.stop)?;
    dec.set_max_decoding_buffer_size(usize::try_from(output).unwrap_or(usize::MAX));
    let pixels = match dec.decode() {
        Ok(p) => p,
        Err(jpeg_decoder::Error::Unsupported(_)) => {
            drop(reservation);
            return decode_with_image(ctx, ImageFormat::Jpeg, Some(&l));
        }
        Err(e) => return Err(jpeg_error(e)),
    };
    let info = dec
        .info()
        .ok_or_else(|| Error::invalid("JPEG header could not be read"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let n = w as usize * h as usize;
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 if pixels.len() >= n * 3 => {
            let mut p = pixels;
            p.truncate(n * 3);
            p
        }
        jpeg_decoder::PixelFormat::L8 if pixels.len() >= n => grey_to_rgb(&pixels[..n], 1)?,
        jpeg_decoder::PixelFormat::L16 if pixels.len() >= n * 2 => {
            // 16-bit lossless greyscale, big-endian samples: keep the high byte.
            grey_to_rgb(&pixels[..n * 2], 2)?
        }
        _ => return Err(Error::invalid("JPEG decoder returned a short pixel buffer")),
    };
    let img = RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| Error::invalid("JPEG decoder returned a short pixel buffer"))?;
    let orientation = dec
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    Ok((orient(img, orientation)?, reservation))
}

/// Whether an EXIF orientation that swaps the axes may be present (conservative: any APP1 EXIF).
fn jpeg_orientation_hint(b: &[u8]) -> bool {
    b.windows(6).take(1 << 16).any(|w| w == b"Exif\0\0")
}

/// Grey samples (`step` bytes each, first byte used) to RGB8.
fn grey_to_rgb(src: &[u8], step: usize) -> Result<Vec<u8>> {
    let mut out = try_with_capacity::<u8>(src.len() / step * 3, "the RGB image")?;
    for s in src.chunks_exact(step) {
        out.extend_from_slice(&[s[0]; 3]);
    }
    Ok(out)
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

// ---------------------------------------------------------------------------------------------
// PNG, WebP, GIF, BMP, TIFF (and CMYK JPEG) through the image crate

/// The decoder's own working memory beyond its output buffer, per format.
fn image_decoder_working(
    format: ImageFormat,
    w: u32,
    h: u32,
    native: u64,
    input: u64,
    jpeg: Option<&JpegLayout>,
) -> u64 {
    let px = u64::from(w) * u64::from(h);
    let row = u64::from(w) * 16;
    match format {
        // Two rows (current + previous, up to 16 bytes/px) and the inflate window; interlaced
        // images are expanded row by row into the output.
        ImageFormat::Png => 4 * row,
        // A frame that does not cover the screen is decoded into its own buffer first.
        ImageFormat::Gif => native,
        // RLE and bit-packed rows go through a row buffer; be generous.
        ImageFormat::Bmp => native / 2 + 4 * row,
        // One strip or tile, compressed (at most the input) and decompressed (at most the image).
        ImageFormat::Tiff => native + input,
        // Lossless: ARGB u32 per pixel; lossy: YUV 4:2:0 planes; plus the chunk itself.
        ImageFormat::WebP => 4 * px + input,
        // zune-jpeg: a copy of the input, the coefficients (progressive) and the component planes.
        ImageFormat::Jpeg => {
            let l = jpeg.cloned().unwrap_or_default();
            let comps = if l.components.is_empty() {
                4 * px * 3
            } else {
                jpeg_component_bytes(&l, 64 * 3)
            };
            input + comps + native
        }
        _ => native + input,
    }
}

fn decode_with_image<'b>(
    ctx: &Ctx<'_, 'b>,
    format: ImageFormat,
    jpeg: Option<&JpegLayout>,
) -> Result<(RgbImage, Reservation<'b>)> {
    let name = format_name(format);
    let reader = StopReader {
        inner: Cursor::new(ctx.bytes),
        stop: ctx.stop,
    };
    let mut reader = ImageReader::with_format(reader, format);
    // Header parsing (PNG text/ICC chunks, TIFF directories, WebP chunks) may allocate before the
    // dimensions are known: bound it by HEADER_ALLOC plus the input size (never more than the
    // budget); the reservation made once the dimensions are known includes that allowance.
    let header = header_allowance(ctx);
    let mut lim = image::Limits::default();
    lim.max_alloc = Some(header);
    reader.limits(lim);
    let mut dec = reader.into_decoder().map_err(|e| image_error(e, &name))?;
    let (w, h) = dec.dimensions();
    check_dimensions(w, h, ctx.limits)?;
    let color = dec.color_type();
    let bpp = u64::from(color.bytes_per_pixel());
    let native = dec.total_bytes();
    if native != u64::from(w) * u64::from(h) * bpp {
        return Err(Error::invalid(format!(
            "{name} decoder reports an inconsistent size"
        )));
    }
    let orientation = dec.orientation().unwrap_or(Orientation::NoTransforms);
    let rotated = orientation != Orientation::NoTransforms;
    // A metadata chunk inflated up to the allowance may have grown its buffer by doubling: 2x.
    let working =
        2 * header + image_decoder_working(format, w, h, native, ctx.bytes.len() as u64, jpeg);
    let post = (ctx.post)(w, h).max((ctx.post)(h, w));
    let in_place = matches!(color, ColorType::Rgb8 | ColorType::Rgba8);
    let need = working + estimate_peak(w, h, bpp, in_place, rotated, post);
    let reservation = ctx.budget.reserve(need, ctx.stop)?;
    // The decoder's own allocations (frame and strip buffers) are bounded by its share.
    let mut lim = image::Limits::default();
    lim.max_alloc = Some(working + native + ESTIMATE_SLACK);
    dec.set_limits(lim).map_err(|e| image_error(e, &name))?;
    let rgb = read_rgb(dec, color, w, h, &name)?;
    let img = RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| Error::invalid(format!("{name} decoder returned a short pixel buffer")))?;
    Ok((orient(img, orientation)?, reservation))
}

/// Read the pixels into a fallibly allocated buffer of the decoder's native type and flatten them
/// to RGB8 (alpha over white, grey replicated) with as few extra buffers as possible.
fn read_rgb(
    dec: impl ImageDecoder,
    color: ColorType,
    w: u32,
    h: u32,
    name: &str,
) -> Result<Vec<u8>> {
    let px = w as usize * h as usize;
    let err = |e| image_error(e, name);
    match color {
        ColorType::Rgb8 | ColorType::Rgba8 | ColorType::L8 | ColorType::La8 => {
            let mut buf =
                try_zeroed::<u8>(px * color.bytes_per_pixel() as usize, "the decoded image")?;
            dec.read_image(&mut buf).map_err(err)?;
            Ok(match color {
                ColorType::Rgb8 => buf,
                ColorType::Rgba8 => {
                    rgba_to_rgb_in_place(&mut buf);
                    buf
                }
                ColorType::L8 => grey_to_rgb(&buf, 1)?,
                _ => {
                    let mut out = try_with_capacity::<u8>(px * 3, "the RGB image")?;
                    for p in buf.chunks_exact(2) {
                        let v = over_white(p[0], p[1]);
                        out.extend_from_slice(&[v; 3]);
                    }
                    out
                }
            })
        }
        ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16 => {
            let ch = color.channel_count() as usize;
            let mut buf = try_zeroed::<u16>(px * ch, "the decoded image")?;
            dec.read_image(as_bytes_mut(&mut buf)).map_err(err)?;
            convert_chunks(&buf, ch, px, |c, n| {
                let b = c.to_vec();
                match color {
                    ColorType::L16 => ImageBuffer::from_raw(n, 1, b).map(DynamicImage::ImageLuma16),
                    ColorType::La16 => {
                        ImageBuffer::from_raw(n, 1, b).map(DynamicImage::ImageLumaA16)
                    }
                    ColorType::Rgb16 => {
                        ImageBuffer::from_raw(n, 1, b).map(DynamicImage::ImageRgb16)
                    }
                    _ => ImageBuffer::from_raw(n, 1, b).map(DynamicImage::ImageRgba16),
                }
            })
        }
        ColorType::Rgb32F | ColorType::Rgba32F => {
            let ch = color.channel_count() as usize;
            let mut buf = try_zeroed::<f32>(px * ch, "the decoded image")?;
            dec.read_image(as_bytes_mut(&mut buf)).map_err(err)?;
            convert_chunks(&buf, ch, px, |c, n| {
                let b = c.to_vec();
                if ch == 3 {
                    ImageBuffer::from_raw(n, 1, b).map(DynamicImage::ImageRgb32F)
                } else {
                    ImageBuffer::from_raw(n, 1, b).map(DynamicImage::ImageRgba32F)
                }
            })
        }
        other => Err(Error::new(
            ErrorKind::Unsupported,
            format!("unsupported {name} pixel type {other:?}"),
        )),
    }
}

/// Plain-old-data samples viewed as bytes, for decoders that fill native-endian buffers.
trait Pod: Copy {}
impl Pod for u16 {}
impl Pod for f32 {}

fn as_bytes_mut<T: Pod>(v: &mut [T]) -> &mut [u8] {
    let len = std::mem::size_of_val(v);
    // SAFETY: `T` is u16 or f32 (the `Pod` impls): no padding and every bit pattern is a valid
    // value, so viewing the initialised slice as `len` bytes (alignment 1) and writing arbitrary
    // bytes through it is sound; the view borrows `v` mutably for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), len) }
}

/// Convert 16-bit / float pixels to RGB8 through the image crate's own conversions, a chunk of
/// pixels at a time (so the temporary buffers stay small whatever the image size).
fn convert_chunks<T: Copy>(
    buf: &[T],
    ch: usize,
    px: usize,
    make: impl Fn(&[T], u32) -> Option<DynamicImage>,
) -> Result<Vec<u8>> {
    const CHUNK: usize = 16384;
    let mut out = try_with_capacity::<u8>(px * 3, "the RGB image")?;
    for c in buf.chunks(CHUNK * ch) {
        let n = (c.len() / ch) as u32;
        let img =
            make(c, n).ok_or_else(|| Error::invalid("decoder returned a short pixel buffer"))?;
        if img.color().has_alpha() {
            let rgba = img.to_rgba8();
            for p in rgba.as_raw().chunks_exact(4) {
                out.extend_from_slice(&[
                    over_white(p[0], p[3]),
                    over_white(p[1], p[3]),
                    over_white(p[2], p[3]),
                ]);
            }
        } else {
            out.extend_from_slice(img.to_rgb8().as_raw());
        }
    }
    Ok(out)
}

/// Rounded `(c * a + 255 * (255 - a)) / 255`.
#[inline]
fn over_white(c: u8, a: u8) -> u8 {
    let (c, a) = (u32::from(c), u32::from(a));
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

/// RGBA8 -> RGB8 on white, in the same buffer (truncated to 3 bytes per pixel).
fn rgba_to_rgb_in_place(buf: &mut Vec<u8>) {
    let px = buf.len() / 4;
    for i in 0..px {
        // Pixel i is read (bytes 4i..4i+4) before bytes 3i..3i+3 (<= 4i+3) are written, and no
        // later pixel is overwritten: 3i+3 <= 4(i+1).
        let (r, g, b, a) = (buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]);
        buf[3 * i] = over_white(r, a);
        buf[3 * i + 1] = over_white(g, a);
        buf[3 * i + 2] = over_white(b, a);
    }
    buf.truncate(px * 3);
}

/// Apply an EXIF orientation (same result as `DynamicImage::apply_orientation`), allocating the
/// rotated copy fallibly.
pub(crate) fn orient(img: RgbImage, o: Orientation) -> Result<RgbImage> {
    let (w, h) = img.dimensions();
    let (wu, hu) = (w as usize, h as usize);
    // Output size and the source pixel of output (x, y).
    type SourceOf = Box<dyn Fn(usize, usize) -> (usize, usize)>;
    let (ow, oh, map): (u32, u32, SourceOf) = match o {
        Orientation::NoTransforms => return Ok(img),
        Orientation::Rotate90 => (h, w, Box::new(move |x, y| (y, hu - 1 - x))),
        Orientation::Rotate180 => (w, h, Box::new(move |x, y| (wu - 1 - x, hu - 1 - y))),
        Orientation::Rotate270 => (h, w, Box::new(move |x, y| (wu - 1 - y, x))),
        Orientation::FlipHorizontal => (w, h, Box::new(move |x, y| (wu - 1 - x, y))),
        Orientation::FlipVertical => (w, h, Box::new(move |x, y| (x, hu - 1 - y))),
        Orientation::Rotate90FlipH => (h, w, Box::new(move |x, y| (y, x))),
        Orientation::Rotate270FlipH => (h, w, Box::new(move |x, y| (wu - 1 - y, hu - 1 - x))),
    };
    let src = img.as_raw();
    let mut out = try_with_capacity::<u8>(src.len(), "the rotated image")?;
    for y in 0..oh as usize {
        for x in 0..ow as usize {
            let (sx, sy) = map(x, y);
            let i = (sy * wu + sx) * 3;
            out.extend_from_slice(&src[i..i + 3]);
        }
    }
    RgbImage::from_raw(ow, oh, out).ok_or_else(|| Error::invalid("orientation: bad buffer"))
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
        .with_hint("raise the max_pixels / max_decode_bytes limits or downscale the image"),
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
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut buf = rgba.into_raw();
    rgba_to_rgb_in_place(&mut buf);
    RgbImage::from_raw(w, h, buf).expect("buffer sized for w*h*3")
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
            ..Limits::default()
        };
        let e = decode_rgb(&[0u8; 11], &l, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    }

    #[test]
    fn dimensions() {
        let l = Limits {
            max_bytes: 1,
            max_pixels: 100,
            ..Limits::default()
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

    #[test]
    fn orientation_matches_the_image_crate() {
        let (w, h) = (5u32, 3u32);
        let raw: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let img = RgbImage::from_raw(w, h, raw).unwrap();
        for tag in 1..=8u8 {
            let o = Orientation::from_exif(tag).unwrap();
            let mut want = DynamicImage::ImageRgb8(img.clone());
            want.apply_orientation(o);
            let got = orient(img.clone(), o).unwrap();
            let want = want.to_rgb8();
            assert_eq!(got.dimensions(), want.dimensions(), "tag {tag}");
            assert_eq!(got.as_raw(), want.as_raw(), "tag {tag}");
        }
    }

    #[test]
    fn budget_refuses_oversize_and_waits_for_release() {
        let b = DecodeBudget::new(100);
        let stop = AtomicBool::new(false);
        assert_eq!(
            b.reserve(101, &stop).unwrap_err().kind(),
            ErrorKind::LimitExceeded
        );
        let r = b.reserve(60, &stop).unwrap();
        assert_eq!(b.in_use(), 60);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let r2 = b.reserve(60, &stop).unwrap();
                r2.bytes()
            });
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(b.in_use(), 60, "second reservation waits");
            drop(r);
            assert_eq!(t.join().unwrap(), 60);
        });
        assert_eq!(b.in_use(), 0);
        // A waiter gives up when stopped.
        let _r = b.reserve(60, &stop).unwrap();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(
            b.reserve(60, &stop).unwrap_err().kind(),
            ErrorKind::Cancelled
        );
    }

    #[test]
    fn jpeg_marker_scan() {
        let l = jpeg_layout(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/fixtures/formats/chelsea.jpg"
            ))
            .unwrap(),
        );
        assert_eq!(l.scans, 1);
        assert!(!l.progressive);
        assert_eq!((l.width, l.height), (150, 100));
        assert_eq!(l.components.len(), 3);
    }
}
