//! Element types the engines accept: f32, f64, f16 and bf16.

use half::{bf16, f16};

/// Runtime name of an element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    F64,
    F16,
    BF16,
}

impl Dtype {
    pub const ALL: [Dtype; 4] = [Dtype::F32, Dtype::F64, Dtype::F16, Dtype::BF16];
    /// The type named as [`Dtype::name`] spells it ("f32", "bf16", …).
    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == name)
    }
    /// The narrowest type that holds both exactly: f32 against f16/bf16 is f32, f16
    /// against bf16 f32 (neither holds the other), anything against f64 f64.
    pub fn common(self, other: Dtype) -> Dtype {
        if self == other {
            self
        } else if self == Dtype::F64 || other == Dtype::F64 {
            Dtype::F64
        } else {
            Dtype::F32
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
            Dtype::F16 => "f16",
            Dtype::BF16 => "bf16",
        }
    }
    pub fn size_bytes(self) -> usize {
        match self {
            Dtype::F64 => 8,
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An input element. Sealed: the engines know how to read exactly these four, and each
/// one's engine entry points are compiled once inside kldiv (`compiled`).
pub trait Element:
    Copy + Send + Sync + bytemuck::Pod + crate::compiled::Compiled + 'static
{
    const DTYPE: Dtype;
    fn to_f64(self) -> f64;
    /// The nearest value of this type (exact for every narrower type's values).
    fn from_f64(v: f64) -> Self;
    fn from_f32(v: f32) -> Self;
    /// Widen `src` into `dst[..src.len()]` as f32 (exact for f16 and bf16; rounding for f64).
    fn widen_into(src: &[Self], dst: &mut [f32]);

    /// `src` as f32: read in place for f32, widened into `buf` (at least `src.len()` long)
    /// for the others.
    #[inline(always)]
    fn as_f32<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32] {
        if Self::DTYPE == Dtype::F32 {
            bytemuck::cast_slice(src)
        } else {
            Self::widen_into(src, buf);
            &buf[..src.len()]
        }
    }
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        dst[..src.len()].copy_from_slice(src);
    }
}

impl Element for f64 {
    const DTYPE: Dtype = Dtype::F64;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s as f32;
        }
    }
}

impl Element for f16 {
    const DTYPE: Dtype = Dtype::F16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        // half uses F16C / NEON conversions when the CPU has them.
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(&mut dst[..src.len()]);
    }
}

impl Element for bf16 {
    const DTYPE: Dtype = Dtype::BF16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    // bf16 is the top half of an f32: a shift, which the compiler vectorises with the
    // caller's SIMD level when inlined into a kernel.
    #[inline(always)]
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
}
