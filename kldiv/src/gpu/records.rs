//! What the kernels write, and how it becomes `semantics` sums. Every struct here mirrors one
//! in shaders/; `shaders::tests` checks each layout against naga's, member by member.

use super::shaders::KernelFile;
use crate::request::Divergence;
use crate::semantics::finish::F32_TERM_FLOOR;
use crate::semantics::plan::RowParams;
use crate::semantics::sums::{self, two_sum, AgreeSums, JsSums, LogitSums, ProbSums, TOP_LIST};

/// shaders/shared/layout.wgsl `Params`: one per dispatch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Rows in this dispatch, columns per row in this dispatch, distance between rows.
    pub rows: u32,
    pub cols: u32,
    pub row_stride: u32,
    /// Element index of (row 0, column 0) of this dispatch in the bound buffers.
    pub elem_offset: u32,
    /// Workgroup-sized segments per row, and the dispatch grid's x size.
    pub segs: u32,
    pub grid_x: u32,
    /// Index of this dispatch's first row in `row_data`, and its first column in the row.
    pub row0: u32,
    pub col0: u32,
    /// 1 where every row starts on a 16-byte vector of elements and holds whole vectors
    /// (`dispatch::wide`): the kernels then load a vector at once.
    pub wide: u32,
    /// Rows per workgroup for the short-row kernels (`dispatch::tile_rows`).
    pub tile_rows: u32,
    /// 1 where the logits short-row kernel takes each row's shift itself (else `row_data`).
    pub own_shift: u32,
    pub _pad1: u32,
}

/// The type a kernel computes and records in: f32, or f64 (f64 inputs on adapters with
/// SHADER_F64). The records below are generic over it.
pub trait Real: Copy + Default + std::fmt::Debug + bytemuck::Pod + Into<f64> + 'static {}
impl Real for f32 {}
impl Real for f64 {}

/// shaders/probs.wgsl `ProbRec`: one per row (short rows) or segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbRec<R> {
    pub main: R,
    pub main2: R,
    pub sp: R,
    pub sq: R,
    pub diff: R,
    pub q_zero: u32,
    pub p_zero: u32,
    /// 1 + the first column holding a value the kernel does not handle; 0 when none.
    pub bad: u32,
    pub _pad: u32,
}

/// shaders/logits.wgsl `LogitRec`: one per segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LogitRec<R> {
    pub ma: R,
    pub mb: R,
    pub sa: R,
    pub sb: R,
    pub ea: R,
    pub eb: R,
    pub xa: R,
    pub xb: R,
    pub ax_a: R,
    pub ax_b: R,
    pub psi_a: R,
    pub psi_b: R,
    pub xerr_a: R,
    pub xerr_b: R,
    pub c_hi: R,
    pub c_lo: R,
    pub na: u32,
    pub nb: u32,
    pub q_zero: u32,
    pub p_zero: u32,
    pub bad: u32,
    pub psi_bad: u32,
    /// The column of each side's first maximum in the row; [`NO_TOP`] where none.
    pub top_a: u32,
    pub top_b: u32,
}

/// shaders/logits_js.wgsl `JsRec`: one per row (short rows) or segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct JsRec<R> {
    pub h: R,
    /// Σ m·δ·(|u| + 2δ), δ the kernel's bound on the rounding of u.
    pub err: R,
    /// Σ m·|u|.
    pub amu: R,
    pub sp: R,
    pub sq: R,
    pub bad: u32,
    pub _pad: [u32; 3],
}

/// shaders/logits_agree.wgsl `AgreeRec`: one per row (short rows) or segment.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AgreeRec<R> {
    pub sum_min: R,
    /// Each side's largest values (−inf as [`NO_MAX`]) and their columns in the row
    /// ([`NO_TOP`] past the entries filled), largest first.
    pub va: [R; TOP_LIST],
    pub vb: [R; TOP_LIST],
    pub ca: [u32; TOP_LIST],
    pub cb: [u32; TOP_LIST],
    /// 1 + the first column holding a value the kernel does not handle; 0 when none.
    pub bad: u32,
    pub _pad: u32,
}

// SAFETY: each record is `repr(C)`, made only of `Pod` fields, and has no implicit padding
// for R = f32 (every field 4 bytes) or R = f64 (the f64 fields first, then an even number
// of u32: 56, 160, 56 and 256 bytes). `shaders::tests` checks every offset and size against the
// shaders' own layout.
macro_rules! pod_records {
    ($($t:ident),*) => {$(
        unsafe impl bytemuck::Zeroable for $t<f32> {}
        unsafe impl bytemuck::Pod for $t<f32> {}
        unsafe impl bytemuck::Zeroable for $t<f64> {}
        unsafe impl bytemuck::Pod for $t<f64> {}
    )*};
}
pod_records!(ProbRec, LogitRec, JsRec, AgreeRec);

/// The "no finite value yet" stand-in the logits kernels use for −inf (drivers need not
/// honour infinities); shared with the shaders by `shaders::constants`.
pub const NO_MAX: f32 = -3.4e38;

/// `LogitRec::top_*` of a side without a finite value (shared with the shaders).
pub const NO_TOP: u32 = u32::MAX;

/// A probability record as the CPU's sums: counted zeros become the infinities they stand
/// for.
pub fn prob_sums<R: Real>(div: Divergence, r: &ProbRec<R>) -> ProbSums {
    let inf = f64::INFINITY;
    let mut s = ProbSums {
        main: r.main.into(),
        main2: r.main2.into(),
        sp: r.sp.into(),
        sq: r.sq.into(),
        diff: r.diff.into(),
    };
    match div {
        Divergence::Kl if r.q_zero > 0 => s.main = inf,
        Divergence::ReverseKl if r.p_zero > 0 => s.main = inf,
        Divergence::SymmetricKl => {
            if r.q_zero > 0 {
                s.main = inf;
            }
            if r.p_zero > 0 {
                s.main2 = inf;
            }
        }
        Divergence::CrossEntropy if r.q_zero > 0 => s.main = -inf,
        _ => {}
    }
    s
}

/// A logits record as the CPU's sums.
pub fn logit_sums<R: Real>(r: &LogitRec<R>) -> LogitSums {
    // Elements at the maximum are counted apart from the rest of the sum.
    let f = |v: R| -> f64 { v.into() };
    let (sa, sb) = (r.na as f64 + f(r.sa), r.nb as f64 + f(r.sb));
    let max = |v: R, s: f64| {
        if s == 0.0 && f(v) <= NO_MAX as f64 {
            f64::NEG_INFINITY
        } else {
            f(v)
        }
    };
    let psi = |v: R| if r.psi_bad != 0 { f64::NAN } else { f(v) };
    let top = |t: u32| if t == NO_TOP { sums::NO_TOP } else { t as u64 };
    LogitSums {
        ma: max(r.ma, sa),
        mb: max(r.mb, sb),
        sa,
        sb,
        ea: f(r.ea),
        eb: f(r.eb),
        xa: f(r.xa),
        xb: f(r.xb),
        ax_a: f(r.ax_a),
        ax_b: f(r.ax_b),
        psi_a: psi(r.psi_a),
        psi_b: psi(r.psi_b),
        xerr_a: f(r.xerr_a),
        xerr_b: f(r.xerr_b),
        // The shift as the kernel subtracted it.
        shift_hi: f(r.c_hi),
        shift_lo: f(r.c_lo),
        q_zero: r.q_zero as u64,
        p_zero: r.p_zero as u64,
        top_a: top(r.top_a),
        top_b: top(r.top_b),
    }
}

/// An agreement record as the CPU's sums (the kernel's −inf stand-in back to −inf).
pub fn agree_sums<R: Real>(r: &AgreeRec<R>) -> AgreeSums {
    let mut s = AgreeSums {
        sum_min: r.sum_min.into(),
        ..AgreeSums::default()
    };
    let value = |v: R| {
        let v: f64 = v.into();
        if v <= NO_MAX as f64 {
            f64::NEG_INFINITY
        } else {
            v
        }
    };
    for i in 0..TOP_LIST {
        if r.ca[i] != NO_TOP {
            s.top_a.push(value(r.va[i]), r.ca[i] as u64);
        }
        if r.cb[i] != NO_TOP {
            s.top_b.push(value(r.vb[i]), r.cb[i] as u64);
        }
    }
    s
}

/// The Jensen–Shannon-over-logits sums of one row (its records added), before the bound on
/// the row constants' rounding is known.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsParts {
    pub h: f64,
    pub err: f64,
    pub amu: f64,
    pub sp: f64,
    pub sq: f64,
}

impl JsParts {
    pub fn add<R: Real>(&mut self, r: &JsRec<R>) {
        self.h += r.h.into();
        self.err += r.err.into();
        self.amu += r.amu.into();
        self.sp += r.sp.into();
        self.sq += r.sq.into();
    }

    /// The row's sums with a bound on what rounding cost them. Each element's u is off by its
    /// own δ (bounded in the kernel) plus the rounding of the kernel's row constants
    /// c = ma − mb and l = ln sb − ln sa (`params` as given, against [`row_data`]'s f32, or
    /// formed in f64 by f64 kernels); F changes by at most ½(|u| + |Δu|)·|Δu| for a change Δu
    /// of its argument, and JS = ½ Σ m·F.
    pub fn sums(&self, params: RowParams, in_f64: bool, cols: usize) -> JsSums {
        let RowParams::Softmax { ma, mb, l, .. } = params else {
            return JsSums::default();
        };
        let (dc, eps) = if in_f64 {
            // The kernel forms ma − mb in f64, off by its rounding; l it reads as it is.
            let (_, c_lo) = two_sum(ma, -mb);
            (c_lo.abs(), crate::semantics::finish::SUMS_EPS_F64)
        } else {
            let k = row_data(params);
            let c32 = (k[0] - k[2]) as f64;
            let dc = ((ma - mb) - c32).abs() + (l - k[3] as f64).abs();
            (dc, crate::semantics::finish::SUMS_EPS_F32)
        };
        let sum_m = 0.5 * (self.sp + self.sq);
        let f_err = 0.5 * (self.err + dc * self.amu + 2.0 * dc * dc * sum_m);
        // f32 terms below 2^−126 are subnormal or 0.
        let floor = if in_f64 {
            0.0
        } else {
            cols as f64 * F32_TERM_FLOOR
        };
        JsSums {
            h: self.h,
            sp: self.sp,
            sq: self.sq,
            err: 0.5 * f_err + eps * self.h + floor,
        }
    }
}

/// A row's parameters as the f32 kernels read them (shaders/shared/layout.wgsl `row_data`).
pub fn row_data(params: RowParams) -> [f32; 4] {
    match params {
        RowParams::None | RowParams::Skip => [0.0; 4],
        RowParams::Affine { add, p, q } => [p as f32, q as f32, add as f32, 0.0],
        // Maxima are input values (exact in f32); ln of the sums is small.
        RowParams::Softmax { ma, lnsa, mb, l } => [ma as f32, lnsa as f32, mb as f32, l as f32],
        // The shift as an f32 pair: the kernel subtracts both, and records them.
        RowParams::Shift { hi, lo } => {
            let c_hi = hi as f32;
            [c_hi, ((hi - c_hi as f64) + lo) as f32, 0.0, 0.0]
        }
    }
}

/// A row's parameters as the f64 kernels read them: as they are.
pub fn row_data_f64(params: RowParams) -> [f64; 4] {
    match params {
        RowParams::None | RowParams::Skip => [0.0; 4],
        RowParams::Affine { add, p, q } => [p, q, add, 0.0],
        RowParams::Softmax { ma, lnsa, mb, l } => [ma, lnsa, mb, l],
        RowParams::Shift { hi, lo } => [hi, lo, 0.0, 0.0],
    }
}

/// The `row_data` bytes of `rows` for the kernels of one precision.
pub fn row_data_bytes(rows: impl Iterator<Item = RowParams>, in_f64: bool) -> Vec<u8> {
    if in_f64 {
        let v: Vec<[f64; 4]> = rows.map(row_data_f64).collect();
        bytemuck::cast_slice(&v).to_vec()
    } else {
        let v: Vec<[f32; 4]> = rows.map(row_data).collect();
        bytemuck::cast_slice(&v).to_vec()
    }
}

/// Bytes of one `row_data` entry.
pub fn row_data_size(in_f64: bool) -> u64 {
    if in_f64 {
        32
    } else {
        16
    }
}

/// Bytes of one record of a kernel file.
pub fn rec_size(file: KernelFile, in_f64: bool) -> u64 {
    fn size<R: Real>(file: KernelFile) -> usize {
        match file {
            KernelFile::Probs => std::mem::size_of::<ProbRec<R>>(),
            KernelFile::Logits => std::mem::size_of::<LogitRec<R>>(),
            KernelFile::LogitsJs => std::mem::size_of::<JsRec<R>>(),
            KernelFile::LogitsAgree => std::mem::size_of::<AgreeRec<R>>(),
        }
    }
    (if in_f64 {
        size::<f64>(file)
    } else {
        size::<f32>(file)
    }) as u64
}

/// What the records of one row add up to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Folded {
    Probs(ProbSums),
    Logits(LogitSums),
    Js(JsParts),
    Agree(AgreeSums),
}

/// The records of one row's segments `span`, added; whether any flagged a value the kernel
/// does not handle.
pub(super) fn fold(
    file: KernelFile,
    in_f64: bool,
    div: Divergence,
    view: &[u8],
    span: std::ops::Range<usize>,
) -> (bool, Folded) {
    if in_f64 {
        fold_as::<f64>(file, div, view, span)
    } else {
        fold_as::<f32>(file, div, view, span)
    }
}

fn fold_as<R: Real>(
    file: KernelFile,
    div: Divergence,
    view: &[u8],
    span: std::ops::Range<usize>,
) -> (bool, Folded)
where
    ProbRec<R>: bytemuck::Pod,
    LogitRec<R>: bytemuck::Pod,
    JsRec<R>: bytemuck::Pod,
    AgreeRec<R>: bytemuck::Pod,
{
    match file {
        KernelFile::Probs => {
            let recs: &[ProbRec<R>] = bytemuck::cast_slice(view);
            let mut s = ProbSums::default();
            let mut bad = false;
            for r in &recs[span] {
                bad |= r.bad != 0;
                s.merge(&prob_sums(div, r));
            }
            (bad, Folded::Probs(s))
        }
        KernelFile::Logits => {
            let recs: &[LogitRec<R>] = bytemuck::cast_slice(view);
            let mut s = LogitSums::default();
            let mut bad = false;
            for r in &recs[span] {
                bad |= r.bad != 0;
                s.merge(&logit_sums(r));
            }
            (bad, Folded::Logits(s))
        }
        KernelFile::LogitsJs => {
            let recs: &[JsRec<R>] = bytemuck::cast_slice(view);
            let mut s = JsParts::default();
            let mut bad = false;
            for r in &recs[span] {
                bad |= r.bad != 0;
                s.add(r);
            }
            (bad, Folded::Js(s))
        }
        KernelFile::LogitsAgree => {
            let recs: &[AgreeRec<R>] = bytemuck::cast_slice(view);
            let mut s = AgreeSums::default();
            let mut bad = false;
            for r in &recs[span] {
                bad |= r.bad != 0;
                s.merge(&agree_sums(r));
            }
            (bad, Folded::Agree(s))
        }
    }
}
