//! The engines' entry points, compiled once per element type inside kldiv. The public generic
//! functions (`compute`, `CpuEngine::per_row`, `GpuEngine::per_row`, the scheduler) only
//! check shapes and call these, so a user's crate does not instantiate the kernels and the
//! orchestration again at every edit (release rebuild of a small user crate: see README).
//! Private, so it also seals [`crate::Element`].

use crate::cpu::{CpuEngine, HostRows};
use crate::error::Result;
use crate::request::{Divergence, Request};
use crate::semantics::rows::Shape;
use crate::semantics::run;

pub trait Compiled: Sized {
    fn cpu_per_row(
        engine: &CpuEngine,
        req: &Request,
        divs: &[Divergence],
        src: HostRows<'_, Self>,
        shape: Shape,
    ) -> Result<run::PerRow>;

    #[cfg(feature = "gpu")]
    fn gpu_per_row(
        engine: &crate::gpu::GpuEngine,
        req: &Request,
        divs: &[Divergence],
        src: crate::gpu::Source<'_, Self>,
        shape: Shape,
    ) -> Result<run::PerRow>;

    #[cfg(feature = "gpu")]
    fn gpu_agreement(
        engine: &crate::gpu::GpuEngine,
        src: crate::gpu::Source<'_, Self>,
        shape: Shape,
        tops: &[Option<crate::RowTops>],
    ) -> Result<Vec<Option<crate::semantics::sums::AgreeSums>>>;
}

macro_rules! compiled {
    ($($t:ty),*) => {$(
        impl Compiled for $t {
            fn cpu_per_row(
                engine: &CpuEngine,
                req: &Request,
                divs: &[Divergence],
                src: HostRows<'_, Self>,
                shape: Shape,
            ) -> Result<run::PerRow> {
                run::per_row_set(engine, req, divs, src, shape)
            }

            #[cfg(feature = "gpu")]
            fn gpu_per_row(
                engine: &crate::gpu::GpuEngine,
                req: &Request,
                divs: &[Divergence],
                src: crate::gpu::Source<'_, Self>,
                shape: Shape,
            ) -> Result<run::PerRow> {
                run::per_row_set(engine, req, divs, src, shape)
            }

            #[cfg(feature = "gpu")]
            fn gpu_agreement(
                engine: &crate::gpu::GpuEngine,
                src: crate::gpu::Source<'_, Self>,
                shape: Shape,
                tops: &[Option<crate::RowTops>],
            ) -> Result<Vec<Option<crate::semantics::sums::AgreeSums>>> {
                run::agreement(engine, src, shape, tops)
            }
        }
    )*};
}

compiled!(f32, f64, half::f16, half::bf16);
