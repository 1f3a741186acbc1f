//! WGSL sources, assembled from shaders/: first the constants the kernels share with Rust
//! (written here from the Rust values: block sizes, codes, sentinels, polynomial coefficients),
//! then shared numerics, an element loader per input type, the binding layout, and one kernel
//! file per kernel. Kernels compute in `real`: f32, or f64 for f64 inputs (math_f64.wgsl,
//! load_f64.wgsl) where the adapter has SHADER_F64. Divergence and transform are `override`
//! constants, so every variant comes from these few files.

use super::records::NO_MAX;
use crate::consts;
use crate::element::Dtype;
use crate::request::Divergence;
use crate::semantics::plan::Kernel;

/// Threads per workgroup, elements each thread reads per segment, elements per segment.
pub const WG: usize = 256;
pub const EPT: usize = 16;
pub const SEG: usize = WG * EPT;

/// Bytes of the vectors the kernels load inputs in (shaders/shared/load_*.wgsl): the inputs
/// are bound as arrays of them, so the host binds whole vectors.
pub const VEC_BYTES: usize = 16;

/// Elements of `dtype` (as the kernels read it) in one vector.
pub fn vec_elems(dtype: Dtype) -> usize {
    VEC_BYTES / dtype.size_bytes()
}

/// Bytes of workgroup memory the short-row kernels stage rows in (shaders/shared/tile.wgsl):
/// all that the limits the engine asks for (`wgpu::Limits::downlevel_defaults`) allow.
const TILE_BYTES: usize = 16_352;

/// Records the workgroup-memory reduction tree holds (shaders/shared/reduce_tree.wgsl).
const TREE: usize = WG / 4;

/// Elements (pairs of `real`) a short-row tile holds.
pub fn tile_elems(in_f64: bool) -> usize {
    TILE_BYTES / (2 * if in_f64 { 8 } else { 4 })
}

/// Workgroups hold at most this many subgroups: wgpu's subgroups have at least 4 invocations
/// (`wgpu::MINIMUM_SUBGROUP_MIN_SIZE`).
pub const MAX_SUBGROUPS: usize = WG / 4;

/// How a workgroup merges its threads' records (shaders/shared/reduce_*.wgsl).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reduce {
    /// A tree in workgroup memory, a barrier per level: any adapter.
    Tree,
    /// Shuffle trees within subgroups, one barrier: adapters with `Features::SUBGROUP`.
    Subgroup,
}

/// probs.wgsl `TRANSFORM`: read rows as they are, or multiplied by row_data.xy.
pub const TRANSFORM_NONE: u32 = 0;
pub const TRANSFORM_SCALE: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelFile {
    Probs,
    Logits,
    /// Jensen–Shannon over logits, second pass (maxima and log-sums known).
    LogitsJs,
    /// Agreement over logits (maxima and log-sums known): Σ min, each side's top values.
    LogitsAgree,
}

impl KernelFile {
    pub fn of(kernel: Kernel) -> KernelFile {
        match kernel {
            Kernel::Probs(_) => KernelFile::Probs,
            Kernel::Logits(_) => KernelFile::Logits,
            Kernel::LogitsJs => KernelFile::LogitsJs,
            Kernel::LogitsAgree => KernelFile::LogitsAgree,
        }
    }
}

/// probs.wgsl `DIV`.
pub fn div_code(div: Divergence) -> u32 {
    match div {
        Divergence::Kl => 0,
        Divergence::ReverseKl => 1,
        Divergence::SymmetricKl => 2,
        Divergence::JensenShannon => 3,
        Divergence::CrossEntropy => 4,
        Divergence::Entropy => 5,
    }
}

const MATH: &str = include_str!("../../shaders/shared/math.wgsl");
const MATH_F64: &str = include_str!("../../shaders/shared/math_f64.wgsl");
const LAYOUT: &str = include_str!("../../shaders/shared/layout.wgsl");
const LOAD_F32: &str = include_str!("../../shaders/shared/load_f32.wgsl");
const LOAD_F16: &str = include_str!("../../shaders/shared/load_f16.wgsl");
const LOAD_BF16: &str = include_str!("../../shaders/shared/load_bf16.wgsl");
const LOAD_F64: &str = include_str!("../../shaders/shared/load_f64.wgsl");
const TILE: &str = include_str!("../../shaders/shared/tile.wgsl");
const REDUCE_TREE: &str = include_str!("../../shaders/shared/reduce_tree.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/shared/reduce_subgroup.wgsl");
const PROBS: &str = include_str!("../../shaders/probs.wgsl");
const LOGITS: &str = include_str!("../../shaders/logits.wgsl");
const LOGITS_JS: &str = include_str!("../../shaders/logits_js.wgsl");
const LOGITS_AGREE: &str = include_str!("../../shaders/logits_agree.wgsl");
// Each record's `shuffle_down`, for the subgroup reduction.
const PROBS_SUBGROUP: &str = include_str!("../../shaders/probs_subgroup.wgsl");
const LOGITS_SUBGROUP: &str = include_str!("../../shaders/logits_subgroup.wgsl");
const LOGITS_JS_SUBGROUP: &str = include_str!("../../shaders/logits_js_subgroup.wgsl");
const LOGITS_AGREE_SUBGROUP: &str = include_str!("../../shaders/logits_agree_subgroup.wgsl");

/// An f32 as a WGSL literal that reads back bit for bit.
fn f32_lit(v: f32) -> String {
    format!("{v:?}f")
}

fn f32_array(name: &str, v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|&x| f32_lit(x)).collect();
    format!(
        "const {name}: array<f32, {n}> = array<f32, {n}>({});\n",
        items.join(", "),
        n = v.len()
    )
}

/// Whether the kernels for `dtype` compute in f64 (f64 inputs on an adapter with
/// SHADER_F64; elsewhere f64 is narrowed to f32 on the host, see `host::gpu_dtype`).
pub fn is_f64(dtype: Dtype) -> bool {
    dtype == Dtype::F64
}

/// An f64 as a WGSL abstract-float literal that reads back bit for bit (typed by its
/// declaration).
fn f64_lit(v: f64) -> String {
    format!("{v:?}")
}

/// `fn name(x: f64) -> f64`: the polynomial with coefficients `c` (index = power), by Horner.
fn f64_poly(name: &str, c: &[f64]) -> String {
    let mut s = format!(
        "fn {name}(x: f64) -> f64 {{\n    var p: f64 = {};\n",
        f64_lit(c[c.len() - 1])
    );
    for k in c[..c.len() - 1].iter().rev() {
        s.push_str(&format!("    p = fma(p, x, {});\n", f64_lit(*k)));
    }
    s.push_str("    return p;\n}\n");
    s
}

/// The WGSL declarations of every constant the kernels for `dtype` share with the host:
/// layout and codes, then `real` (the type the kernels compute in) and the numerics'
/// constants for that precision.
pub fn constants(dtype: Dtype) -> String {
    let mut s = String::from("// Generated by src/gpu/shaders.rs from the Rust constants.\n");
    let mut u = |name: &str, v: u32| s.push_str(&format!("const {name}: u32 = {v}u;\n"));
    u("WG", WG as u32);
    u("TREE", TREE as u32);
    u("MAX_SUBGROUPS", MAX_SUBGROUPS as u32);
    u("EPT", EPT as u32);
    u("SEG", SEG as u32);
    u("SHIFT_COLS", consts::BLOCK as u32);
    u("TILE", tile_elems(is_f64(dtype)) as u32);
    u("VEC", vec_elems(dtype) as u32);
    u("NO_ROW", u32::MAX);
    u("TRANSFORM_NONE", TRANSFORM_NONE);
    u("NO_TOP", super::records::NO_TOP);
    u("TOPN", crate::semantics::sums::TOP_LIST as u32);
    u("TRANSFORM_SCALE", TRANSFORM_SCALE);
    for (name, div) in [
        ("DIV_KL", Divergence::Kl),
        ("DIV_REVERSE", Divergence::ReverseKl),
        ("DIV_SYMMETRIC", Divergence::SymmetricKl),
        ("DIV_JS", Divergence::JensenShannon),
        ("DIV_CROSS", Divergence::CrossEntropy),
        ("DIV_ENTROPY", Divergence::Entropy),
    ] {
        u(name, div_code(div));
    }
    if is_f64(dtype) {
        s.push_str("alias real = f64;\n");
        let mut f =
            |name: &str, v: f64| s.push_str(&format!("const {name}: f64 = {};\n", f64_lit(v)));
        f("NO_MAX", NO_MAX as f64);
        f("TINY", consts::TINY as f64);
        f("HUGE", consts::HUGE as f64);
        f("BIG_LOGIT", consts::BIG_LOGIT as f64);
        f("NEG_INF_STANDIN", consts::NEG_INF_STANDIN_F64);
        f("BAD_STANDIN", consts::BAD_STANDIN_F64);
        f("LN2", std::f64::consts::LN_2);
        f("LN2_HI", consts::LN2_HI_F64);
        f("LN2_LO", consts::LN2_LO_F64);
        f("LOG2_E", std::f64::consts::LOG2_E);
        f("SQRT2", std::f64::consts::SQRT_2);
        f("EXP_MIN", consts::EXP_MIN_F64);
        f("HALF_ULP", f64::EPSILON / 2.0);
        f("U_NEAR", consts::U_NEAR_F64);
        f("PSI_NEAR", consts::PSI_NEAR_F64);
        f("JS_NEAR", consts::JS_NEAR_F64);
        s.push_str(&f64_poly("poly_ln", &consts::LN_SERIES_F64));
        s.push_str(&f64_poly("poly_exp", &consts::EXP_SERIES_F64));
        s.push_str(&f64_poly("poly_gkl", &consts::GKL_SERIES_F64));
        s.push_str(&f64_poly("poly_js", &consts::JS_SERIES_F64));
        return s;
    }
    u("TINY_BITS", consts::TINY.to_bits());
    u("HUGE_BITS", consts::HUGE.to_bits());
    u("NEG_INF_BITS", f32::NEG_INFINITY.to_bits());
    u("BIG_LOGIT_BITS", consts::BIG_LOGIT.to_bits());
    s.push_str("alias real = f32;\n");
    let mut f = |name: &str, v: f32| s.push_str(&format!("const {name}: f32 = {};\n", f32_lit(v)));
    f("NO_MAX", NO_MAX);
    f("LN2", std::f32::consts::LN_2);
    f("LN2_HI", consts::LN2_HI);
    f("LN2_LO", consts::LN2_LO);
    f("LOG2_E", std::f32::consts::LOG2_E);
    f("EXP_MIN", consts::EXP_MIN);
    f("U_NEAR", consts::U_NEAR);
    f("PSI_NEAR", consts::PSI_NEAR);
    f("JS_NEAR", consts::JS_NEAR);
    s.push_str(&f32_array("LN_P", &consts::LN_P));
    s.push_str(&f32_array("EXP_Q", &consts::EXP_Q));
    s.push_str(&f32_array("GKL_P", &consts::GKL_P));
    s.push_str(&f32_array("PSI_P", &consts::PSI_P));
    s.push_str(&f32_array("JS_G", &consts::JS_G.map(|c| c as f32)));
    s
}

/// Element types the kernels read.
#[cfg(test)]
const GPU_DTYPES: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64];

/// The full source of one kernel file for one element type and workgroup reduction.
pub fn source(file: KernelFile, dtype: Dtype, reduce: Reduce) -> String {
    let (math, load) = match dtype {
        Dtype::F16 => (MATH, LOAD_F16),
        Dtype::BF16 => (MATH, LOAD_BF16),
        Dtype::F32 => (MATH, LOAD_F32),
        Dtype::F64 => (MATH_F64, LOAD_F64),
    };
    let (kernel, shuffle) = match file {
        KernelFile::Probs => (PROBS, PROBS_SUBGROUP),
        KernelFile::Logits => (LOGITS, LOGITS_SUBGROUP),
        KernelFile::LogitsJs => (LOGITS_JS, LOGITS_JS_SUBGROUP),
        KernelFile::LogitsAgree => (LOGITS_AGREE, LOGITS_AGREE_SUBGROUP),
    };
    let reduce = match reduce {
        Reduce::Tree => REDUCE_TREE.to_string(),
        Reduce::Subgroup => [REDUCE_SUBGROUP, shuffle].join("\n"),
    };
    [&constants(dtype), math, load, LAYOUT, TILE, kernel, &reduce].join("\n")
}

#[cfg(test)]
mod tests {
    use super::super::records::{AgreeRec, JsRec, LogitRec, Params, ProbRec};
    use super::*;

    const FILES: [KernelFile; 4] = [
        KernelFile::Probs,
        KernelFile::Logits,
        KernelFile::LogitsJs,
        KernelFile::LogitsAgree,
    ];

    fn module_with(file: KernelFile, dtype: Dtype, reduce: Reduce) -> naga::Module {
        use naga::valid::{Capabilities, SubgroupOperationSet, Validator};
        let src = source(file, dtype, reduce);
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{file:?} {dtype}: {}", e.emit_to_string(&src)));
        // The tree variants must validate without the subgroup capability.
        let caps = match reduce {
            Reduce::Tree => Capabilities::FLOAT64,
            Reduce::Subgroup => Capabilities::FLOAT64 | Capabilities::SUBGROUP,
        };
        let mut v = Validator::new(naga::valid::ValidationFlags::all(), caps);
        if reduce == Reduce::Subgroup {
            v.subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                .subgroup_operations(SubgroupOperationSet::all());
        }
        v.validate(&module)
            .unwrap_or_else(|e| panic!("{file:?} {dtype} {reduce:?}: {}", e.emit_to_string(&src)));
        module
    }

    fn module(file: KernelFile, dtype: Dtype) -> naga::Module {
        module_with(file, dtype, Reduce::Tree)
    }

    /// Every shader variant parses and validates with naga: a WGSL mistake fails here on a
    /// machine without any GPU.
    #[test]
    fn every_variant_validates_with_naga() {
        for file in FILES {
            for dtype in GPU_DTYPES {
                for reduce in [Reduce::Tree, Reduce::Subgroup] {
                    let m = module_with(file, dtype, reduce);
                    let entries: Vec<&str> =
                        m.entry_points.iter().map(|e| e.name.as_str()).collect();
                    assert!(entries.contains(&"rows_wg"), "{entries:?}");
                    assert!(entries.contains(&"rows_tile"), "{entries:?}");
                }
            }
        }
    }

    /// Every shader variant also goes through naga's SPIR-V writer, as wgpu's Vulkan backend
    /// does (a construct naga validates but cannot write panics there, before any GPU).
    #[test]
    fn every_variant_writes_spirv() {
        use naga::back::spv;
        for file in FILES {
            for dtype in GPU_DTYPES {
                for reduce in [Reduce::Tree, Reduce::Subgroup] {
                    let m = module_with(file, dtype, reduce);
                    let caps = match reduce {
                        Reduce::Tree => naga::valid::Capabilities::FLOAT64,
                        Reduce::Subgroup => {
                            naga::valid::Capabilities::FLOAT64 | naga::valid::Capabilities::SUBGROUP
                        }
                    };
                    let mut v =
                        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
                    v.subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                        .subgroup_operations(naga::valid::SubgroupOperationSet::all());
                    let info = v.validate(&m).unwrap();
                    // The override constants as the engine gives them (probs.wgsl's DIV and
                    // TRANSFORM), each entry point as wgpu writes it.
                    let mut constants = naga::back::PipelineConstants::default();
                    if file == KernelFile::Probs {
                        constants.insert("DIV".into(), 0.0);
                        constants.insert("TRANSFORM".into(), TRANSFORM_SCALE as f64);
                    }
                    let entries: Vec<String> =
                        m.entry_points.iter().map(|e| e.name.clone()).collect();
                    for entry in &entries {
                        let (m, info) = naga::back::pipeline_constants::process_overrides(
                            &m,
                            &info,
                            Some((naga::ShaderStage::Compute, entry)),
                            &constants,
                        )
                        .unwrap_or_else(|e| panic!("{file:?} {dtype} {entry}: {e}"));
                        let opts = spv::Options {
                            lang_version: (1, 3),
                            ..spv::Options::default()
                        };
                        let pipe = spv::PipelineOptions {
                            shader_stage: naga::ShaderStage::Compute,
                            entry_point: entry.clone(),
                        };
                        let written = std::panic::catch_unwind(|| {
                            spv::write_vec(&m, &info, &opts, Some(&pipe))
                        });
                        assert!(
                            matches!(written, Ok(Ok(_))),
                            "{file:?} {dtype} {reduce:?} {entry}: {:?}",
                            written.map(|w| w.err())
                        );
                    }
                }
            }
        }
    }

    /// Every kernel's workgroup memory (reduction records, short-row tiles) fits the limit
    /// the engine asks the adapter for (`gpu::adapter::open`).
    #[test]
    fn workgroup_memory_fits_the_requested_limit() {
        let limit = wgpu::Limits::downlevel_defaults().max_compute_workgroup_storage_size;
        assert_eq!(limit as usize, TILE_BYTES);
        for file in FILES {
            for dtype in GPU_DTYPES {
                for reduce in [Reduce::Tree, Reduce::Subgroup] {
                    let m = module_with(file, dtype, reduce);
                    let mut layouter = naga::proc::Layouter::default();
                    layouter.update(m.to_ctx()).unwrap();
                    let size = |name: &str| {
                        m.global_variables
                            .iter()
                            .find(|(_, g)| g.name.as_deref() == Some(name))
                            .map_or(0, |(_, g)| layouter[g.ty].size)
                    };
                    // An entry point uses either the reduction's records or the tile.
                    let tile = size("tile_p") + size("tile_q");
                    assert!(size("part") <= limit, "{file:?} {dtype} {reduce:?}");
                    assert!(tile <= limit, "{file:?} {dtype}: tile {tile}");
                    assert_eq!(
                        tile as usize,
                        2 * tile_elems(is_f64(dtype)) * if is_f64(dtype) { 8 } else { 4 }
                    );
                }
            }
        }
    }

    /// Each record's `shuffle_down` moves every member (a member left out would be merged
    /// from the wrong lane, silently): each named member appears as `subgroupShuffleDown(r.NAME`.
    #[test]
    fn shuffles_move_every_record_member() {
        for (file, rec, shuffle) in [
            (KernelFile::Probs, "ProbRec", PROBS_SUBGROUP),
            (KernelFile::Logits, "LogitRec", LOGITS_SUBGROUP),
            (KernelFile::LogitsJs, "JsRec", LOGITS_JS_SUBGROUP),
            (KernelFile::LogitsAgree, "Cand", LOGITS_AGREE_SUBGROUP),
        ] {
            let (members, _) = wgsl_layout(&module(file, Dtype::F32), rec);
            let named: Vec<&String> = members
                .iter()
                .map(|(n, _)| n)
                .filter(|n| !n.starts_with('_'))
                .collect();
            assert!(named.len() >= 5, "{rec}: {named:?}");
            for name in named {
                assert!(
                    shuffle.contains(&format!("subgroupShuffleDown(r.{name}, d)")),
                    "{rec}.{name} is not shuffled"
                );
            }
        }
    }

    /// The read probe (`gpu::probe`) parses and validates too.
    #[test]
    fn read_probe_validates_with_naga() {
        let src = super::super::probe::read_source();
        let m = naga::front::wgsl::parse_str(src)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&m)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string(src)));
    }

    /// (name, offset) of each member of a struct, and its size.
    type Layout = (Vec<(String, u32)>, u32);

    /// The layout of the WGSL struct `name`.
    fn wgsl_layout(m: &naga::Module, name: &str) -> Layout {
        for (_, ty) in m.types.iter() {
            if ty.name.as_deref() == Some(name) {
                if let naga::TypeInner::Struct { members, span } = &ty.inner {
                    return (
                        members
                            .iter()
                            .map(|mb| (mb.name.clone().unwrap_or_default(), mb.offset))
                            .collect(),
                        *span,
                    );
                }
            }
        }
        panic!("no struct {name}");
    }

    macro_rules! rust_layout {
        ($t:ty, $($f:ident),*) => {
            (
                vec![$((stringify!($f).to_string(), std::mem::offset_of!($t, $f) as u32)),*],
                std::mem::size_of::<$t>() as u32,
            )
        };
    }

    /// The Rust mirrors of the kernels' structs have the same members at the same offsets,
    /// and the same size.
    #[test]
    fn record_layouts_match_the_shaders() {
        let strip = |(v, size): (Vec<(String, u32)>, u32)| {
            (
                v.into_iter()
                    .filter(|(n, _)| !n.starts_with('_'))
                    .collect::<Vec<_>>(),
                size,
            )
        };
        let probs = module(KernelFile::Probs, Dtype::F32);
        assert_eq!(
            strip(wgsl_layout(&probs, "Params")),
            rust_layout!(
                Params,
                rows,
                cols,
                row_stride,
                elem_offset,
                segs,
                grid_x,
                row0,
                col0,
                wide,
                tile_rows,
                own_shift
            )
        );
        // Records, in both precisions the kernels compute in.
        fn records<R: crate::gpu::records::Real>(dtype: Dtype, strip: &dyn Fn(Layout) -> Layout) {
            let probs = module(KernelFile::Probs, dtype);
            assert_eq!(
                strip(wgsl_layout(&probs, "ProbRec")),
                rust_layout!(ProbRec<R>, main, main2, sp, sq, diff, q_zero, p_zero, bad),
                "{dtype}"
            );
            let logits = module(KernelFile::Logits, dtype);
            assert_eq!(
                strip(wgsl_layout(&logits, "LogitRec")),
                rust_layout!(
                    LogitRec<R>,
                    ma,
                    mb,
                    sa,
                    sb,
                    ea,
                    eb,
                    xa,
                    xb,
                    ax_a,
                    ax_b,
                    psi_a,
                    psi_b,
                    xerr_a,
                    xerr_b,
                    c_hi,
                    c_lo,
                    na,
                    nb,
                    q_zero,
                    p_zero,
                    bad,
                    psi_bad,
                    top_a,
                    top_b
                ),
                "{dtype}"
            );
            let js = module(KernelFile::LogitsJs, dtype);
            assert_eq!(
                strip(wgsl_layout(&js, "JsRec")),
                rust_layout!(JsRec<R>, h, err, amu, sp, sq, bad),
                "{dtype}"
            );
            let agree = module(KernelFile::LogitsAgree, dtype);
            assert_eq!(
                strip(wgsl_layout(&agree, "AgreeRec")),
                rust_layout!(AgreeRec<R>, sum_min, va, vb, ca, cb, bad),
                "{dtype}"
            );
        }
        records::<f32>(Dtype::F32, &strip);
        records::<f64>(Dtype::F64, &strip);
    }

    /// The generated constants are what the host uses, bit for bit.
    #[test]
    fn constants_read_back_exactly() {
        let c = constants(Dtype::F32);
        assert!(c.contains(&format!("const SEG: u32 = {SEG}u;")));
        let all: Vec<f32> = [
            &consts::LN_P[..],
            &consts::EXP_Q,
            &consts::PSI_P,
            &consts::GKL_P,
        ]
        .concat()
        .into_iter()
        .chain([consts::LN2_HI, consts::LN2_LO, NO_MAX])
        .collect();
        for v in all {
            let lit = f32_lit(v);
            assert!(c.contains(&lit), "{lit} missing");
            let back: f32 = lit.trim_end_matches('f').parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{lit}");
        }
    }
}
