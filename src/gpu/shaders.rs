//! WGSL sources, assembled from shaders/: shared numerics, an element loader per input type,
//! the binding layout, and one kernel file per input form. Divergence and transform are
//! `override` constants, so every variant comes from these few files.

use crate::Dtype;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelFile {
    Probs,
    Logits,
    /// Jensen–Shannon over logits, second pass (maxima and log-sums known).
    LogitsJs,
}

const MATH: &str = include_str!("../../shaders/shared/math.wgsl");
const LAYOUT: &str = include_str!("../../shaders/shared/layout.wgsl");
const LOAD_F32: &str = include_str!("../../shaders/shared/load_f32.wgsl");
const LOAD_F16: &str = include_str!("../../shaders/shared/load_f16.wgsl");
const LOAD_BF16: &str = include_str!("../../shaders/shared/load_bf16.wgsl");
const PROBS: &str = include_str!("../../shaders/probs.wgsl");
const LOGITS: &str = include_str!("../../shaders/logits.wgsl");
const LOGITS_JS: &str = include_str!("../../shaders/logits_js.wgsl");

/// Element types the GPU reads natively (f64 is narrowed to f32 on the host).
#[cfg(test)]
const GPU_DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::BF16];

/// The full source of one kernel file for one element type.
pub fn source(file: KernelFile, dtype: Dtype) -> String {
    let load = match dtype {
        Dtype::F16 => LOAD_F16,
        Dtype::BF16 => LOAD_BF16,
        Dtype::F32 | Dtype::F64 => LOAD_F32,
    };
    let kernel = match file {
        KernelFile::Probs => PROBS,
        KernelFile::Logits => LOGITS,
        KernelFile::LogitsJs => LOGITS_JS,
    };
    [MATH, load, LAYOUT, kernel].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shader variant parses and validates with naga: a WGSL mistake fails here on a
    /// machine without any GPU.
    #[test]
    fn every_variant_validates_with_naga() {
        for file in [KernelFile::Probs, KernelFile::Logits, KernelFile::LogitsJs] {
            for dtype in GPU_DTYPES {
                let src = source(file, dtype);
                let module = naga::front::wgsl::parse_str(&src)
                    .unwrap_or_else(|e| panic!("{file:?} {dtype}: {}", e.emit_to_string(&src)));
                let mut v = naga::valid::Validator::new(
                    naga::valid::ValidationFlags::all(),
                    naga::valid::Capabilities::default(),
                );
                v.validate(&module)
                    .unwrap_or_else(|e| panic!("{file:?} {dtype}: {}", e.emit_to_string(&src)));
                let entries: Vec<&str> = module
                    .entry_points
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect();
                assert!(entries.contains(&"rows_wg"), "{entries:?}");
            }
        }
    }
}
