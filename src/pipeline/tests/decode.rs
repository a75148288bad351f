//! Decoding and preprocessing on the committed fixtures (no ONNX Runtime needed).

mod common;

use common::fixture;
use image::RgbImage;
use imgsim_pipeline::{decode_rgb, ErrorKind, Limits, ModelSpec, Preprocessor};

fn decode(rel: &str) -> RgbImage {
    decode_rgb(&fixture(rel), &Limits::default(), None).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let s: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    s as f64 / a.as_raw().len() as f64
}

#[test]
fn every_supported_format_decodes_to_the_same_picture() {
    let png = decode("formats/chelsea.png");
    assert_eq!(png.dimensions(), (150, 100));
    // Lossless formats are identical to the PNG.
    for f in [
        "formats/chelsea.bmp",
        "formats/chelsea.tiff",
        "formats/chelsea.webp",
    ] {
        let img = decode(f);
        assert_eq!(img.as_raw(), png.as_raw(), "{f}");
    }
    // Lossy / palette formats are close.
    let jpg = decode("formats/chelsea.jpg");
    assert!(
        mean_abs_diff(&jpg, &png) < 3.0,
        "jpeg differs by {}",
        mean_abs_diff(&jpg, &png)
    );
    let gif = decode("formats/chelsea.gif");
    let d = mean_abs_diff(&gif, &png);
    // The second GIF frame is black: a first-frame decode stays close to the picture.
    assert!(d < 6.0, "gif differs by {d}");
    let mean: f64 =
        gif.as_raw().iter().map(|&v| f64::from(v)).sum::<f64>() / gif.as_raw().len() as f64;
    assert!(mean > 60.0, "gif first frame expected, mean {mean}");
}

#[test]
fn exif_orientation_is_applied() {
    let up = decode("exif/upright.jpg");
    assert_eq!(up.dimensions(), (96, 64));
    for tag in [2, 3, 6, 8] {
        let bytes = fixture(&format!("exif/orientation{tag}.jpg"));
        let img = decode_rgb(&bytes, &Limits::default(), None).unwrap();
        assert_eq!(img.dimensions(), (96, 64), "orientation {tag}");
        let d = mean_abs_diff(&img, &up);
        assert!(
            d < 2.5,
            "orientation {tag}: mean abs diff {d} to the upright image"
        );
    }
    // Sanity: without applying the tag, orientation 3 (180 degrees) would be far off.
    let raw = image::load_from_memory_with_format(
        &fixture("exif/orientation3.jpg"),
        image::ImageFormat::Jpeg,
    )
    .unwrap()
    .to_rgb8();
    assert!(mean_abs_diff(&raw, &up) > 10.0);
}

#[test]
fn alpha_is_composited_on_white() {
    for f in ["alpha/rgba.png", "alpha/rgba.webp"] {
        let img = decode(f);
        assert_eq!(img.get_pixel(3, 5).0, [255, 0, 0], "{f}: opaque red");
        assert_eq!(
            img.get_pixel(25, 5).0,
            [255, 255, 255],
            "{f}: transparent -> white"
        );
        // (0,255,0) at alpha 128 over white: 255 * 127 / 255 = 127
        let p = img.get_pixel(15, 5).0;
        assert!(
            p[1] == 255 && (126..=128).contains(&p[0]) && p[0] == p[2],
            "{f}: half green {p:?}"
        );
    }
    let pal = decode("alpha/palette_trns.png");
    assert_eq!(
        pal.get_pixel(2, 2).0,
        [255, 255, 255],
        "transparent palette index -> white"
    );
    assert_eq!(pal.get_pixel(12, 2).0, [200, 30, 40]);
}

#[test]
fn greyscale_becomes_rgb() {
    for f in ["grey/chelsea_l.png", "grey/chelsea_l.jpg"] {
        let img = decode(f);
        assert_eq!(img.dimensions(), (150, 100));
        assert!(
            img.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]),
            "{f}"
        );
        let colour = decode("formats/chelsea.png");
        let luma: Vec<f64> = colour
            .pixels()
            .map(|p| {
                0.299 * f64::from(p.0[0]) + 0.587 * f64::from(p.0[1]) + 0.114 * f64::from(p.0[2])
            })
            .collect();
        let d: f64 = img
            .pixels()
            .zip(&luma)
            .map(|(p, l)| (f64::from(p.0[0]) - l).abs())
            .sum::<f64>()
            / luma.len() as f64;
        assert!(d < 3.0, "{f}: grey differs from luma by {d}");
    }
}

#[test]
fn limits_refuse_huge_headers_before_decoding() {
    let l = Limits::default();
    for f in [
        "limits/bomb_100000x100000.png",
        "limits/bomb_60000x60000.jpg",
        "limits/bomb_60000x60000.gif",
    ] {
        let e = decode_rgb(&fixture(f), &l, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{f}: {e}");
        assert!(e.message().contains("pixels"), "{f}: {e}");
        assert!(e.hint().is_some());
    }
    // A tight pixel limit refuses an ordinary image, a loose one accepts it.
    let png = fixture("formats/chelsea.png");
    let tight = Limits {
        max_pixels: 150 * 100 - 1,
        ..l
    };
    assert_eq!(
        decode_rgb(&png, &tight, None).unwrap_err().kind(),
        ErrorKind::LimitExceeded
    );
    assert!(decode_rgb(
        &png,
        &Limits {
            max_pixels: 150 * 100,
            ..l
        },
        None
    )
    .is_ok());
    // Byte limit.
    let small = Limits {
        max_bytes: png.len() - 1,
        ..l
    };
    let e = decode_rgb(&png, &small, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    assert!(e.message().contains("bytes"));
}

#[test]
fn truncated_files_are_invalid_input() {
    for f in [
        "formats/chelsea.jpg",
        "formats/chelsea.png",
        "formats/chelsea.webp",
        "formats/chelsea.gif",
        "formats/chelsea.bmp",
        "formats/chelsea.tiff",
        "parity/farm_cat.jpg",
    ] {
        let bytes = fixture(f);
        for cut in [bytes.len() / 2, 40] {
            let r = decode_rgb(&bytes[..cut], &Limits::default(), Some(256));
            let e = r.expect_err(&format!("{f} cut at {cut} bytes must not decode"));
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{f} cut at {cut}: {e}");
        }
    }
}

#[test]
fn not_an_image_empty_and_unsupported() {
    let l = Limits::default();
    let e = decode_rgb(&fixture("formats/not_an_image.txt"), &l, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("not a recognised image"), "{e}");
    let e = decode_rgb(&[], &l, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("empty"), "{e}");
    let e = decode_rgb(&fixture("formats/chelsea.ppm"), &l, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.hint().unwrap().contains("WebP"));
}

#[test]
fn jpeg_dct_scaling_keeps_the_needed_resolution() {
    let bytes = fixture("parity/farm_cat.jpg"); // 1024x768
    let full = decode_rgb(&bytes, &Limits::default(), None).unwrap();
    assert_eq!(full.dimensions(), (1024, 768));
    let scaled = decode_rgb(&bytes, &Limits::default(), Some(256)).unwrap();
    assert_eq!(scaled.dimensions(), (512, 384)); // 1/2: 1/4 would give a 192-px short side
    let portrait = decode_rgb(
        &fixture("parity/statue_of_liberty.jpg"),
        &Limits::default(),
        Some(256),
    )
    .unwrap();
    assert_eq!(portrait.dimensions(), (384, 512));
    let pre_min = Preprocessor::new(&spec("center", "rgb")).min_decode_short_side();
    assert_eq!(pre_min, 3 * 256);
    // farm_cat's 768-px short side is not enough for that margin: decoded at full size.
    let full2 = decode_rgb(&bytes, &Limits::default(), Some(pre_min)).unwrap();
    assert_eq!(full2.dimensions(), (1024, 768));
    // Small images are never scaled.
    let small = decode_rgb(&fixture("parity/coffee.jpg"), &Limits::default(), Some(256)).unwrap();
    assert_eq!(small.dimensions(), (600, 400));
}

fn spec(crop: &str, order: &str) -> ModelSpec {
    ModelSpec::from_json(&format!(
        r#"{{"format":1,"name":"t","weights":"x","input_name":"input","output_name":"embedding",
            "input_width":224,"input_height":224,"resize_shorter":256,"crop":"{crop}","channel_order":"{order}",
            "layout":"nchw","normalize":{{"mean":[127.0,127.0,127.0],"std":[128.0,128.0,128.0]}},"dims":4}}"#
    ))
    .unwrap()
}

#[test]
fn preprocess_layout_and_normalisation() {
    // A flat colour image: every output value is known exactly.
    let img = RgbImage::from_pixel(300, 200, image::Rgb([255, 127, 0]));
    let pre = Preprocessor::new(&spec("center", "rgb"));
    let mut out = vec![0f32; pre.tensor_len()];
    pre.process_image(&img, &mut out).unwrap();
    let plane = 224 * 224;
    assert!(out[..plane]
        .iter()
        .all(|&v| (v - 128.0 / 128.0).abs() < 1e-6));
    assert!(out[plane..2 * plane].iter().all(|&v| v.abs() < 1e-6));
    assert!(out[2 * plane..]
        .iter()
        .all(|&v| (v + 127.0 / 128.0).abs() < 1e-6));
    let pre_bgr = Preprocessor::new(&spec("none", "bgr"));
    pre_bgr.process_image(&img, &mut out).unwrap();
    assert!(
        out[..plane]
            .iter()
            .all(|&v| (v + 127.0 / 128.0).abs() < 1e-6),
        "B first"
    );
    // Wrong buffer size is refused.
    assert!(pre.process_image(&img, &mut out[1..]).is_err());
}
