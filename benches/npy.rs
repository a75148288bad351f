//! The .npy reader shared by the benches (`#[path = "npy.rs"] mod npy;`).

use std::path::Path;

/// Reads a little-endian f32 .npy of shape [N, D], C or Fortran order (returned row-major).
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, usize, usize), String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (hlen, hstart) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[hstart..hstart + hlen]).map_err(|e| e.to_string())?;
    if !header.contains("'<f4'") {
        return Err(format!("need dtype '<f4': {header}"));
    }
    let fortran = header.contains("'fortran_order': True");
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or("no shape")?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| format!("bad shape {shape}")))
        .collect::<Result<_, _>>()?;
    if dims.len() != 2 {
        return Err(format!("need a 2-d array, shape ({shape})"));
    }
    let (n, d) = (dims[0], dims[1]);
    let body = &b[hstart + hlen..];
    if body.len() < n * d * 4 {
        return Err("file shorter than its shape".into());
    }
    let raw: Vec<f32> = body[..n * d * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if !fortran {
        return Ok((raw, n, d));
    }
    // Column-major: element (i, j) at j * n + i.
    let mut v = vec![0.0f32; n * d];
    for j in 0..d {
        for i in 0..n {
            v[i * d + j] = raw[j * n + i];
        }
    }
    Ok((v, n, d))
}
