//! The one accuracy and edge-case suite (`suite`) on every engine: each CPU SIMD level, the
//! GPU engine (workgroups reducing through subgroups where the adapter has them, as lavapipe
//! does), the GPU engine with the workgroup-memory tree instead, and the GPU engine streaming
//! in 64 KiB chunks (many chunks, rows split across them). A new divergence or input form added to the suite is tested on every path.
//!
//! GPU engines need an adapter: without one they skip with a line on stderr, except in CI
//! (CI=true or KLDIV_REQUIRE_GPU=1), where a missing Vulkan adapter fails the run.

mod common;
mod suite;

use suite::TestEngine;

/// Tests of `suite` instantiated for one engine (an `Option<TestEngine>`: `None` skips).
macro_rules! engine_suite {
    ($module:ident, $engine:expr) => {
        mod $module {
            use super::*;
            fn engine() -> Option<TestEngine> {
                $engine
            }
            engine_suite!(@tests
                probabilities_f32,
                probabilities_normalized_on_request,
                other_element_types,
                bf16_rows_at_any_alignment,
                f16_rows_at_any_alignment,
                logits_and_logprobs,
                masked_logits,
                near_identical_probability_rows,
                rescaled_rows_keep_tiny_divergences,
                near_identical_logits,
                near_identical_logits_js,
                logit_blocks_far_apart,
                one_far_spike_on_either_side,
                spikes_at_the_edge_of_f32_range,
                long_rows_do_not_accumulate_error,
                short_row_groups,
                zero_p_contributes_nothing,
                q_zero_where_p_positive_is_infinite,
                identical_rows_give_zero,
                tiny_and_huge_values,
                tiny_logits_keep_their_digits,
                minus_infinity_logits_mean_probability_zero,
                nan_is_an_error_naming_row_and_column_or_propagates,
                negative_probabilities_and_infinities_are_errors,
                empty_and_mismatched_inputs_are_errors,
                one_element_rows,
                rows_off_from_one_are_errors_unless_normalised,
                f16_softmax_rows_pass_the_default_tolerance,
                never_negative_for_normalised_inputs,
                precision_cases_from_other_suites,
                pseudocount_smooths_both_rows,
                f64_inputs_keep_f64_accuracy,
                f64_near_identical_rows_keep_f64_accuracy,
                f64_near_identical_logits_keep_f64_accuracy,
                kl_family_shares_one_pass,
                logit_rows_give_their_tops
            );
        }
    };
    (@tests $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(e) = engine() {
                    suite::$name(&e);
                }
            }
        )*
    };
}

engine_suite!(cpu_reference, TestEngine::cpu(kldiv::SimdLevel::Reference));
engine_suite!(cpu_scalar, TestEngine::cpu(kldiv::SimdLevel::Scalar));
engine_suite!(cpu_avx2, TestEngine::cpu(kldiv::SimdLevel::Avx2));
engine_suite!(cpu_avx512, TestEngine::cpu(kldiv::SimdLevel::Avx512));
engine_suite!(cpu_auto, TestEngine::cpu(kldiv::SimdLevel::Auto));
#[cfg(feature = "gpu")]
engine_suite!(gpu, gpu_engines::whole().map(|e| TestEngine::Gpu("gpu", e)));
#[cfg(feature = "gpu")]
engine_suite!(
    gpu_tree,
    gpu_engines::tree().map(|e| TestEngine::Gpu("gpu, tree reduction", e))
);
#[cfg(feature = "gpu")]
engine_suite!(
    gpu_chunked,
    gpu_engines::chunked().map(|e| TestEngine::Gpu("gpu 64 KiB chunks", e))
);

#[cfg(feature = "gpu")]
mod gpu_engines {
    use kldiv::gpu::GpuEngine;
    use std::sync::OnceLock;

    pub fn required() -> bool {
        std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("KLDIV_REQUIRE_GPU").is_ok_and(|v| v == "1")
    }

    /// One engine for the whole test binary (device and pipelines are built once).
    pub fn whole() -> Option<&'static GpuEngine> {
        static ENGINE: OnceLock<Option<GpuEngine>> = OnceLock::new();
        ENGINE.get_or_init(|| open(None)).as_ref()
    }

    /// A second engine that streams inputs in 64 KiB chunks.
    pub fn chunked() -> Option<&'static GpuEngine> {
        static ENGINE: OnceLock<Option<GpuEngine>> = OnceLock::new();
        ENGINE.get_or_init(|| open(Some(64 << 10))).as_ref()
    }

    /// A third whose workgroups reduce through the workgroup-memory tree (the path of
    /// adapters without subgroups).
    pub fn tree() -> Option<&'static GpuEngine> {
        static ENGINE: OnceLock<Option<GpuEngine>> = OnceLock::new();
        ENGINE
            .get_or_init(|| {
                open(None).map(|mut e| {
                    e.set_subgroups(false);
                    e
                })
            })
            .as_ref()
    }

    fn open(chunk: Option<u64>) -> Option<GpuEngine> {
        match GpuEngine::new() {
            Ok(mut e) => {
                if required() {
                    assert_eq!(
                        e.adapter().backend,
                        "Vulkan",
                        "CI must run the GPU tests on Vulkan (lavapipe)"
                    );
                    // lavapipe has subgroups: the subgroup reduction is the one tested by
                    // `gpu` and `gpu_chunked`, the tree by `gpu_tree`.
                    assert!(e.uses_subgroups(), "CI's adapter should have SUBGROUP");
                }
                if let Some(bytes) = chunk {
                    e.set_chunk_bytes(bytes);
                }
                Some(e)
            }
            Err(e) => {
                assert!(!required(), "no GPU adapter in CI: {e}");
                eprintln!("skipping GPU tests: {e}");
                None
            }
        }
    }
}
