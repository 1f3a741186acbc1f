//! What crosses between host memory and the kernels' element types: the bytes of a chunk as
//! the kernels read them (f64 narrowed to f32 where the adapter has no f64 kernels, with the
//! rows narrowing changed flagged for the exact path), and rows read back for the exact path.

use super::dispatch::Chunk;
use super::{gpu_err, GpuEngine, Source};
use crate::element::{Dtype, Element};
use crate::error::Result;
use crate::semantics::rows::RowPair;
use std::borrow::Cow;

impl GpuEngine {
    /// Columns `[start, start + n)` of visited row `row` of both inputs, on the host.
    pub(super) fn host_row<'a, T: Element>(
        &self,
        src: Source<'a, T>,
        cols: usize,
        row: usize,
        start: usize,
        n: usize,
    ) -> Result<RowPair<'a, T>> {
        let r = row * cols + start..row * cols + start + n;
        Ok(match src {
            Source::Host(p, q) => (p[r.clone()].into(), q[r].into()),
            Source::Device(p, q) => (
                self.read_elems(p, r.start, n)?.into(),
                self.read_elems(q, r.start, n)?.into(),
            ),
        })
    }

    /// Elements `[start, start + n)` of a device buffer, read back to the host.
    fn read_elems<T: Element>(&self, buf: &wgpu::Buffer, start: usize, n: usize) -> Result<Vec<T>> {
        let es = T::DTYPE.size_bytes() as u64;
        let b0 = (start as u64 * es) / 4 * 4;
        let b1 = ((start + n) as u64 * es)
            .next_multiple_of(4)
            .min(buf.size());
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kldiv row readback"),
            size: (b1 - b0).max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, b0, &staging, 0, Some(b1 - b0));
        self.queue.submit([enc.finish()]);
        self.map_and_wait(&staging, b1 - b0)?;
        let view = staging
            .get_mapped_range(0..b1 - b0)
            .map_err(|e| gpu_err("reading a row", e))?;
        let skip = (start as u64 * es - b0) as usize;
        let bytes = &view[skip..skip + n * es as usize];
        let out: Vec<T> = bytes
            .chunks_exact(es as usize)
            .map(bytemuck::pod_read_unaligned)
            .collect();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// The element type the kernels read: f64 stays f64 where the engine has f64 kernels
/// (SHADER_F64), and is narrowed to f32 elsewhere.
pub(super) fn gpu_dtype(d: Dtype, f64_kernels: bool) -> Dtype {
    if d == Dtype::F64 && !f64_kernels {
        Dtype::F32
    } else {
        d
    }
}

/// Bytes the kernels bind inputs in: whole vectors (`shaders::VEC_BYTES`).
pub(super) const UNIT: u64 = super::shaders::VEC_BYTES as u64;

/// The bytes of one chunk as kernels reading `dtype` read them (f64 narrowed
/// to f32 for f32 kernels), and the chunk's rows where narrowing changed what a value means
/// (a non-zero that became 0, a finite value that became infinite): those go to the exact
/// path.
pub(super) fn chunk_bytes<T: Element>(
    v: &[T],
    chunk: Chunk,
    cols: usize,
    dtype: Dtype,
) -> (Cow<'_, [u8]>, Vec<usize>) {
    let start = chunk.first * cols + chunk.col0;
    let len = (chunk.rows - 1) * cols + chunk.cols;
    let slice = &v[start..start + len];
    if T::DTYPE == Dtype::F64 && dtype == Dtype::F32 {
        let mut flagged = vec![];
        let f: Vec<f32> = slice
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let (x, n) = (x.to_f64(), x.to_f64() as f32);
                if (x != 0.0 && n == 0.0) || (x.is_finite() && !n.is_finite()) {
                    let r = (chunk.col0 + i) / cols;
                    if flagged.last() != Some(&r) {
                        flagged.push(r);
                    }
                }
                n
            })
            .collect();
        return (Cow::Owned(bytemuck::cast_slice(&f).to_vec()), flagged);
    }
    (Cow::Borrowed(bytemuck::cast_slice(slice)), vec![])
}

/// The bytes `bytes` takes in a buffer the kernels bind: whole vectors.
pub(super) fn bound_len(bytes: &[u8]) -> u64 {
    (bytes.len() as u64).next_multiple_of(UNIT)
}

/// Write `bytes` at the start of `buf` (at least `bound_len` long), zeros after them up to a
/// whole vector: the bulk straight from `bytes`, the tail through a vector-sized copy.
pub(super) fn upload(queue: &wgpu::Queue, buf: &wgpu::Buffer, bytes: &[u8]) {
    let whole = bytes.len() / UNIT as usize * UNIT as usize;
    if whole > 0 {
        queue.write_buffer(buf, 0, &bytes[..whole]);
    }
    if whole < bytes.len() {
        let mut tail = [0u8; UNIT as usize];
        tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        queue.write_buffer(buf, whole as u64, &tail);
    }
}
