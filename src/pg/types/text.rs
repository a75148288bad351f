//! Wire forms of `embedding`: the text form: `[1,2.5,-3e-2]`, identical to pgvector's. Pure functions (no PostgreSQL calls)
//! so the parser's rules are easy to read and test; the SQL-facing wrapper turns `ParseError` into an ERROR.

/// Why a text value is not a valid embedding. Positions are 1-based character offsets in the input.
#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// Structural problem (missing bracket, junk after the closing bracket, ...).
    Syntax { position: usize, what: &'static str },
    /// `[]` or `[ ]`.
    Empty,
    /// An element that is not a number.
    NotANumber { element: usize, position: usize },
    /// NaN or infinity literal.
    NonFinite { element: usize, position: usize },
    /// A finite literal that overflows f32.
    OutOfRange {
        element: usize,
        position: usize,
        token: String,
    },
    /// More than the allowed number of elements: parsing stops there, before the list grows further.
    TooMany { max: usize },
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// Parses `[v1, v2, ...]` into floats; stops with [`ParseError::TooMany`] after `max_elements` values, so
/// memory stays bounded by the type's limit whatever the length of the input.
pub fn parse(input: &str, max_elements: usize) -> Result<Vec<f32>, ParseError> {
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    if i >= b.len() || b[i] != b'[' {
        return Err(ParseError::Syntax {
            position: i + 1,
            what: "embedding must start with \"[\"",
        });
    }
    i += 1;
    let mut values = Vec::new();
    // Empty vector: only whitespace before "]".
    let mut j = i;
    while j < b.len() && is_space(b[j]) {
        j += 1;
    }
    if j < b.len() && b[j] == b']' {
        return Err(ParseError::Empty);
    }
    loop {
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b',' && b[i] != b']' && !is_space(b[i]) {
            i += 1;
        }
        let token = &input[start..i];
        let element = values.len() + 1;
        let position = start + 1;
        if token.is_empty() {
            return Err(ParseError::NotANumber { element, position });
        }
        let v = parse_float(token).ok_or(ParseError::NotANumber { element, position })?;
        if !v.is_finite() {
            let lower = token.trim_start_matches(['+', '-']).to_ascii_lowercase();
            if lower.starts_with("inf") || lower == "nan" {
                return Err(ParseError::NonFinite { element, position });
            }
            return Err(ParseError::OutOfRange {
                element,
                position,
                token: token.to_string(),
            });
        }
        if values.len() == max_elements {
            return Err(ParseError::TooMany { max: max_elements });
        }
        values.push(v);
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            return Err(ParseError::Syntax {
                position: i + 1,
                what: "embedding must end with \"]\"",
            });
        }
        if b[i] == b',' {
            i += 1;
            continue;
        }
        if b[i] == b']' {
            i += 1;
            break;
        }
        return Err(ParseError::Syntax {
            position: i + 1,
            what: "expected \",\" or \"]\"",
        });
    }
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    if i < b.len() {
        return Err(ParseError::Syntax {
            position: i + 1,
            what: "junk after closing \"]\"",
        });
    }
    Ok(values)
}

/// Accepts what C's strtof accepts for decimal numbers (`1`, `-2.5`, `.5`, `5.`, `1e-3`, `+1E3`,
/// `nan`, `inf`, `infinity`); rejects hexadecimal and anything else.
fn parse_float(token: &str) -> Option<f32> {
    let t = token.as_bytes();
    let body = t
        .strip_prefix(b"+")
        .or_else(|| t.strip_prefix(b"-"))
        .unwrap_or(t);
    let lower = String::from_utf8_lossy(body).to_ascii_lowercase();
    if lower == "nan" || lower == "inf" || lower == "infinity" {
        return token
            .to_ascii_lowercase()
            .replace("infinity", "inf")
            .parse::<f32>()
            .ok();
    }
    if !body
        .first()
        .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
    {
        return None;
    }
    token.parse::<f32>().ok()
}

/// Formats values as `[v1,v2,...]`, each with `fmt` (the shortest round-trip form).
pub fn format(values: &[f32], fmt: impl Fn(f32, &mut String)) -> String {
    let mut s = String::with_capacity(2 + values.len() * 10);
    s.push('[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        fmt(*v, &mut s);
    }
    s.push(']');
    s
}

/// Why binary input is not a valid embedding.
#[derive(Debug, PartialEq)]
pub enum BinaryError {
    /// Fewer bytes than the header or the values need.
    Short { need: usize, have: usize },
    /// Dimensions below 1.
    BadDims(i16),
    /// Dimensions above the limit.
    TooMany { dims: usize, max: usize },
    /// The reserved int16 is not zero.
    Reserved(i16),
    /// A NaN or infinite value (1-based element).
    NonFinite { element: usize },
}

/// Parses the binary form (int16 dims, int16 reserved = 0, dims × float4, all big-endian) from the start
/// of `b`; returns the values and the number of bytes used (the caller checks what follows). Checks
/// everything before allocating: the dimension bound, then the byte count.
pub fn parse_binary(b: &[u8], max_dims: usize) -> Result<(Vec<f32>, usize), BinaryError> {
    if b.len() < 4 {
        return Err(BinaryError::Short {
            need: 4,
            have: b.len(),
        });
    }
    let dims = i16::from_be_bytes([b[0], b[1]]);
    let reserved = i16::from_be_bytes([b[2], b[3]]);
    if dims < 1 {
        return Err(BinaryError::BadDims(dims));
    }
    if reserved != 0 {
        return Err(BinaryError::Reserved(reserved));
    }
    let dims = dims as usize;
    if dims > max_dims {
        return Err(BinaryError::TooMany {
            dims,
            max: max_dims,
        });
    }
    let need = 4 + 4 * dims;
    if b.len() < need {
        return Err(BinaryError::Short {
            need,
            have: b.len(),
        });
    }
    let values: Vec<f32> = b[4..need]
        .chunks_exact(4)
        .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(BinaryError::NonFinite { element: i + 1 });
    }
    Ok((values, need))
}
