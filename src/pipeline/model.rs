//! Model specification (`<model_dir>/<name>.json`) and the model directory.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// How the resized image is brought to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crop {
    /// Resize the shorter side to `resize_shorter`, then cut the centre `input_width` x `input_height`
    /// (torchvision `Resize(resize_shorter)` + `CenterCrop((h, w))`).
    Center,
    /// Resize straight to `input_width` x `input_height` (aspect ratio not kept).
    None,
}

/// Channel order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Memory layout of the input tensor. Only NCHW is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
}

/// Per-channel normalisation on 0..255 pixel values: `(p - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// The model spec file, `<model_dir>/<name>.json` (format 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub format: u32,
    pub name: String,
    /// "imagenet" | "torchvision-user-supplied" | "random (speed tests only)" | free text.
    pub weights: String,
    pub input_name: String,
    pub output_name: String,
    pub input_width: u32,
    pub input_height: u32,
    pub resize_shorter: u32,
    pub crop: Crop,
    pub channel_order: ChannelOrder,
    pub layout: Layout,
    pub normalize: Normalize,
    pub dims: usize,
    #[serde(default)]
    pub source: String,
}

/// Largest accepted input side (a sanity bound on the spec, not on the images).
const MAX_INPUT_SIDE: u32 = 4096;

impl ModelSpec {
    /// Parse and validate a spec from JSON text.
    pub fn from_json(text: &str) -> Result<ModelSpec> {
        let spec: ModelSpec = serde_json::from_str(text).map_err(|e| {
            Error::new(
                ErrorKind::ModelInvalid,
                format!("model spec is not valid: {e}"),
            )
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Check the values a JSON parser cannot check.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(Error::new(
                ErrorKind::ModelInvalid,
                format!("model spec \"{}\": {m}", self.name),
            ))
        };
        if self.format != 1 {
            return bad(format!(
                "unknown format {} (this build reads format 1)",
                self.format
            ));
        }
        if !is_valid_model_name(&self.name) {
            return bad("\"name\" must match [A-Za-z0-9_]{1,63}".into());
        }
        for (what, v) in [
            ("input_width", self.input_width),
            ("input_height", self.input_height),
            ("resize_shorter", self.resize_shorter),
        ] {
            if v == 0 || v > MAX_INPUT_SIDE {
                return bad(format!("\"{what}\" = {v} is outside 1..={MAX_INPUT_SIDE}"));
            }
        }
        if self.dims == 0 || self.dims > 65535 {
            return bad(format!("\"dims\" = {} is outside 1..=65535", self.dims));
        }
        if self.input_name.is_empty() || self.output_name.is_empty() {
            return bad("\"input_name\" and \"output_name\" must not be empty".into());
        }
        for c in 0..3 {
            let (m, s) = (self.normalize.mean[c], self.normalize.std[c]);
            if !m.is_finite() || !s.is_finite() || s == 0.0 {
                return bad(format!(
                    "normalize channel {c}: mean {m} / std {s} must be finite with std != 0"
                ));
            }
        }
        Ok(())
    }
}

/// `true` when `name` is a plain identifier `[A-Za-z0-9_]{1,63}`, so that it can never name a path
/// outside the model directory.
pub fn is_valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// One entry of [`ModelRegistry::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    pub dims: usize,
    pub weights: String,
    /// `true` when `<name>.onnx` exists beside the JSON.
    pub has_onnx: bool,
    /// SHA-256 of `<name>.onnx`, lowercase hex (64 characters); `None` without a readable ONNX
    /// file. Cached per process by file identity, so listing again is cheap.
    pub onnx_sha256: Option<String>,
}

/// Identity of a file on disk: (device, inode, size, modification time in ns). A file replaced
/// or rewritten in place gets a new identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileId {
    /// The identity of `path`, following symlinks; `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<FileId> {
        let m = fs::metadata(path).ok()?;
        if !m.is_file() {
            return None;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(FileId {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            })
        }
        #[cfg(not(unix))]
        {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            Some(FileId {
                dev: 0,
                ino: 0,
                size: m.len(),
                mtime_ns: mtime,
            })
        }
    }
}

/// SHA-256 (lowercase hex) of the file at `path`, cached per process by [`FileId`].
pub fn file_sha256(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::io::Read;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<FileId, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let id = FileId::of(path)?;
    if let Some(h) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return Some(h.clone());
    }
    let mut f = fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // The file may have changed while it was read: only cache under an unchanged identity.
    if FileId::of(path) == Some(id) {
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= 256 {
            c.clear();
        }
        c.insert(id, hex.clone());
    }
    Some(hex)
}

/// A directory of `<name>.json` + `<name>.onnx` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRegistry {
    dir: PathBuf,
}

impl ModelRegistry {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelRegistry { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        if !is_valid_model_name(name) {
            return Err(Error::new(
                ErrorKind::ModelMissing,
                format!("\"{}\" is not a valid model name", name.escape_default()),
            )
            .with_hint("model names are plain identifiers: letters, digits and underscores, at most 63 characters"));
        }
        Ok((
            self.dir.join(format!("{name}.json")),
            self.dir.join(format!("{name}.onnx")),
        ))
    }

    /// Path of the ONNX file of model `name` (the name is validated; the file may not exist).
    pub fn onnx_path(&self, name: &str) -> Result<PathBuf> {
        self.paths(name).map(|p| p.1)
    }

    /// Path of the JSON spec of model `name` (the name is validated; the file may not exist).
    pub fn json_path(&self, name: &str) -> Result<PathBuf> {
        self.paths(name).map(|p| p.0)
    }

    /// SHA-256 (lowercase hex) of `<name>.onnx` as it is on disk now.
    pub fn fingerprint(&self, name: &str) -> Result<String> {
        let onnx = self.onnx_path(name)?;
        file_sha256(&onnx).ok_or_else(|| {
            Error::new(
                ErrorKind::ModelMissing,
                format!("model \"{name}\" has no readable ONNX file"),
            )
            .with_log_detail(format!("cannot read {}", onnx.display()))
        })
    }

    /// Read and validate `<name>.json`; check that `<name>.onnx` exists.
    pub fn load_spec(&self, name: &str) -> Result<ModelSpec> {
        let (json, onnx) = self.paths(name)?;
        let text = match fs::read_to_string(&json) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let available: Vec<String> = self
                    .list()
                    .map(|l| l.into_iter().map(|m| m.name).collect())
                    .unwrap_or_default();
                let hint = if available.is_empty() {
                    "no models are installed in the model directory".to_string()
                } else {
                    format!("available models: {}", available.join(", "))
                };
                return Err(Error::new(
                    ErrorKind::ModelMissing,
                    format!("model \"{name}\" not found"),
                )
                .with_hint(hint)
                .with_log_detail(format!("{} does not exist", json.display())));
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::ModelMissing,
                    format!("cannot read the spec of model \"{name}\": {}", e.kind()),
                )
                .with_log_detail(format!("cannot read {}: {e}", json.display())));
            }
        };
        let spec = ModelSpec::from_json(&text).map_err(|e| {
            Error::new(
                ErrorKind::ModelInvalid,
                format!("model \"{name}\": {}", e.message()),
            )
            .with_log_detail(format!("in {}", json.display()))
        })?;
        if spec.name != name {
            return Err(Error::new(
                ErrorKind::ModelInvalid,
                format!(
                    "model \"{name}\": the spec's \"name\" is \"{}\", expected \"{name}\"",
                    spec.name.escape_default()
                ),
            )
            .with_log_detail(format!("in {}", json.display())));
        }
        if !onnx.is_file() {
            return Err(Error::new(
                ErrorKind::ModelMissing,
                format!("model \"{name}\" has no ONNX file"),
            )
            .with_hint("each model needs <name>.json and <name>.onnx in the model directory")
            .with_log_detail(format!("{} does not exist", onnx.display())));
        }
        Ok(spec)
    }

    /// All models in the directory whose JSON parses and validates, sorted by name.
    /// Files that are not `<identifier>.json` are ignored; an invalid spec is skipped.
    pub fn list(&self) -> Result<Vec<ModelInfo>> {
        let rd = fs::read_dir(&self.dir).map_err(|e| {
            Error::new(
                ErrorKind::ModelMissing,
                format!("cannot read the model directory: {}", e.kind()),
            )
            .with_log_detail(format!("cannot read {}: {e}", self.dir.display()))
        })?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let Some(name) = file_name.strip_suffix(".json") else {
                continue;
            };
            if !is_valid_model_name(name) {
                continue;
            }
            let Ok(text) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(spec) = ModelSpec::from_json(&text) else {
                continue;
            };
            if spec.name != name {
                continue;
            }
            let onnx = self.dir.join(format!("{name}.onnx"));
            out.push(ModelInfo {
                name: spec.name,
                dims: spec.dims,
                weights: spec.weights,
                has_onnx: onnx.is_file(),
                onnx_sha256: file_sha256(&onnx),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = r#"{
        "format": 1, "name": "efficientnet_lite0", "weights": "imagenet",
        "input_name": "input", "output_name": "embedding",
        "input_width": 224, "input_height": 224, "resize_shorter": 256,
        "crop": "center", "channel_order": "rgb", "layout": "nchw",
        "normalize": {"mean": [127.0,127.0,127.0], "std": [128.0,128.0,128.0]},
        "dims": 1280, "source": "test"
    }"#;

    #[test]
    fn names() {
        for ok in ["a", "efficientnet_lite0", "RESNET_34", &"x".repeat(63)] {
            assert!(is_valid_model_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            "a.b",
            "..",
            ".",
            "a b",
            "a-b",
            "a\0b",
            "/abs",
            "é",
            &"x".repeat(64),
            "a\\b",
            "model.json",
        ] {
            assert!(!is_valid_model_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn name_cannot_escape_dir() {
        let dir = std::env::temp_dir().join(format!("imgsim-model-escape-{}", std::process::id()));
        let inner = dir.join("models");
        fs::create_dir_all(&inner).unwrap();
        // A perfectly valid model one level up must not be reachable through the name.
        fs::write(
            dir.join("outside.json"),
            SAMPLE.replace("efficientnet_lite0", "outside"),
        )
        .unwrap();
        fs::write(dir.join("outside.onnx"), b"x").unwrap();
        let reg = ModelRegistry::new(&inner);
        for name in [
            "../outside",
            "..%2Foutside",
            "/outside",
            "models/../../outside",
        ] {
            let e = reg.load_spec(name).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ModelMissing, "{name}");
            assert!(
                e.message().contains("not a valid model name"),
                "{}",
                e.message()
            );
            assert!(reg.onnx_path(name).is_err());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parse_and_validate() {
        let s = ModelSpec::from_json(SAMPLE).unwrap();
        assert_eq!(s.dims, 1280);
        assert_eq!(s.crop, Crop::Center);
        assert_eq!(s.channel_order, ChannelOrder::Rgb);
        assert_eq!(s.normalize.std, [128.0; 3]);
        let e =
            ModelSpec::from_json(&SAMPLE.replace("\"format\": 1", "\"format\": 2")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid);
        let e = ModelSpec::from_json(&SAMPLE.replace("\"nchw\"", "\"nhwc\"")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid);
        let e = ModelSpec::from_json(&SAMPLE.replace("[128.0,128.0,128.0]", "[128.0,0.0,128.0]"))
            .unwrap_err();
        assert!(e.message().contains("std"), "{}", e.message());
        let e = ModelSpec::from_json("{").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid);
    }

    #[test]
    fn registry_list_and_load() {
        let dir = std::env::temp_dir().join(format!("imgsim-model-reg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("efficientnet_lite0.json"), SAMPLE).unwrap();
        fs::write(dir.join("efficientnet_lite0.onnx"), b"not really").unwrap();
        fs::write(dir.join("broken.json"), "{}").unwrap();
        fs::write(dir.join("bad-name.json"), SAMPLE).unwrap();
        fs::write(dir.join("mismatch.json"), SAMPLE).unwrap();
        let reg = ModelRegistry::new(&dir);
        let l = reg.list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].name, "efficientnet_lite0");
        assert_eq!(l[0].dims, 1280);
        assert_eq!(l[0].weights, "imagenet");
        assert!(l[0].has_onnx);
        // sha256("not really")
        assert_eq!(
            l[0].onnx_sha256.as_deref(),
            Some("c22d26d33c5783cf2bd157ba48eefa471ac49ab7bc71d5e8d5977eedd2c91726")
        );
        assert_eq!(
            reg.fingerprint("efficientnet_lite0").unwrap(),
            *l[0].onnx_sha256.as_ref().unwrap()
        );
        let e = reg.load_spec("nope").unwrap_err();
        assert!(!e.message().contains(dir.to_str().unwrap()), "{e}");
        assert!(!e.hint().unwrap().contains(dir.to_str().unwrap()));
        assert!(e.detail_for_log().unwrap().contains("nope.json"));
        assert_eq!(reg.load_spec("efficientnet_lite0").unwrap().dims, 1280);
        let e = reg.load_spec("nope").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelMissing);
        assert!(e.hint().unwrap().contains("efficientnet_lite0"));
        assert_eq!(
            reg.load_spec("broken").unwrap_err().kind(),
            ErrorKind::ModelInvalid
        );
        assert_eq!(
            reg.load_spec("mismatch").unwrap_err().kind(),
            ErrorKind::ModelInvalid
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
