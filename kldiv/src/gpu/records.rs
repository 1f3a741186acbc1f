//! What the kernels write, and how it becomes `semantics` sums. Every struct here mirrors one
//! in shaders/; `shaders::tests` checks each layout against naga's, member by member.

use super::shaders::KernelFile;
use crate::request::Divergence;
use crate::semantics::plan::RowParams;
use crate::semantics::sums::{JsSums, LogitSums, ProbSums};

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
}

/// shaders/probs.wgsl `ProbRec`: one per row (short rows) or segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ProbRec {
    pub main: f32,
    pub main2: f32,
    pub sp: f32,
    pub sq: f32,
    pub diff: f32,
    pub q_zero: u32,
    pub p_zero: u32,
    /// 1 + the first column holding a value the kernel does not handle; 0 when none.
    pub bad: u32,
}

/// shaders/logits.wgsl `LogitRec`: one per segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LogitRec {
    pub ma: f32,
    pub mb: f32,
    pub sa: f32,
    pub sb: f32,
    pub ea: f32,
    pub eb: f32,
    pub xa: f32,
    pub xb: f32,
    pub ax_a: f32,
    pub ax_b: f32,
    pub psi_a: f32,
    pub psi_b: f32,
    pub xerr_a: f32,
    pub xerr_b: f32,
    pub c_hi: f32,
    pub c_lo: f32,
    pub na: u32,
    pub nb: u32,
    pub q_zero: u32,
    pub p_zero: u32,
    pub bad: u32,
    pub psi_bad: u32,
    pub _pad: [u32; 2],
}

/// shaders/logits_js.wgsl `JsRec`: one per row (short rows) or segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct JsRec {
    pub h: f32,
    /// Σ m·δ·(|u| + 2δ), δ the kernel's bound on the rounding of u.
    pub err: f32,
    /// Σ m·|u|.
    pub amu: f32,
    pub sp: f32,
    pub sq: f32,
    pub bad: u32,
    pub _pad: [u32; 2],
}

/// The "no finite value yet" stand-in the logits kernels use for −inf (drivers need not
/// honour infinities); shared with the shaders by `shaders::constants`.
pub const NO_MAX: f32 = -3.4e38;

/// A probability record as the CPU's sums: counted zeros become the infinities they stand
/// for.
pub fn prob_sums(div: Divergence, r: &ProbRec) -> ProbSums {
    let inf = f64::INFINITY;
    let mut s = ProbSums {
        main: r.main as f64,
        main2: r.main2 as f64,
        sp: r.sp as f64,
        sq: r.sq as f64,
        diff: r.diff as f64,
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
pub fn logit_sums(r: &LogitRec) -> LogitSums {
    // Elements at the maximum are counted apart from the rest of the sum.
    let (sa, sb) = (r.na as f64 + r.sa as f64, r.nb as f64 + r.sb as f64);
    let max = |v: f32, s: f64| {
        if s == 0.0 && v <= NO_MAX {
            f64::NEG_INFINITY
        } else {
            v as f64
        }
    };
    let psi = |v: f32| if r.psi_bad != 0 { f64::NAN } else { v as f64 };
    LogitSums {
        ma: max(r.ma, sa),
        mb: max(r.mb, sb),
        sa,
        sb,
        ea: r.ea as f64,
        eb: r.eb as f64,
        xa: r.xa as f64,
        xb: r.xb as f64,
        ax_a: r.ax_a as f64,
        ax_b: r.ax_b as f64,
        psi_a: psi(r.psi_a),
        psi_b: psi(r.psi_b),
        xerr_a: r.xerr_a as f64,
        xerr_b: r.xerr_b as f64,
        // The shift as the kernel subtracted it.
        shift_hi: r.c_hi as f64,
        shift_lo: r.c_lo as f64,
        q_zero: r.q_zero as u64,
        p_zero: r.p_zero as u64,
    }
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
    pub fn add(&mut self, r: &JsRec) {
        self.h += r.h as f64;
        self.err += r.err as f64;
        self.amu += r.amu as f64;
        self.sp += r.sp as f64;
        self.sq += r.sq as f64;
    }

    /// The row's sums with a bound on what rounding cost them. Each element's u is off by its
    /// own δ (bounded in the kernel) plus the rounding of the kernel's f32 row constants
    /// c = ma − mb and l = ln sb − ln sa (`params` as given, against [`row_data`]'s f32);
    /// F changes by at most ½(|u| + |Δu|)·|Δu| for a change Δu of its argument, and
    /// JS = ½ Σ m·F.
    pub fn sums(&self, params: RowParams) -> JsSums {
        let RowParams::Softmax { ma, lnsa, mb, lnsb } = params else {
            return JsSums::default();
        };
        let k = row_data(params);
        let c32 = (k[0] - k[2]) as f64;
        let l32 = (k[3] - k[1]) as f64;
        let dc = ((ma - mb) - c32).abs() + ((lnsb - lnsa) - l32).abs();
        let sum_m = 0.5 * (self.sp + self.sq);
        let f_err = 0.5 * (self.err + dc * self.amu + 2.0 * dc * dc * sum_m);
        JsSums {
            h: self.h,
            sp: self.sp,
            sq: self.sq,
            err: 0.5 * f_err + crate::semantics::finish::SUMS_EPS_F32 * self.h,
        }
    }
}

/// A row's parameters as the kernels read them (shaders/shared/layout.wgsl `row_data`).
pub fn row_data(params: RowParams) -> [f32; 4] {
    match params {
        RowParams::None | RowParams::Skip => [0.0; 4],
        RowParams::Affine { add, p, q } => [p as f32, q as f32, add as f32, 0.0],
        // Maxima are input values (exact in f32); ln of the sums is small.
        RowParams::Softmax { ma, lnsa, mb, lnsb } => {
            [ma as f32, lnsa as f32, mb as f32, lnsb as f32]
        }
        // The shift as an f32 pair: the kernel subtracts both, and records them.
        RowParams::Shift { hi, lo } => {
            let c_hi = hi as f32;
            [c_hi, ((hi - c_hi as f64) + lo) as f32, 0.0, 0.0]
        }
    }
}

/// Bytes of one record of a kernel file.
pub fn rec_size(file: super::shaders::KernelFile) -> u64 {
    use super::shaders::KernelFile;
    (match file {
        KernelFile::Probs => std::mem::size_of::<ProbRec>(),
        KernelFile::Logits => std::mem::size_of::<LogitRec>(),
        KernelFile::LogitsJs => std::mem::size_of::<JsRec>(),
    }) as u64
}

/// What the records of one row add up to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Folded {
    Probs(ProbSums),
    Logits(LogitSums),
    Js(JsParts),
}

/// The records of one row's segments `span`, added; whether any flagged a value the kernel
/// does not handle.
pub(super) fn fold(
    file: KernelFile,
    div: Divergence,
    view: &[u8],
    span: std::ops::Range<usize>,
) -> (bool, Folded) {
    match file {
        KernelFile::Probs => {
            let recs: &[ProbRec] = bytemuck::cast_slice(view);
            let mut s = ProbSums::default();
            let mut bad = false;
            for r in &recs[span] {
                bad |= r.bad != 0;
                s.merge(&prob_sums(div, r));
            }
            (bad, Folded::Probs(s))
        }
        KernelFile::Logits => {
            let recs: &[LogitRec] = bytemuck::cast_slice(view);
            let mut s = LogitSums::default();
            let mut bad = false;
            for r in &recs[span] {
                bad |= r.bad != 0;
                s.merge(&logit_sums(r));
            }
            (bad, Folded::Logits(s))
        }
        KernelFile::LogitsJs => {
            let recs: &[JsRec] = bytemuck::cast_slice(view);
            let mut s = JsParts::default();
            let mut bad = false;
            for r in &recs[span] {
                bad |= r.bad != 0;
                s.add(r);
            }
            (bad, Folded::Js(s))
        }
    }
}
