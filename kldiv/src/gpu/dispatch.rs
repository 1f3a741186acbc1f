//! How a pass is cut for the GPU: chunks of rows (or of one long row) that fit a binding, the
//! dispatches of each chunk, their grids and `Params`. Pure: unit-tested without a GPU.

use super::records::Params;
use super::shaders::{is_f64, tile_elems, vec_elems, KernelFile, SEG, WG};
use crate::consts::SHORT_ROW;
use crate::element::Dtype;
use crate::error::{Error, Result};

/// Workgroups per dispatch dimension.
pub const MAX_GROUPS: usize = 65_535;

/// A piece of a pass one dispatch round covers: `rows` visited rows from `first` (whole
/// rows), or columns `[col0, col0 + cols)` of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Index of the chunk's first row in the pass's visiting order.
    pub first: usize,
    pub rows: usize,
    pub col0: usize,
    pub cols: usize,
}

impl Chunk {
    /// Whether the chunk holds part of a row (its other parts are in other chunks).
    pub fn splits_row(&self, row_cols: usize) -> bool {
        self.cols != row_cols
    }
}

/// Whether rows go a thread per row from a workgroup's tile (short rows) rather than a
/// workgroup per segment.
pub fn short(cols: usize) -> bool {
    cols <= SHORT_ROW
}

// The logits short-row kernel takes a row's shift over the whole row, which is what the
// shift kernel (and the CPU) take over the row's first block.
const _: () = assert!(SHORT_ROW <= crate::consts::BLOCK);

/// Whether a dispatch's rows may be read as vectors of `vec` elements: every row starts on a
/// vector (`elem_offset`, `row_stride` multiples of `vec`) and holds whole vectors. The host
/// binds whole vectors (`stream.rs`), so a vector never reads past the binding.
pub fn wide(elem_offset: u32, row_stride: u32, cols: u32, vec: u32) -> bool {
    [elem_offset, row_stride, cols]
        .iter()
        .all(|v| v.is_multiple_of(vec))
}

/// Rows a short-row workgroup stages at once: as many as its tile holds at the tile's odd
/// row stride (shaders/shared/tile.wgsl), at most one per thread.
pub fn tile_rows(cols: usize, in_f64: bool) -> usize {
    (tile_elems(in_f64) / (cols | 1)).clamp(1, WG)
}

/// Records a row of `cols` columns produces per chunk.
pub fn segs(short: bool, cols: usize) -> usize {
    if short {
        1
    } else {
        cols.div_ceil(SEG)
    }
}

/// The chunks of a pass over `visits` rows of `cols` elements of `elem_bytes` each, with
/// inputs bound at most `binding_bytes` at a time (less the offset alignment a caller's
/// buffer may need) and records of `rec_bytes`.
pub fn chunks(
    visits: usize,
    cols: usize,
    elem_bytes: u64,
    rec_bytes: u64,
    short: bool,
    binding_bytes: u64,
    align: u64,
) -> Vec<Chunk> {
    let max_elems = ((binding_bytes - align) / elem_bytes) as usize;
    if cols <= max_elems {
        let by_records = (binding_bytes / (rec_bytes * segs(short, cols) as u64)).max(1) as usize;
        let per = (max_elems / cols).min(by_records).max(1);
        (0..visits.div_ceil(per))
            .map(|c| Chunk {
                first: c * per,
                rows: per.min(visits - c * per),
                col0: 0,
                cols,
            })
            .collect()
    } else {
        // A row longer than a binding: whole segments of it per chunk.
        let span = (max_elems / SEG).max(1) * SEG;
        (0..visits)
            .flat_map(|r| {
                (0..cols.div_ceil(span)).map(move |k| Chunk {
                    first: r,
                    rows: 1,
                    col0: k * span,
                    cols: span.min(cols - k * span),
                })
            })
            .collect()
    }
}

/// A 2-D grid for `groups` workgroups (65,535 per dimension).
pub fn grid(groups: usize) -> Result<(u32, u32)> {
    let x = groups.clamp(1, MAX_GROUPS);
    let y = groups.div_ceil(x).max(1);
    if y > MAX_GROUPS {
        return Err(Error::Gpu(format!(
            "{groups} workgroups exceed one dispatch"
        )));
    }
    Ok((x as u32, y as u32))
}

/// One dispatch of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    pub entry: &'static str,
    pub grid: (u32, u32),
    pub params: Params,
}

/// The dispatches of a chunk: for logits rows longer than short ones whose shift is not
/// given, the shift kernel first (one thread per row), then the kernel proper (short rows
/// take their shift in the tile kernel, `Params::own_shift`). `elem_offset` is where the chunk's first
/// element sits in the bound buffers.
pub fn dispatches(
    file: KernelFile,
    chunk: &Chunk,
    short: bool,
    shift_kernel: bool,
    elem_offset: u32,
    dtype: Dtype,
) -> Result<Vec<Dispatch>> {
    let segs = segs(short, chunk.cols);
    let tile = tile_rows(chunk.cols, is_f64(dtype));
    let (cols, stride) = (chunk.cols as u32, chunk.cols as u32);
    let params = |grid: (u32, u32)| Params {
        rows: chunk.rows as u32,
        cols,
        row_stride: stride,
        elem_offset,
        segs: segs as u32,
        grid_x: grid.0,
        row0: 0,
        col0: chunk.col0 as u32,
        wide: wide(elem_offset, stride, cols, vec_elems(dtype) as u32) as u32,
        tile_rows: tile as u32,
        own_shift: (file == KernelFile::Logits && shift_kernel) as u32,
        ..Default::default()
    };
    let mut out = vec![];
    if file == KernelFile::Logits && shift_kernel && !short {
        let g = grid(chunk.rows.div_ceil(WG))?;
        out.push(Dispatch {
            entry: "shift",
            grid: g,
            params: params(g),
        });
    }
    let (entry, groups) = if short {
        ("rows_tile", chunk.rows.div_ceil(tile))
    } else {
        ("rows_wg", chunk.rows * segs)
    };
    let g = grid(groups)?;
    out.push(Dispatch {
        entry,
        grid: g,
        params: params(g),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element of every visited row is in exactly one chunk, and no chunk binds more
    /// than the limit.
    fn covers(visits: usize, cols: usize, esize: u64, binding: u64, short: bool) {
        let cs = chunks(visits, cols, esize, 32, short, binding, 256);
        let mut seen = vec![0u32; visits * cols];
        for c in &cs {
            assert!(
                (c.rows * c.cols) as u64 * esize <= binding - 256,
                "{c:?} binds too much"
            );
            for r in c.first..c.first + c.rows {
                for k in c.col0..c.col0 + c.cols {
                    seen[r * cols + k] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{visits}×{cols}: {cs:?}");
    }

    #[test]
    fn chunks_cover_every_element_once() {
        covers(1000, 16, 4, 64 << 10, true);
        covers(7, 70_001, 4, 64 << 10, false);
        covers(3, 4097, 2, 1 << 20, false);
        covers(1, 1, 4, 32 << 10, true);
        covers(5, 100_000, 8, 128 << 20, false);
    }

    #[test]
    fn long_rows_split_at_segments() {
        let cs = chunks(2, 70_001, 4, 32, false, 64 << 10, 256);
        assert!(cs.len() > 2);
        for c in &cs {
            assert_eq!(c.col0 % SEG, 0);
            assert!(c.splits_row(70_001));
        }
    }

    #[test]
    fn grids_go_two_dimensional() {
        assert_eq!(grid(1).unwrap(), (1, 1));
        assert_eq!(grid(70_000).unwrap(), (65_535, 2));
        assert!(grid(65_535 * 65_536).is_err());
    }

    #[test]
    fn logits_get_a_shift_dispatch_unless_given() {
        let c = Chunk {
            first: 0,
            rows: 300,
            col0: 0,
            cols: 5000,
        };
        let d = dispatches(KernelFile::Logits, &c, false, true, 0, Dtype::F32).unwrap();
        assert_eq!(
            d.iter().map(|d| d.entry).collect::<Vec<_>>(),
            ["shift", "rows_wg"]
        );
        assert_eq!(d[1].params.segs, 2);
        assert_eq!(d[1].grid, (600, 1));
        let d = dispatches(KernelFile::Logits, &c, false, false, 0, Dtype::F32).unwrap();
        assert_eq!(d.len(), 1);
        let short = dispatches(
            KernelFile::Probs,
            &Chunk { cols: 16, ..c },
            true,
            false,
            7,
            Dtype::F32,
        )
        .unwrap();
        // 2044-element f32 tiles at a row stride of 17 hold 120 rows: 300 rows take 3 groups.
        assert_eq!(
            (short[0].entry, short[0].grid, short[0].params.elem_offset),
            ("rows_tile", (3, 1), 7)
        );
        assert_eq!(short[0].params.tile_rows, 120);
        // Short logits rows: the tile kernel takes its rows' shifts itself, unless given.
        let short = Chunk { cols: 16, ..c };
        let d = dispatches(KernelFile::Logits, &short, true, true, 0, Dtype::F32).unwrap();
        assert_eq!(
            (d.len(), d[0].entry, d[0].params.own_shift),
            (1, "rows_tile", 1)
        );
        let d = dispatches(KernelFile::Logits, &short, true, false, 0, Dtype::F32).unwrap();
        assert_eq!(
            (d.len(), d[0].entry, d[0].params.own_shift),
            (1, "rows_tile", 0)
        );
    }

    /// Vectors only where every row starts on one and holds whole ones: 4 f32, 8 bf16 or
    /// f16, 2 f64 elements.
    #[test]
    fn wide_loads_only_for_aligned_rows() {
        assert!(wide(0, 32_000, 32_000, 4));
        assert!(wide(8, 16, 16, 4));
        assert!(!wide(2, 16, 16, 4), "first row off a vector");
        assert!(!wide(0, 30, 30, 4), "rows off vectors");
        assert!(!wide(0, 32, 30, 4), "a partial vector at each row's end");
        let c = |cols| Chunk {
            first: 0,
            rows: 4,
            col0: 0,
            cols,
        };
        let at = |cols, off, dtype| {
            dispatches(KernelFile::Logits, &c(cols), false, false, off, dtype).unwrap()[0]
                .params
                .wide
        };
        assert_eq!(at(4096, 0, Dtype::F32), 1);
        assert_eq!(at(4097, 0, Dtype::F32), 0);
        assert_eq!(at(4096, 1, Dtype::F32), 0);
        assert_eq!(at(4100, 0, Dtype::BF16), 0, "8 bf16 to a vector");
        assert_eq!(at(4104, 8, Dtype::F16), 1);
        assert_eq!(at(4098, 2, Dtype::F64), 1, "2 f64 to a vector");
    }

    /// A tile holds `tile_rows` rows at its odd stride, in either precision, and never
    /// more rows than threads.
    #[test]
    fn tiles_hold_their_rows() {
        for in_f64 in [false, true] {
            for cols in 1..=SHORT_ROW {
                let n = tile_rows(cols, in_f64);
                assert!((1..=WG).contains(&n));
                assert!(n * (cols | 1) <= tile_elems(in_f64), "{cols} {in_f64}");
            }
        }
        assert_eq!(tile_rows(1, false), WG);
        assert_eq!(tile_rows(64, true), 1022 / 65);
    }
}
