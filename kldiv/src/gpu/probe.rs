//! The adapter's own memory-read limit: a plain two-stream read kernel (shaders/read.wgsl)
//! timed with timestamp queries, the way the kernels' own time is measured, for
//! `kldiv bench` and scripts/gpu-check.sh.

use super::{gpu_err, GpuEngine};
use crate::error::Result;

const READ: &str = include_str!("../../shaders/read.wgsl");

/// Workgroups of the read kernel (a grid-stride loop covers the rest).
const GROUPS: u32 = 4096;

/// The read kernel's source (validated by naga in `shaders::tests`).
#[cfg(test)]
pub fn read_source() -> &'static str {
    READ
}

impl GpuEngine {
    /// GB/s of a plain read of two buffers of `bytes_each` (capped at a storage binding),
    /// the best of `reps` timed dispatches; `None` where the adapter has no timestamp
    /// queries.
    pub fn read_limit(&self, bytes_each: u64, reps: usize) -> Result<Option<f64>> {
        if !self.info.timestamps {
            return Ok(None);
        }
        self.check_alive()?;
        let bytes = bytes_each.min(self.info.max_storage_binding).max(1 << 16) / 16 * 16;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = |size, usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kldiv read probe"),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        let (a, b) = (
            buffer(bytes, wgpu::BufferUsages::STORAGE),
            buffer(bytes, wgpu::BufferUsages::STORAGE),
        );
        let sink = buffer(16, wgpu::BufferUsages::STORAGE);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("kldiv read probe"),
                source: wgpu::ShaderSource::Wgsl(READ.into()),
            });
        let pipe = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("kldiv read probe"),
                layout: None,
                module: &module,
                entry_point: Some("read_both"),
                compilation_options: Default::default(),
                cache: None,
            });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("kldiv read probe"),
            layout: &pipe.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: a.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: b.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: sink.as_entire_binding(),
                },
            ],
        });
        let reps = reps.clamp(1, 16) as u32;
        let qs = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kldiv read probe"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * reps,
        });
        let resolve = buffer(
            16 * reps as u64,
            wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        );
        let read = buffer(
            16 * reps as u64,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let mut enc = self.device.create_command_encoder(&Default::default());
        for r in 0..reps {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("kldiv read probe"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &qs,
                    beginning_of_pass_write_index: Some(2 * r),
                    end_of_pass_write_index: Some(2 * r + 1),
                }),
            });
            pass.set_pipeline(&pipe);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(GROUPS, 1, 1);
        }
        enc.resolve_query_set(&qs, 0..2 * reps, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, Some(16 * reps as u64));
        self.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(gpu_err("out of GPU memory", e));
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err("validation", e));
        }
        self.map_and_wait(&read, 16 * reps as u64)?;
        let best = {
            let view = read
                .get_mapped_range(0..16 * reps as u64)
                .map_err(|e| gpu_err("reading timestamps", e))?;
            let t: &[u64] = bytemuck::cast_slice(&view);
            t.chunks_exact(2)
                .map(|p| p[1].saturating_sub(p[0]))
                .filter(|&d| d > 0)
                .min()
        };
        read.unmap();
        Ok(best.map(|ticks| {
            let s = ticks as f64 * self.queue.get_timestamp_period() as f64 / 1e9;
            2.0 * bytes as f64 / s / 1e9
        }))
    }
}
