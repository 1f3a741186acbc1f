//! f64 logits rows in f64 SIMD lanes: the exact path's sums (`exact::logit_segment`) for
//! KL, reverse and symmetric KL, cross-entropy and entropy, block by block against each
//! block's own maxima, merged as the exact path merges them. A block holding a value the
//! lanes do not take (NaN, ±inf, |v| > `BIG`) or whose maxima sit too far from the row's
//! shift goes through the exact path's own loop, which also reports bad input.
//!
//! Per element pair: wa = e^(a − ma) by a degree-13 polynomial (2 ulp), x = a − b − c with
//! a − b exact (TwoSum), and ψ(±x) = e^∓x − 1 ± x from one even and one odd series in x²
//! where |x| ≤ `NEAR`, which also give wb = wa·e^−x/g without a second exponential.

use super::super::simd_math_f64::{all, exp_nonpos, horner, pair_within, two_diff, INV_FACTORIAL};
use crate::consts::BLOCK;
use crate::semantics::exact;
use crate::semantics::rows::Bad;
use crate::semantics::sums::{shift_from, LogitSums, NO_TOP};
use pulp::Simd;

/// Largest |logit| the lanes take: a − b and a − ma stay finite, with room.
pub(super) const BIG: f64 = 1e300;

/// |x| up to which ψ(±x) come from their series (12 terms: below 1e-17 of ψ at 0.5).
const NEAR: f64 = 0.5;

/// |c − (ma − mb)| up to which wb may be formed from wa (g = e^gap): wa underflows no
/// earlier than wb would matter. Beyond it wb is its own exponential.
const GAP_SERIES: f64 = 20.0;

/// |c − (ma − mb)| up to which the lanes run at all: e^−708 flushes to 0, so g·wb with
/// g ≤ e^600 loses at most e^−108 per element. Blocks beyond it take the exact path.
const GAP_MAX: f64 = 600.0;

/// ψ(x) = x²·(E(x²) − x·O(x²)), E = Σ x^2j/(2j+2)!, O = Σ x^2j/(2j+3)!, j = 0..=6.
const PSI_E: [f64; 7] = every_other(2);
const PSI_O: [f64; 7] = every_other(3);

/// 1/(first + 2j)! for j = 0..7.
const fn every_other(first: usize) -> [f64; 7] {
    let mut c = [0.0; 7];
    let mut j = 0;
    while j < 7 {
        c[j] = INV_FACTORIAL[first + 2 * j];
        j += 1;
    }
    c
}

/// Sums over a piece of an f64 logits row, as `exact::logit_segment(a, b, shift)` gives
/// them (to the rounding of f64 sums taken in another order); `shift` `None` is a whole row,
/// shifted by its maxima as `exact::logit_row_exact` shifts it.
#[inline(always)]
pub fn segment<S: Simd>(
    s: S,
    a: &[f64],
    b: &[f64],
    shift: Option<(f64, f64)>,
) -> Result<LogitSums, Bad> {
    let shift = match shift {
        Some(shift) => shift,
        None => row_max_shift(s, a, b),
    };
    let mut total = LogitSums::default();
    for (bi, (ab, bb)) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).enumerate() {
        let mut sums = match block(s, ab, bb, shift) {
            Some(sums) => sums,
            None => exact::logit_block(ab, bb, &mut Some(shift)).map_err(|e| Bad {
                col: e.col + bi * BLOCK,
                ..e
            })?,
        };
        sums.offset_tops(bi * BLOCK);
        total.merge(&sums);
    }
    Ok(total)
}

/// `exact::max_shift` with the maxima taken in lanes; rows holding NaN or +inf (to be
/// reported) or values too large to sum take the exact path's own.
#[inline(always)]
pub(super) fn row_max_shift<S: Simd>(s: S, a: &[f64], b: &[f64]) -> (f64, f64) {
    match (side_max(s, a), side_max(s, b)) {
        (Some(ma), Some(mb)) => shift_from(ma, mb, 0.0),
        _ => exact::max_shift(a, b),
    }
}

/// The largest value of `v` where every value is finite or −inf (masked), else `None`.
#[inline(always)]
fn side_max<S: Simd>(s: S, v: &[f64]) -> Option<f64> {
    let (vv, tail) = S::as_simd_f64s(v);
    let mut mx = s.splat_f64s(f64::NEG_INFINITY);
    // −inf leaves the sum −inf; NaN, +inf or an overflow make it NaN or +inf.
    let mut sum = s.splat_f64s(0.0);
    for &x in vv {
        mx = s.max_f64s(mx, x);
        sum = s.add_f64s(sum, x);
    }
    let mut m = s.reduce_max_f64s(mx);
    let mut total = s.reduce_sum_f64s(sum);
    for &x in tail {
        m = m.max(x);
        total += x;
    }
    (!(total.is_nan() || total == f64::INFINITY)).then_some(m)
}

/// One block's sums against its own maxima, or `None` where the exact path must take it.
#[inline(always)]
fn block<S: Simd>(s: S, a: &[f64], b: &[f64], (hi, lo): (f64, f64)) -> Option<LogitSums> {
    let (av, at) = S::as_simd_f64s(a);
    let (bv, bt) = S::as_simd_f64s(b);
    let big = s.splat_f64s(BIG);
    let mut mxa = s.splat_f64s(f64::NEG_INFINITY);
    let mut mxb = mxa;
    for (&x, &y) in av.iter().zip(bv) {
        if !pair_within(s, x, y, big) {
            return None;
        }
        mxa = s.max_f64s(mxa, x);
        mxb = s.max_f64s(mxb, y);
    }
    let (mut ma, mut mb) = (s.reduce_max_f64s(mxa), s.reduce_max_f64s(mxb));
    for (&x, &y) in at.iter().zip(bt) {
        if !(x.abs() <= BIG && y.abs() <= BIG) {
            return None;
        }
        ma = ma.max(x);
        mb = mb.max(y);
    }
    if a.is_empty() {
        return None;
    }
    let mut out = LogitSums::with_shift(hi, lo);
    (out.ma, out.mb) = (ma, mb);
    out.top_a = first_at(s, a, ma);
    out.top_b = first_at(s, b, mb);
    let gap = out.shift_gap();
    // NaN (a shift from a row of −inf) fails too.
    if gap.is_nan() || gap.abs() > GAP_MAX {
        return None;
    }
    let g = gap.exp();
    let wb_from_wa = gap.abs() <= GAP_SERIES;
    let lanes = Lanes {
        ma: s.splat_f64s(ma),
        mb: s.splat_f64s(mb),
        c_hi: s.splat_f64s(hi),
        c_lo: s.splat_f64s(lo),
        g: s.splat_f64s(g),
        g_inv: s.splat_f64s(1.0 / g),
    };
    let mut acc = Acc::new(s);
    for (&x, &y) in av.iter().zip(bv) {
        acc.add(s, &lanes, x, y, wb_from_wa);
    }
    acc.into_sums(s, &mut out);
    for (&x, &y) in at.iter().zip(bt) {
        exact::logit_element(x, y, &mut out, g);
    }
    Some(out)
}

/// A block's constants, splatted once.
struct Lanes<V> {
    ma: V,
    mb: V,
    c_hi: V,
    c_lo: V,
    g: V,
    g_inv: V,
}

/// The `LogitSums` fields a block accumulates, lane by lane.
struct Acc<V> {
    sa: V,
    sb: V,
    ea: V,
    eb: V,
    xa: V,
    xb: V,
    ax_a: V,
    ax_b: V,
    psi_a: V,
    psi_b: V,
}

impl<V: Copy> Acc<V> {
    #[inline(always)]
    fn new<S: Simd<f64s = V>>(s: S) -> Self {
        let z = s.splat_f64s(0.0);
        Acc {
            sa: z,
            sb: z,
            ea: z,
            eb: z,
            xa: z,
            xb: z,
            ax_a: z,
            ax_b: z,
            psi_a: z,
            psi_b: z,
        }
    }

    /// One vector of logit pairs, all finite and within `BIG`.
    #[inline(always)]
    fn add<S: Simd<f64s = V>>(&mut self, s: S, k: &Lanes<V>, x: V, y: V, wb_from_wa: bool) {
        let xm = s.sub_f64s(x, k.ma);
        let ym = s.sub_f64s(y, k.mb);
        let wa = exp_nonpos(s, xm);
        // x − y − c with x − y kept exactly (TwoSum): huge logits lose nothing.
        let (d_hi, d_lo) = two_diff(s, x, y);
        let xs = s.add_f64s(s.sub_f64s(d_hi, k.c_hi), s.sub_f64s(d_lo, k.c_lo));
        let ax = s.abs_f64s(xs);
        let near = s.less_than_or_equal_f64s(ax, s.splat_f64s(NEAR));
        let z = s.mul_f64s(xs, xs);
        let even = horner(s, z, &PSI_E);
        let odd = s.mul_f64s(xs, horner(s, z, &PSI_O));
        let psi_p = s.mul_f64s(z, s.sub_f64s(even, odd)); // ψ(x)
        let psi_m = s.mul_f64s(z, s.add_f64s(even, odd)); // ψ(−x)
        let one = s.splat_f64s(1.0);
        let (wb, ta, tb) = if wb_from_wa && all(s, near) {
            // e^−x = 1 − x + ψ(x): g·wb = wa·e^−x.
            let e_minus = s.add_f64s(s.sub_f64s(one, xs), psi_p);
            let wb = s.mul_f64s(s.mul_f64s(wa, e_minus), k.g_inv);
            (wb, s.mul_f64s(wa, psi_p), s.mul_f64s(wb, psi_m))
        } else {
            let wb = exp_nonpos(s, ym);
            // Away from 0: w·ψ(x) = w·e^−x − w + w·x, with wa·e^−x = g·wb (no overflow).
            let da = s.mul_add_f64s(wa, xs, s.sub_f64s(s.mul_f64s(k.g, wb), wa));
            let db = s.sub_f64s(s.sub_f64s(s.mul_f64s(wa, k.g_inv), wb), s.mul_f64s(wb, xs));
            (
                wb,
                s.select_f64s(near, s.mul_f64s(wa, psi_p), da),
                s.select_f64s(near, s.mul_f64s(wb, psi_m), db),
            )
        };
        self.sa = s.add_f64s(self.sa, wa);
        self.sb = s.add_f64s(self.sb, wb);
        self.ea = s.mul_add_f64s(wa, xm, self.ea);
        self.eb = s.mul_add_f64s(wa, ym, self.eb);
        self.xa = s.mul_add_f64s(wa, xs, self.xa);
        self.xb = s.mul_add_f64s(wb, xs, self.xb);
        self.ax_a = s.mul_add_f64s(wa, ax, self.ax_a);
        self.ax_b = s.mul_add_f64s(wb, ax, self.ax_b);
        self.psi_a = s.add_f64s(self.psi_a, ta);
        self.psi_b = s.add_f64s(self.psi_b, tb);
    }

    #[inline(always)]
    fn into_sums<S: Simd<f64s = V>>(self, s: S, out: &mut LogitSums) {
        out.sa += s.reduce_sum_f64s(self.sa);
        out.sb += s.reduce_sum_f64s(self.sb);
        out.ea += s.reduce_sum_f64s(self.ea);
        out.eb += s.reduce_sum_f64s(self.eb);
        out.xa += s.reduce_sum_f64s(self.xa);
        out.xb += s.reduce_sum_f64s(self.xb);
        out.ax_a += s.reduce_sum_f64s(self.ax_a);
        out.ax_b += s.reduce_sum_f64s(self.ax_b);
        out.psi_a += s.reduce_sum_f64s(self.psi_a);
        out.psi_b += s.reduce_sum_f64s(self.psi_b);
    }
}

/// The column of the first element of `v` equal to `m` (a value of `v`): a compare per
/// vector until the vector that holds it, then element by element.
#[inline(always)]
fn first_at<S: Simd>(s: S, v: &[f64], m: f64) -> u64 {
    let (vv, _) = S::as_simd_f64s(v);
    let vm = s.splat_f64s(m);
    let mut start = vv.len() * S::F64_LANES;
    for (i, &x) in vv.iter().enumerate() {
        if s.first_true_m64s(s.equal_f64s(x, vm)) < S::F64_LANES {
            start = i * S::F64_LANES;
            break;
        }
    }
    v[start..]
        .iter()
        .position(|&x| x == m)
        .map_or(NO_TOP, |j| (start + j) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp::WithSimd;

    #[derive(Clone, Copy)]
    struct Run<'a>(&'a [f64], &'a [f64], Option<(f64, f64)>);
    impl WithSimd for Run<'_> {
        type Output = Result<LogitSums, Bad>;
        fn with_simd<S: Simd>(self, s: S) -> Self::Output {
            segment(s, self.0, self.1, self.2)
        }
    }

    fn every_level(a: &[f64], b: &[f64], shift: Option<(f64, f64)>) -> Vec<Result<LogitSums, Bad>> {
        crate::cpu::on_every_level(Run(a, b, shift))
    }

    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        /// Roughly normal: the sum of four uniforms, centred.
        fn normal(&mut self) -> f64 {
            (0..4).map(|_| self.unit()).sum::<f64>() * 1.7 - 3.4
        }
    }

    /// Pairs of rows: a ~ 2·N plus `offset`, b = a + σ·N (σ from 1e-9 to 3, so x runs
    /// through the series and the direct form), and rows whose blocks sit far apart.
    fn rows(rng: &mut Rng, n: usize, sigma: f64, offset: f64) -> (Vec<f64>, Vec<f64>) {
        let a: Vec<f64> = (0..n).map(|_| 2.0 * rng.normal() + offset).collect();
        let b = a.iter().map(|&x| x + sigma * rng.normal()).collect();
        (a, b)
    }

    /// `got` and `want` agree to `rel` of `scale` (a sum of the terms' magnitudes).
    fn near(got: f64, want: f64, scale: f64, rel: f64) -> bool {
        got == want || (got - want).abs() <= rel * scale.abs()
    }

    /// Every field against `exact::logit_segment` on the same piece: maxima, tops, shift and
    /// zero counts exactly; the sums to 1e-13 of their terms' magnitudes (f64 sums in
    /// another order, the exponential within 2 ulp), ψ sums to 1e-12 (the direct form
    /// above |x| = 0.5 cancels ~20×).
    fn check(what: &str, a: &[f64], b: &[f64], shift: Option<(f64, f64)>) {
        let want = match shift {
            Some(sh) => exact::logit_segment(a, b, Some(sh)),
            None => exact::logit_row_exact(a, b),
        }
        .unwrap();
        for got in every_level(a, b, shift) {
            let got = got.unwrap();
            let same = |g: u64, w: u64| g == w;
            assert!(
                got.ma.to_bits() == want.ma.to_bits()
                    && got.mb.to_bits() == want.mb.to_bits()
                    && same(got.top_a, want.top_a)
                    && same(got.top_b, want.top_b)
                    && same(got.q_zero, want.q_zero)
                    && same(got.p_zero, want.p_zero)
                    && got.shift_hi == want.shift_hi
                    && got.shift_lo == want.shift_lo,
                "{what}: {got:?} against {want:?}"
            );
            let fields = [
                (got.sa, want.sa, want.sa, 1e-13),
                (got.sb, want.sb, want.sb, 1e-13),
                (got.ea, want.ea, want.ea, 1e-13),
                (got.eb, want.eb, want.eb, 1e-13),
                (got.xa, want.xa, want.ax_a, 1e-13),
                (got.xb, want.xb, want.ax_b, 1e-13),
                (got.ax_a, want.ax_a, want.ax_a, 1e-13),
                (got.ax_b, want.ax_b, want.ax_b, 1e-13),
                (got.psi_a, want.psi_a, want.psi_a, 1e-12),
                (got.psi_b, want.psi_b, want.psi_b, 1e-12),
            ];
            for (i, (g, w, scale, rel)) in fields.into_iter().enumerate() {
                assert!(
                    near(g, w, scale, rel) || (g.is_nan() && w.is_nan()),
                    "{what} field {i}: {g:e} against {w:e}\n{got:?}\n{want:?}"
                );
            }
        }
    }

    #[test]
    fn sums_match_the_exact_path() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for n in [1, 7, 8, 9, 511, 512, 513, 1500, 4099] {
            for sigma in [1e-9, 1e-4, 0.1, 0.6, 3.0] {
                for offset in [0.0, 1e4, -3e7, 1e20] {
                    let (a, b) = rows(&mut rng, n, sigma, offset);
                    let what = format!("n {n} σ {sigma:e} offset {offset:e}");
                    check(&what, &a, &b, None);
                    // A piece with the row's shift given (split rows, re-reads): off from
                    // the maxima' shift by as much as a first block's estimate can be.
                    let (hi, lo) = exact::max_shift(&a, &b);
                    let (hi, lo2) = crate::semantics::sums::two_sum(hi, 0.3);
                    check(&format!("{what} shifted"), &a, &b, Some((hi, lo + lo2)));
                }
            }
        }
    }

    /// Blocks the lanes hand to the exact path, or take with their own exponentials: −inf
    /// (masked) on either side, a block whose maxima sit 30 and 650 below the row's (wb its
    /// own exponential; the exact path), values 800 below their maximum (e^x flushes to 0)
    /// and logits near the largest the lanes take.
    #[test]
    fn edges_match_the_exact_path() {
        let mut rng = Rng(7);
        let (mut a, mut b) = rows(&mut rng, 2048, 0.05, 0.0);
        a[3] = f64::NEG_INFINITY;
        b[600] = f64::NEG_INFINITY;
        a[700] = f64::NEG_INFINITY;
        b[700] = f64::NEG_INFINITY;
        check("masked", &a, &b, None);
        let (mut a, b) = rows(&mut rng, 2048, 0.05, 0.0);
        for x in &mut a[512..1024] {
            *x -= 30.0;
        }
        for x in &mut a[1024..1536] {
            *x -= 650.0;
        }
        check("blocks far below", &a, &b, None);
        let (mut a, mut b) = rows(&mut rng, 1100, 0.05, 0.0);
        for k in (0..1100).step_by(3) {
            a[k] -= 800.0;
            b[k] -= 800.0;
        }
        check("underflow", &a, &b, None);
        let (a, b) = rows(&mut rng, 100, 0.05, 9e299);
        check("near BIG", &a, &b, None);
        let (a, b) = rows(&mut rng, 100, 0.05, 2e300);
        check("beyond BIG", &a, &b, None);
    }

    /// NaN and +inf are reported at their column, as the exact path reports them.
    #[test]
    fn bad_values_are_named_where_they_are() {
        let mut rng = Rng(11);
        for (col, v) in [(700, f64::NAN), (1030, f64::INFINITY), (5, f64::NAN)] {
            let (mut a, b) = rows(&mut rng, 1100, 0.1, 0.0);
            a[col] = v;
            let want = exact::logit_row_exact(&a, &b).unwrap_err();
            for got in every_level(&a, &b, None) {
                let got = got.unwrap_err();
                assert_eq!(
                    (got.col, got.side, got.kind),
                    (want.col, want.side, want.kind)
                );
                assert_eq!(got.col, col);
            }
        }
    }
}
