//! .npy files: parse headers (any dtype string, either byte order, C or Fortran order, any
//! rank: leading axes are rows) and write f64 results. Every header field is checked against
//! the file's real length before anything is allocated.

use crate::error::{Error, Result};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The parsed header: element type, byte order, layout, shape, and where data starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
    pub data_offset: usize,
}

/// Parse the header of an .npy file held in `bytes`.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(path, "not an .npy file (bad magic bytes)"));
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad(path, "truncated .npy header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad(path, "truncated .npy header"))?;
    let text = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| bad(path, ".npy header is not text"))?;
    let field = |key: &str| -> Result<&str> {
        let k = format!("'{key}'");
        let at = text
            .find(&k)
            .ok_or_else(|| bad(path, format!(".npy header lacks {k}")))?;
        let rest = text[at + k.len()..].trim_start();
        rest.strip_prefix(':')
            .map(str::trim_start)
            .ok_or_else(|| bad(path, format!(".npy header: no value for {k}")))
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| bad(path, ".npy header: descr is not a string"))?
        .to_string();
    let fortran = field("fortran_order")?;
    let fortran_order = if fortran.starts_with("True") {
        true
    } else if fortran.starts_with("False") {
        false
    } else {
        return Err(bad(path, ".npy header: fortran_order is not True/False"));
    };
    let shape_text = field("shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(path, ".npy header: shape is not a tuple"))?;
    let mut shape = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        shape.push(
            part.parse::<usize>()
                .map_err(|_| bad(path, format!(".npy header: bad dimension {part:?}")))?,
        );
    }
    Ok(Header {
        descr,
        fortran_order,
        shape,
        data_offset: end,
    })
}

/// Rows × columns of a shape: the last axis is the distribution, all others are rows.
pub fn rows_cols(path: &Path, shape: &[usize]) -> Result<(usize, usize)> {
    match shape {
        [] => Err(bad(path, "a 0-d array holds no distribution")),
        [n] => Ok((1, *n)),
        [lead @ .., cols] => {
            let rows = lead
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(path, format!("shape {shape:?} overflows")))?;
            Ok((rows, *cols))
        }
    }
}

/// Write `values` as a little-endian f64 .npy array of `shape` (whose product must be
/// `values.len()`) into `w`.
pub fn write_f64_to(
    w: &mut dyn std::io::Write,
    shape: &[usize],
    values: &[f64],
) -> std::io::Result<()> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    w.write_all(&header("<f8", &shape))?;
    // Little-endian on every target kldiv builds for; written in pieces to bound memory.
    for chunk in values.chunks(1 << 16) {
        w.write_all(bytemuck::cast_slice(chunk))?;
    }
    Ok(())
}

/// A version 1.0 .npy header, padded so data starts on a 64-byte boundary.
fn header(descr: &str, shape: &str) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}
