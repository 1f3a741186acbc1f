//! Tensors in .npy and .safetensors files, memory-mapped and decoded a block of rows at a
//! time, so files larger than RAM stream through with bounded memory.

use super::npy;
use crate::error::{Error, Result};
use crate::Dtype;
use half::{bf16, f16};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// One input tensor: a file (and, for .safetensors, a tensor name).
pub struct TensorFile {
    pub path: PathBuf,
    pub name: Option<String>,
    map: memmap2::Mmap,
    dtype: Dtype,
    shape: Vec<usize>,
    rows: usize,
    cols: usize,
    data_start: usize,
    fortran: bool,
    big_endian: bool,
}

/// A block of rows, borrowed from the mapping when the file's layout allows, else decoded.
pub enum Block<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
    F16(Cow<'a, [f16]>),
    BF16(Cow<'a, [bf16]>),
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl TensorFile {
    /// `FILE.npy`, `FILE.safetensors` (holding one tensor) or `FILE.safetensors:NAME`.
    pub fn open(spec: &str) -> Result<Self> {
        let (path, name) = match spec.rsplit_once(':') {
            Some((p, n)) if p.ends_with(".safetensors") => (PathBuf::from(p), Some(n.to_string())),
            _ => (PathBuf::from(spec), None),
        };
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let file = std::fs::File::open(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?
            .len();
        if len == 0 {
            return Err(bad(&path, "empty file"));
        }
        // SAFETY: the mapping is only read. As with any memory-mapped input, the file must
        // not be truncated by another process while kldiv runs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        match ext.as_str() {
            "npy" => {
                if name.is_some() {
                    return Err(bad(&path, ".npy files hold one array: no tensor name"));
                }
                Self::npy(path, map)
            }
            "safetensors" => Self::safetensors(path, name, map),
            _ => Err(bad(
                &path,
                "unsupported file type (expected .npy or .safetensors)",
            )),
        }
    }

    fn npy(path: PathBuf, map: memmap2::Mmap) -> Result<Self> {
        let h = npy::parse_header(&path, &map)?;
        let (dtype, size) = match h.descr.get(1..) {
            Some("f4") => (Dtype::F32, 4),
            Some("f8") => (Dtype::F64, 8),
            Some("f2") => (Dtype::F16, 2),
            _ => {
                return Err(bad(
                    &path,
                    format!("unsupported dtype {:?} (need f4, f8 or f2)", h.descr),
                ))
            }
        };
        let big_endian = match h.descr.as_bytes().first() {
            Some(b'<' | b'|' | b'=') => false,
            Some(b'>') => true,
            _ => return Err(bad(&path, format!("unknown byte order in {:?}", h.descr))),
        };
        let (rows, cols) = npy::rows_cols(&path, &h.shape)?;
        let need = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(size))
            .ok_or_else(|| bad(&path, format!("shape {:?} overflows", h.shape)))?;
        let have = map.len() - h.data_offset;
        if have < need {
            return Err(bad(
                &path,
                format!("truncated: header promises {need} bytes of data for shape {:?}, file has {have}", h.shape),
            ));
        }
        Ok(TensorFile {
            path,
            name: None,
            dtype,
            shape: h.shape,
            rows,
            cols,
            data_start: h.data_offset,
            fortran: h.fortran_order,
            big_endian,
            map,
        })
    }

    fn safetensors(path: PathBuf, name: Option<String>, map: memmap2::Mmap) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(&map)
            .map_err(|e| bad(&path, format!("not a valid .safetensors file: {e}")))?;
        let name = match name {
            Some(n) => n,
            None => {
                let names = st.names();
                match names.as_slice() {
                    [one] => one.to_string(),
                    _ => {
                        let mut names: Vec<&str> = names;
                        names.sort();
                        return Err(bad(
                            &path,
                            format!(
                                "holds {} tensors; name one as FILE.safetensors:NAME ({})",
                                names.len(),
                                names.join(", ")
                            ),
                        ));
                    }
                }
            }
        };
        let view = st
            .tensor(&name)
            .map_err(|_| bad(&path, format!("no tensor named {name:?}")))?;
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => Dtype::F32,
            safetensors::Dtype::F16 => Dtype::F16,
            safetensors::Dtype::BF16 => Dtype::BF16,
            safetensors::Dtype::F64 => Dtype::F64,
            other => {
                return Err(bad(
                    &path,
                    format!(
                    "tensor {name:?} has unsupported dtype {other:?} (need F32, F16, BF16, F64)"
                ),
                ))
            }
        };
        let shape = view.shape().to_vec();
        let (rows, cols) = npy::rows_cols(&path, &shape)?;
        // The view borrows the mapping: its start is an offset into it.
        let data_start = view.data().as_ptr() as usize - map.as_ptr() as usize;
        Ok(TensorFile {
            path,
            name: Some(name),
            dtype,
            shape,
            rows,
            cols,
            data_start,
            fortran: false,
            big_endian: false,
            map,
        })
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// "FILE" or "FILE:NAME", for messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{}:{n}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// Rows `[r0, r1)`, row-major.
    pub fn block(&self, r0: usize, r1: usize) -> Block<'_> {
        let size = self.dtype.size_bytes();
        let n = (r1 - r0) * self.cols;
        if !self.fortran {
            let start = self.data_start + r0 * self.cols * size;
            let bytes = &self.map[start..start + n * size];
            return match self.dtype {
                Dtype::F32 => Block::F32(cast(bytes, self.big_endian, f32::from_be_bytes)),
                Dtype::F64 => Block::F64(cast(bytes, self.big_endian, f64::from_be_bytes)),
                Dtype::F16 => Block::F16(cast(bytes, self.big_endian, f16::from_be_bytes)),
                Dtype::BF16 => Block::BF16(cast(bytes, self.big_endian, bf16::from_be_bytes)),
            };
        }
        // Fortran order: element (r, c) is at c·rows + r.
        let data = &self.map[self.data_start..];
        let at = |r: usize, c: usize| (c * self.rows + r) * size;
        macro_rules! gather {
            ($t:ty, $v:ident, $n:literal) => {{
                let mut out = Vec::with_capacity(n);
                for r in r0..r1 {
                    for c in 0..self.cols {
                        let i = at(r, c);
                        let mut a = [0u8; $n];
                        a.copy_from_slice(&data[i..i + $n]);
                        out.push(if self.big_endian {
                            <$t>::from_be_bytes(a)
                        } else {
                            <$t>::from_le_bytes(a)
                        });
                    }
                }
                Block::$v(Cow::Owned(out))
            }};
        }
        match self.dtype {
            Dtype::F32 => gather!(f32, F32, 4),
            Dtype::F64 => gather!(f64, F64, 8),
            Dtype::F16 => gather!(f16, F16, 2),
            Dtype::BF16 => gather!(bf16, BF16, 2),
        }
    }
}

/// Borrow `bytes` as `[T]` when aligned and little-endian; else decode a copy.
fn cast<'a, T: bytemuck::Pod, const N: usize>(
    bytes: &'a [u8],
    big_endian: bool,
    be: fn([u8; N]) -> T,
) -> Cow<'a, [T]> {
    if !big_endian {
        if let Ok(v) = bytemuck::try_cast_slice(bytes) {
            return Cow::Borrowed(v);
        }
        return Cow::Owned(
            bytes
                .chunks_exact(N)
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        );
    }
    Cow::Owned(
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                be(a)
            })
            .collect(),
    )
}
