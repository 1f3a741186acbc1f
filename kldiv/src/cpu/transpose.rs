//! Rows to columns for the lane-per-row kernel ([`super::kernels::short_rows`]).
//!
//! `S::F32_LANES` short rows become `cols` vectors, vector j holding column j of every row.
//! Element-wise copies cost as much as the divergence itself for 16-column rows (two scalar
//! moves per element), so on AVX-512 and AVX2 whole 16×16 (8×8) tiles are transposed in
//! registers: 4 (3) shuffle stages, each row read with one masked load. pulp's portable
//! API has no shuffles, so those two levels are recognised by type (the check folds away
//! at compile time); every other level takes the element-wise copy.

use crate::element::Element;
use pulp::Simd;

/// `dst[j·lanes + r] = src[r·cols + j]` for the `lanes = S::F32_LANES` rows of `src`.
#[inline(always)]
pub fn rows_to_columns<S: Simd>(s: S, src: &[f32], cols: usize, dst: &mut [f32]) {
    let lanes = S::F32_LANES;
    let (src, dst) = (&src[..lanes * cols], &mut dst[..lanes * cols]);
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(v4) = super::simd_math::as_v4(s) {
            return x86::tiles16(v4, src, cols, dst);
        }
        let any: &dyn std::any::Any = &s;
        if let Some(&v3) = any.downcast_ref::<pulp::x86::V3>() {
            return x86::tiles8(v3, src, cols, dst);
        }
    }
    let _ = s;
    copy_elementwise(lanes, src, cols, dst);
}

/// [`rows_to_columns`] for rows of `T` (f32, f16 or bf16), widened to f32 on the way. On
/// AVX-512 each half-width row piece is widened in its register (bf16: its bits moved into
/// an f32's top half; f16: `vcvtph2ps`), so short half-width rows cost no pass through
/// memory; elsewhere they are widened into `wide` (at least `src.len()` long) first.
#[inline(always)]
pub fn elements_to_columns<S: Simd, T: Element>(
    s: S,
    src: &[T],
    cols: usize,
    dst: &mut [f32],
    wide: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::element::Dtype;
        if let (Some(v4), Dtype::BF16 | Dtype::F16) = (super::simd_math::as_v4(s), T::DTYPE) {
            if let Ok(bits) = bytemuck::try_cast_slice::<T, u16>(src) {
                let n = 16 * cols;
                return x86::tiles16_half(
                    v4,
                    &bits[..n],
                    cols,
                    &mut dst[..n],
                    T::DTYPE == Dtype::BF16,
                );
            }
        }
    }
    rows_to_columns(s, T::as_f32(src, wide), cols, dst)
}

#[inline(always)]
fn copy_elementwise(lanes: usize, src: &[f32], cols: usize, dst: &mut [f32]) {
    for r in 0..lanes {
        for j in 0..cols {
            dst[j * lanes + r] = src[r * cols + j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use pulp::cast;
    use pulp::x86::{V3, V4};
    use std::arch::x86_64::{__m256, __m256d, __m512, __m512d};

    /// 16 rows: for each tile of up to 16 columns, load row pieces (zero-padded), transpose.
    #[inline(always)]
    pub fn tiles16(v4: V4, src: &[f32], cols: usize, dst: &mut [f32]) {
        tiles16_with(v4, cols, dst, |start, w, mask| {
            let piece = &src[start..start + w];
            // SAFETY: the mask enables only the `w` lanes inside `piece`; masked-off lanes
            // are not read.
            unsafe { v4.avx512f._mm512_maskz_loadu_ps(mask, piece.as_ptr()) }
        })
    }

    /// [`tiles16`] for 16 rows of bf16 (`bf16`) or f16 bit patterns, widened exactly.
    #[inline(always)]
    pub fn tiles16_half(v4: V4, src: &[u16], cols: usize, dst: &mut [f32], bf16: bool) {
        tiles16_with(v4, cols, dst, |start, w, mask| {
            let piece = &src[start..start + w];
            // SAFETY: as in `tiles16`, 16-bit lanes.
            let h = unsafe {
                v4.avx512bw
                    ._mm256_maskz_loadu_epi16(mask, piece.as_ptr().cast::<i16>())
            };
            if bf16 {
                let f = v4.avx512f;
                cast(f._mm512_slli_epi32::<16>(f._mm512_cvtepu16_epi32(h)))
            } else {
                v4.avx512f._mm512_cvtph_ps(h)
            }
        })
    }

    /// The tiles of 16 rows of `cols` columns, row r's piece from column c0 (`w` wide)
    /// loaded by `load(r·cols + c0, w, mask of w lanes)`.
    #[inline(always)]
    fn tiles16_with(
        v4: V4,
        cols: usize,
        dst: &mut [f32],
        load: impl Fn(usize, usize, u16) -> __m512,
    ) {
        for c0 in (0..cols).step_by(16) {
            let w = (cols - c0).min(16);
            let mask = ((1u32 << w) - 1) as u16;
            let mut rows = [v4.avx512f._mm512_setzero_ps(); 16];
            for (r, row) in rows.iter_mut().enumerate() {
                *row = load(r * cols + c0, w, mask);
            }
            let columns = transpose16(v4, rows);
            for (j, out) in dst[c0 * 16..(c0 + w) * 16].chunks_exact_mut(16).enumerate() {
                out.copy_from_slice(&cast::<__m512, [f32; 16]>(columns[j]));
            }
        }
    }

    /// Transposes a 16×16 tile: rows in, columns out.
    #[inline(always)]
    fn transpose16(v4: V4, r: [__m512; 16]) -> [__m512; 16] {
        let f = v4.avx512f;
        // Within each 128-bit lane: pairs of rows interleaved, then quads of rows, so
        // lane L of group g's vector m holds column m + 4L of rows 4g..4g+4.
        let mut quad = [[f._mm512_setzero_ps(); 4]; 4];
        for g in 0..4 {
            let (a, b, c, d) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
            let ab_lo = cast::<_, __m512d>(f._mm512_unpacklo_ps(a, b));
            let ab_hi = cast::<_, __m512d>(f._mm512_unpackhi_ps(a, b));
            let cd_lo = cast::<_, __m512d>(f._mm512_unpacklo_ps(c, d));
            let cd_hi = cast::<_, __m512d>(f._mm512_unpackhi_ps(c, d));
            quad[g] = [
                cast::<_, __m512>(f._mm512_unpacklo_pd(ab_lo, cd_lo)),
                cast::<_, __m512>(f._mm512_unpackhi_pd(ab_lo, cd_lo)),
                cast::<_, __m512>(f._mm512_unpacklo_pd(ab_hi, cd_hi)),
                cast::<_, __m512>(f._mm512_unpackhi_pd(ab_hi, cd_hi)),
            ];
        }
        // A 4×4 transpose of 128-bit lanes across the groups, for each m.
        let mut out = [f._mm512_setzero_ps(); 16];
        for m in 0..4 {
            let [g0, g1, g2, g3] = [quad[0][m], quad[1][m], quad[2][m], quad[3][m]];
            let x0 = f._mm512_shuffle_f32x4::<0b01_00_01_00>(g0, g1);
            let x1 = f._mm512_shuffle_f32x4::<0b11_10_11_10>(g0, g1);
            let x2 = f._mm512_shuffle_f32x4::<0b01_00_01_00>(g2, g3);
            let x3 = f._mm512_shuffle_f32x4::<0b11_10_11_10>(g2, g3);
            out[m] = f._mm512_shuffle_f32x4::<0b10_00_10_00>(x0, x2);
            out[m + 4] = f._mm512_shuffle_f32x4::<0b11_01_11_01>(x0, x2);
            out[m + 8] = f._mm512_shuffle_f32x4::<0b10_00_10_00>(x1, x3);
            out[m + 12] = f._mm512_shuffle_f32x4::<0b11_01_11_01>(x1, x3);
        }
        out
    }

    /// 8 rows, tiles of up to 8 columns.
    #[inline(always)]
    pub fn tiles8(v3: V3, src: &[f32], cols: usize, dst: &mut [f32]) {
        for c0 in (0..cols).step_by(8) {
            let w = (cols - c0).min(8);
            let lanes_in: [i32; 8] = std::array::from_fn(|i| if i < w { -1 } else { 0 });
            let mask = cast(lanes_in);
            let mut rows = [v3.avx._mm256_setzero_ps(); 8];
            for (r, row) in rows.iter_mut().enumerate() {
                let piece = &src[r * cols + c0..r * cols + c0 + w];
                // SAFETY: the mask enables only the `w` lanes inside `piece`; masked-off
                // lanes are not read.
                *row = unsafe { v3.avx._mm256_maskload_ps(piece.as_ptr(), mask) };
            }
            let columns = transpose8(v3, rows);
            for (j, out) in dst[c0 * 8..(c0 + w) * 8].chunks_exact_mut(8).enumerate() {
                out.copy_from_slice(&cast::<__m256, [f32; 8]>(columns[j]));
            }
        }
    }

    /// Transposes an 8×8 tile: rows in, columns out.
    #[inline(always)]
    fn transpose8(v3: V3, r: [__m256; 8]) -> [__m256; 8] {
        let f = v3.avx;
        // Lane L (128-bit) of group g's vector m holds column m + 4L of rows 4g..4g+4.
        let mut quad = [[f._mm256_setzero_ps(); 4]; 2];
        for g in 0..2 {
            let (a, b, c, d) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
            let ab_lo = cast::<_, __m256d>(f._mm256_unpacklo_ps(a, b));
            let ab_hi = cast::<_, __m256d>(f._mm256_unpackhi_ps(a, b));
            let cd_lo = cast::<_, __m256d>(f._mm256_unpacklo_ps(c, d));
            let cd_hi = cast::<_, __m256d>(f._mm256_unpackhi_ps(c, d));
            quad[g] = [
                cast::<_, __m256>(f._mm256_unpacklo_pd(ab_lo, cd_lo)),
                cast::<_, __m256>(f._mm256_unpackhi_pd(ab_lo, cd_lo)),
                cast::<_, __m256>(f._mm256_unpacklo_pd(ab_hi, cd_hi)),
                cast::<_, __m256>(f._mm256_unpackhi_pd(ab_hi, cd_hi)),
            ];
        }
        let mut out = [f._mm256_setzero_ps(); 8];
        for m in 0..4 {
            out[m] = f._mm256_permute2f128_ps::<0x20>(quad[0][m], quad[1][m]);
            out[m + 4] = f._mm256_permute2f128_ps::<0x31>(quad[0][m], quad[1][m]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp::WithSimd;

    struct Transpose<'a> {
        src: &'a [f32],
        cols: usize,
    }

    impl WithSimd for Transpose<'_> {
        type Output = (usize, Vec<f32>);
        fn with_simd<S: Simd>(self, s: S) -> Self::Output {
            let lanes = S::F32_LANES;
            let mut dst = vec![f32::NAN; lanes * self.cols];
            rows_to_columns(s, &self.src[..lanes * self.cols], self.cols, &mut dst);
            (lanes, dst)
        }
    }

    /// `op` on the best SIMD level of this CPU, on AVX2 where it has it, and one lane at a time.
    fn every_level<O: WithSimd<Output = (usize, Vec<f32>)>>(op: impl Fn() -> O) -> Vec<O::Output> {
        let mut outs = vec![pulp::Arch::new().dispatch(op())];
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new() {
            outs.push(Simd::vectorize(v3, op()));
        }
        outs.push(Simd::vectorize(pulp::Scalar::new(), op()));
        outs
    }

    struct Widen<'a, T> {
        src: &'a [T],
        cols: usize,
    }

    impl<T: Element> WithSimd for Widen<'_, T> {
        type Output = (usize, Vec<f32>);
        fn with_simd<S: Simd>(self, s: S) -> Self::Output {
            let lanes = S::F32_LANES;
            let n = lanes * self.cols;
            let (mut dst, mut wide) = (vec![f32::NAN; n], vec![0f32; n]);
            elements_to_columns(s, &self.src[..n], self.cols, &mut dst, &mut wide);
            (lanes, dst)
        }
    }

    /// Half-width rows come out widened exactly (bit for bit: subnormals, infinities, NaN,
    /// negative zero), in the same order, on every SIMD level of this CPU.
    #[test]
    fn half_width_columns_are_the_exact_widening() {
        let specials = [
            0.0,
            -0.0,
            1e-40,
            6e-8,
            -2.5,
            f32::INFINITY,
            f32::NAN,
            65504.0,
        ];
        let values: Vec<f32> = (0..16 * 64)
            .map(|i| {
                specials
                    .get(i % 97)
                    .copied()
                    .unwrap_or(i as f32 * 0.37 + 0.01)
            })
            .collect();
        fn check<T: Element>(values: &[f32], to: fn(f32) -> T, widen: fn(T) -> f32) {
            let src: Vec<T> = values.iter().map(|&x| to(x)).collect();
            for cols in 1..=64 {
                for (lanes, dst) in every_level(|| Widen { src: &src, cols }) {
                    for r in 0..lanes {
                        for j in 0..cols {
                            let want = widen(src[r * cols + j]);
                            assert_eq!(
                                dst[j * lanes + r].to_bits(),
                                want.to_bits(),
                                "{:?}, {lanes} lanes, {cols} cols, row {r}, col {j}",
                                T::DTYPE
                            );
                        }
                    }
                }
            }
        }
        check(&values, half::bf16::from_f32, half::bf16::to_f32);
        check(&values, half::f16::from_f32, half::f16::to_f32);
        check(&values, |x| x, |x| x);
    }

    /// Every column count the short-row kernel sees, on every SIMD level of this CPU.
    #[test]
    fn columns_hold_every_row_in_order() {
        let src: Vec<f32> = (0..16 * 64).map(|i| i as f32 * 0.5 + 1.0).collect();
        for cols in 1..=64 {
            for (lanes, dst) in every_level(|| Transpose { src: &src, cols }) {
                for r in 0..lanes {
                    for j in 0..cols {
                        assert_eq!(
                            dst[j * lanes + r],
                            src[r * cols + j],
                            "{lanes} lanes, {cols} cols, row {r}, col {j}"
                        );
                    }
                }
            }
        }
    }
}
