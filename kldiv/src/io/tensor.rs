//! Tensors in .npy and .safetensors files, memory-mapped and decoded a block of rows at a
//! time, so files larger than RAM stream through with bounded memory.
//!
//! Rows are always numbered in C order over the leading axes, whatever the file's layout:
//! row r of a `[d0, d1, …, cols]` array is the multi-index (i0, i1, …) that C order puts at
//! position r. Fortran-order files are gathered into that order as they are read.

use super::{kld, npy};
use crate::element::{Dtype, Element};
use crate::error::{Error, Result};
use half::{bf16, f16};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// How elements are stored in a file. Integer arrays are read as counts (f64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stored {
    F16,
    BF16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    /// llama.cpp's `.kld` records: u16-quantised log-probabilities (decoded as f32).
    Kld,
}

impl Stored {
    pub fn size_bytes(self) -> usize {
        match self {
            Stored::I8 | Stored::U8 => 1,
            Stored::F16 | Stored::BF16 | Stored::I16 | Stored::U16 | Stored::Kld => 2,
            Stored::F32 | Stored::I32 | Stored::U32 => 4,
            Stored::F64 | Stored::I64 | Stored::U64 => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Stored::F16 => "f16",
            Stored::BF16 => "bf16",
            Stored::F32 => "f32",
            Stored::F64 => "f64",
            Stored::I8 => "i8",
            Stored::I16 => "i16",
            Stored::I32 => "i32",
            Stored::I64 => "i64",
            Stored::U8 => "u8",
            Stored::U16 => "u16",
            Stored::U32 => "u32",
            Stored::U64 => "u64",
            Stored::Kld => "kld-u16",
        }
    }
    pub fn is_integer(self) -> bool {
        !matches!(
            self,
            Stored::F16 | Stored::BF16 | Stored::F32 | Stored::F64 | Stored::Kld
        )
    }
    /// The element type the engines compute this storage in: floats as they are, integer
    /// counts as f64 (exact up to 2^53).
    pub fn compute_type(self) -> Dtype {
        match self {
            Stored::F16 => Dtype::F16,
            Stored::BF16 => Dtype::BF16,
            Stored::F32 | Stored::Kld => Dtype::F32,
            _ => Dtype::F64,
        }
    }
}

/// The narrowest element type that holds both inputs exactly ([`Dtype::common`]; integer
/// counts are computed in f64).
pub fn common_type(a: Stored, b: Stored) -> Dtype {
    a.compute_type().common(b.compute_type())
}

/// One input tensor: a file (and, for .safetensors, a tensor name).
pub struct TensorFile {
    pub path: PathBuf,
    pub name: Option<String>,
    map: memmap2::Mmap,
    stored: Stored,
    shape: Vec<usize>,
    rows: usize,
    cols: usize,
    data_start: usize,
    fortran: bool,
    big_endian: bool,
    /// A llama.cpp `.kld` file: its rows are the scored positions' log-probabilities.
    kld: Option<kld::KldLayout>,
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

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Split `FILE.safetensors:NAME` after the first `.safetensors:` (tensor names may hold
/// `:` themselves); anything else is a plain path.
pub fn split_spec(spec: &str) -> (PathBuf, Option<String>) {
    const EXT: &str = ".safetensors:";
    let lower = spec.to_ascii_lowercase();
    match lower.find(EXT) {
        Some(at) => (
            PathBuf::from(&spec[..at + EXT.len() - 1]),
            Some(spec[at + EXT.len()..].to_string()),
        ),
        None => (PathBuf::from(spec), None),
    }
}

/// Refuse what is not a regular file before opening it: opening a FIFO blocks until a
/// writer appears, and a directory maps as "No such device".
fn check_regular(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(());
    }
    let what = if ft.is_dir() {
        "a directory"
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_fifo() {
                "a FIFO (named pipe)"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_char_device() || ft.is_block_device() {
                "a device"
            } else {
                "not a regular file"
            }
        }
        #[cfg(not(unix))]
        {
            "not a regular file"
        }
    };
    Err(bad(
        path,
        format!("is {what}; inputs must be regular files (they are memory-mapped)"),
    ))
}

impl TensorFile {
    /// `FILE.npy`, `FILE.safetensors` (holding one tensor) or `FILE.safetensors:NAME`.
    pub fn open(spec: &str) -> Result<Self> {
        let (path, name) = split_spec(spec);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let meta = std::fs::metadata(&path).map_err(|e| io_err(&path, e))?;
        check_regular(&path, &meta)?;
        let file = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
        // What was opened may differ from what was checked (a rename in between).
        let meta = file.metadata().map_err(|e| io_err(&path, e))?;
        check_regular(&path, &meta)?;
        if meta.len() == 0 {
            return Err(bad(&path, "empty file"));
        }
        // SAFETY: the mapping is only read. As with any memory-mapped input, the file must
        // not be truncated by another process while kldiv runs (the command line reports
        // that case instead of crashing, see `cli::sigbus`).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_err(&path, e))?;
        // Pages this mapping reads from disk then enter the page cache as 2 MiB folios,
        // which this run and later ones map with one fault each instead of one per 64 KiB
        // (BENCHMARKS.md, session 30). Pages already cached keep their size. A hint.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        match ext.as_str() {
            "npy" => {
                if name.is_some() {
                    return Err(bad(&path, ".npy files hold one array: no tensor name"));
                }
                Self::npy(path, map)
            }
            "safetensors" => Self::safetensors(path, name, map),
            "kld" => {
                if name.is_some() {
                    return Err(bad(&path, ".kld files hold one base: no tensor name"));
                }
                Self::kld(path, map)
            }
            _ => Err(bad(
                &path,
                "unsupported file type (expected .npy, .safetensors or llama.cpp's .kld)",
            )),
        }
    }

    fn kld(path: PathBuf, map: memmap2::Mmap) -> Result<Self> {
        let l = kld::layout(&path, &map)?;
        Ok(TensorFile {
            path,
            name: None,
            stored: Stored::Kld,
            shape: vec![l.scored_rows(), l.n_vocab],
            rows: l.scored_rows(),
            cols: l.n_vocab,
            data_start: l.records_offset() as usize,
            fortran: false,
            big_endian: false,
            kld: Some(l),
            map,
        })
    }

    /// The layout of a llama.cpp `.kld` input.
    pub fn kld_layout(&self) -> Option<kld::KldLayout> {
        self.kld
    }

    /// Token `i` (over all chunks) of a `.kld` input.
    pub fn kld_token(&self, i: usize) -> Option<i32> {
        self.kld
            .filter(|l| i < l.positions())
            .map(|_| kld::token(&self.map, i))
    }

    fn npy(path: PathBuf, map: memmap2::Mmap) -> Result<Self> {
        let h = npy::parse_header(&path, &map)?;
        let stored = match h.descr.get(1..) {
            Some("f4") => Stored::F32,
            Some("f8") => Stored::F64,
            Some("f2") => Stored::F16,
            Some("i1") => Stored::I8,
            Some("i2") => Stored::I16,
            Some("i4") => Stored::I32,
            Some("i8") => Stored::I64,
            Some("u1") => Stored::U8,
            Some("u2") => Stored::U16,
            Some("u4") => Stored::U32,
            Some("u8") => Stored::U64,
            _ => return Err(bad(&path, unsupported_npy_dtype(&h.descr))),
        };
        let big_endian = match h.descr.as_bytes().first() {
            Some(b'<' | b'|' | b'=') => false,
            Some(b'>') => true,
            _ => return Err(bad(&path, format!("unknown byte order in {:?}", h.descr))),
        };
        let (rows, cols) = npy::rows_cols(&path, &h.shape)?;
        let need = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(stored.size_bytes()))
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
            stored,
            shape: h.shape,
            rows,
            cols,
            data_start: h.data_offset,
            fortran: h.fortran_order,
            big_endian,
            kld: None,
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
        use safetensors::Dtype as D;
        let stored = match view.dtype() {
            D::F32 => Stored::F32,
            D::F16 => Stored::F16,
            D::BF16 => Stored::BF16,
            D::F64 => Stored::F64,
            D::I8 => Stored::I8,
            D::I16 => Stored::I16,
            D::I32 => Stored::I32,
            D::I64 => Stored::I64,
            D::U8 => Stored::U8,
            D::U16 => Stored::U16,
            D::U32 => Stored::U32,
            D::U64 => Stored::U64,
            other => {
                return Err(bad(
                    &path,
                    format!(
                    "tensor {name:?} has unsupported dtype {other:?} (need F32, F16, BF16, F64 or integers)"
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
            stored,
            shape,
            rows,
            cols,
            data_start,
            fortran: false,
            big_endian: false,
            kld: None,
            map,
        })
    }

    /// How the file stores its elements.
    pub fn stored(&self) -> Stored {
        self.stored
    }
    /// The element type the engines compute this input in on its own.
    pub fn dtype(&self) -> Dtype {
        self.stored.compute_type()
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
    /// The leading axes (those that number the rows).
    pub fn row_shape(&self) -> &[usize] {
        &self.shape[..self.shape.len().saturating_sub(1)]
    }
    pub fn is_fortran(&self) -> bool {
        self.fortran
    }
    /// Where the file is mapped in this process (for reporting faults on it).
    pub fn mapped(&self) -> (usize, usize) {
        (self.map.as_ptr() as usize, self.map.len())
    }

    /// The bytes of rows `[r0, r1)` in the mapping, where they are one run (row-major arrays;
    /// not .kld records or Fortran order).
    fn row_run(&self, r0: usize, r1: usize) -> Option<(usize, usize)> {
        let row_major =
            !self.fortran || self.shape.len() <= 1 || (self.shape.len() == 2 && self.cols == 1);
        if self.kld.is_some() || !row_major || r0 >= r1 || r1 > self.rows {
            return None;
        }
        let row = self.cols * self.stored.size_bytes();
        Some((self.data_start + r0 * row, (r1 - r0) * row))
    }

    /// Asks the kernel to read rows `[r0, r1)` ahead (MADV_WILLNEED: asynchronous, returns at
    /// once), so that a block not yet in the page cache is read while the previous one is
    /// computed. A hint, never an error. (Mapping them in ahead, MADV_POPULATE_READ, cost more
    /// CPU than the computing threads' own faults: measured in BENCHMARKS.md.)
    pub fn read_ahead(&self, r0: usize, r1: usize) {
        if let Some((off, len)) = self.row_run(r0, r1) {
            let _ = self.map.advise_range(memmap2::Advice::WillNeed, off, len);
        }
    }

    /// Unmaps the whole pages of rows `[r0, r1)` from this process (MADV_DONTNEED; they stay
    /// in the page cache, and a later read maps them again), so that resident memory stays
    /// at a few blocks however large the file. Call it once nothing borrows those rows.
    pub fn release(&self, r0: usize, r1: usize) {
        // 64 KiB: a multiple of every page size in use, so only pages wholly inside the run.
        const GRAIN: usize = 64 << 10;
        let Some((off, len)) = self.row_run(r0, r1) else {
            return;
        };
        let base = self.map.as_ptr() as usize;
        let (a0, a1) = (
            (base + off).next_multiple_of(GRAIN),
            (base + off + len) / GRAIN * GRAIN,
        );
        if a1 > a0 {
            // SAFETY: the map is read-only and file-backed, so MADV_DONTNEED only drops page
            // table entries: a later access reads the same bytes from the file again.
            // Callers release rows no slice borrows any more.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    a0 - base,
                    a1 - a0,
                )
            };
        }
    }

    /// "FILE" or "FILE:NAME", for messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{}:{n}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// Rows `[r0, r1)` in the file's own compute type, row-major.
    pub fn block(&self, r0: usize, r1: usize) -> Block<'_> {
        match self.dtype() {
            Dtype::F32 => Block::F32(self.rows_as(r0, r1)),
            Dtype::F64 => Block::F64(self.rows_as(r0, r1)),
            Dtype::F16 => Block::F16(self.rows_as(r0, r1)),
            Dtype::BF16 => Block::BF16(self.rows_as(r0, r1)),
        }
    }

    /// Rows `[r0, r1)` as elements of `T`, row-major (C order over the leading axes). `T`
    /// must hold the stored type exactly (see [`common_type`]); the data is borrowed from the
    /// mapping when it is already laid out so, else decoded.
    pub fn rows_as<T: Element>(&self, r0: usize, r1: usize) -> Cow<'_, [T]> {
        debug_assert!(r0 <= r1 && r1 <= self.rows);
        if let Some(l) = &self.kld {
            let mut row = vec![0f32; self.cols];
            let mut out = Vec::with_capacity((r1 - r0) * self.cols);
            for r in r0..r1 {
                kld::decode_row(l, &self.map, r, &mut row);
                out.extend(row.iter().map(|&x| T::from_f32(x)));
            }
            return Cow::Owned(out);
        }
        let size = self.stored.size_bytes();
        let n = (r1 - r0) * self.cols;
        let native = self.stored.compute_type() == T::DTYPE && !self.stored.is_integer();
        let row_major =
            !self.fortran || self.shape.len() <= 1 || (self.shape.len() == 2 && self.cols == 1);
        if row_major {
            // Row-major runs (a 1-D or n×1 Fortran array is laid out the same).
            let start = self.data_start + r0 * self.cols * size;
            let bytes = &self.map[start..start + n * size];
            if native && !self.big_endian {
                if let Ok(v) = bytemuck::try_cast_slice(bytes) {
                    return Cow::Borrowed(v);
                }
            }
            let mut out = Vec::with_capacity(n);
            out.extend(bytes.chunks_exact(size).map(|b| self.decode::<T>(b)));
            return Cow::Owned(out);
        }
        // Fortran order: axis j of the leading axes has stride s_j = d_0·…·d_{j−1}, the
        // last axis (columns) stride rows. Row r is the C-order multi-index of r.
        let lead = self.row_shape();
        let data = &self.map[self.data_start..];
        let offsets: Vec<usize> = (r0..r1).map(|r| fortran_offset(lead, r)).collect();
        let mut out = vec![T::from_f64(0.0); n];
        let w = r1 - r0;
        // Column by column: each column is a run of nearby offsets in the file.
        for c in 0..self.cols {
            let base = c * self.rows;
            for (i, &off) in offsets.iter().enumerate() {
                let at = (base + off) * size;
                out[i * self.cols + c] = self.decode::<T>(&data[at..at + size]);
            }
        }
        debug_assert_eq!(out.len(), w * self.cols);
        Cow::Owned(out)
    }

    /// One stored element as `T`.
    #[inline]
    fn decode<T: Element>(&self, b: &[u8]) -> T {
        macro_rules! num {
            ($t:ty, $n:literal) => {{
                let mut a = [0u8; $n];
                a.copy_from_slice(b);
                if self.big_endian {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }
            }};
        }
        match self.stored {
            Stored::F32 => T::from_f32(num!(f32, 4)),
            Stored::F64 => T::from_f64(num!(f64, 8)),
            Stored::F16 => T::from_f32(num!(f16, 2).to_f32()),
            Stored::BF16 => T::from_f32(num!(bf16, 2).to_f32()),
            Stored::I8 => T::from_f64(num!(i8, 1) as f64),
            Stored::I16 => T::from_f64(num!(i16, 2) as f64),
            Stored::I32 => T::from_f64(num!(i32, 4) as f64),
            Stored::I64 => T::from_f64(num!(i64, 8) as f64),
            Stored::U8 => T::from_f64(num!(u8, 1) as f64),
            Stored::U16 => T::from_f64(num!(u16, 2) as f64),
            Stored::U32 => T::from_f64(num!(u32, 4) as f64),
            Stored::U64 => T::from_f64(num!(u64, 8) as f64),
            // Records are decoded whole in `rows_as`.
            Stored::Kld => T::from_f32(f32::NAN),
        }
    }
}

/// Element offset (in a Fortran-order array) of row `r` at column 0, where `lead` are the
/// leading axes and rows are numbered in C order.
pub fn fortran_offset(lead: &[usize], r: usize) -> usize {
    // Peel C-order indices from the last leading axis (fastest) to the first; Fortran
    // strides grow from the first axis.
    let mut rem = r;
    let mut idx = [0usize; 32];
    let k = lead.len().min(32);
    for j in (0..k).rev() {
        let d = lead[j].max(1);
        idx[j] = rem % d;
        rem /= d;
    }
    let mut off = 0;
    let mut stride = 1;
    for j in 0..k {
        off += idx[j] * stride;
        stride *= lead[j];
    }
    off
}

/// Why an .npy element type is refused. numpy saves the extension types of ml_dtypes
/// (bfloat16 as "<V2", the float8 types as "<V1") as raw bytes: the file no longer says
/// what they are, so the message says how to write one kldiv can read.
fn unsupported_npy_dtype(descr: &str) -> String {
    let need = "need f2, f4, f8, or integer counts i1–i8, u1–u8";
    let hint = match descr.get(1..) {
        Some("V2") => {
            "; numpy writes ml_dtypes.bfloat16 so, without its type: save bf16 as \
             .safetensors (BF16), or as float32"
        }
        Some("V1") => {
            "; numpy writes the float8 types so, without their type: save as float16 or float32"
        }
        _ => "",
    };
    format!("unsupported dtype {descr:?} ({need}){hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_offsets_follow_numpy() {
        // a (2, 3, 4) array: row r = (i, j) with r = 3i + j; Fortran offset i + 2j.
        let lead = [2, 3];
        let want = [0, 2, 4, 1, 3, 5];
        for (r, w) in want.iter().enumerate() {
            assert_eq!(fortran_offset(&lead, r), *w, "row {r}");
        }
        assert_eq!(fortran_offset(&[7], 5), 5);
    }

    #[test]
    fn raw_byte_dtypes_say_how_to_save_them() {
        let m = unsupported_npy_dtype("<V2");
        assert!(m.contains("\"<V2\"") && m.contains("bfloat16") && m.contains(".safetensors"));
        assert!(unsupported_npy_dtype("|V1").contains("float8"));
        assert_eq!(
            unsupported_npy_dtype("<c8"),
            "unsupported dtype \"<c8\" (need f2, f4, f8, or integer counts i1–i8, u1–u8)"
        );
    }

    #[test]
    fn specs_split_after_the_extension() {
        assert_eq!(
            split_spec("m.safetensors:model:logits"),
            (PathBuf::from("m.safetensors"), Some("model:logits".into()))
        );
        assert_eq!(split_spec("d:/x.npy"), (PathBuf::from("d:/x.npy"), None));
        assert_eq!(
            split_spec("M.SafeTensors:a"),
            (PathBuf::from("M.SafeTensors"), Some("a".into()))
        );
    }

    #[test]
    fn common_types_hold_both_sides() {
        assert_eq!(common_type(Stored::F32, Stored::BF16), Dtype::F32);
        assert_eq!(common_type(Stored::F16, Stored::BF16), Dtype::F32);
        assert_eq!(common_type(Stored::F16, Stored::F16), Dtype::F16);
        assert_eq!(common_type(Stored::I32, Stored::F32), Dtype::F64);
        assert_eq!(common_type(Stored::F64, Stored::BF16), Dtype::F64);
    }
}
