//! Streaming one pass through the GPU: chunks (from `dispatch`) uploaded into two slots of
//! grow-only buffers, or bound from the caller's buffers, dispatched, and their records read
//! back while the next chunk runs; kernel time from timestamp queries.

use super::dispatch::{self, Chunk};
use super::host::{bound_len, chunk_bytes, gpu_dtype, upload, UNIT};
use super::pipelines::PipeKey;
use super::records::{self, fold, Folded};
use super::shaders::{is_f64, KernelFile};
use super::{gpu_err, CallStats, GpuEngine, Source, WAIT};
use crate::element::{Dtype, Element};
use crate::error::{Error, Result};
use crate::request::Divergence;

/// Buffers of one chunk in flight.
#[derive(Default)]
pub(super) struct Slot {
    p: Option<wgpu::Buffer>,
    q: Option<wgpu::Buffer>,
    out: Option<wgpu::Buffer>,
    readback: Option<wgpu::Buffer>,
    params: Vec<wgpu::Buffer>,
    row_data: Option<wgpu::Buffer>,
    /// Timestamp queries (begin, end per dispatch), their resolve and readback buffers.
    timing: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer)>,
    timed: u32,
}

/// One pass, as the stream runs it: a kernel over `visits` rows of `src` (laid out
/// row-major, `cols` per row), with per-row data for the kernel.
pub(super) struct StreamPass<'a, T> {
    pub file: KernelFile,
    pub div: Divergence,
    pub transform: u32,
    pub src: Source<'a, T>,
    pub visits: usize,
    pub cols: usize,
    /// One entry per visited row (`records::row_data_bytes`), or empty.
    pub row_data: &'a [u8],
    /// Whether logits take their shift from the shift kernel (else from `row_data`).
    pub shift_kernel: bool,
}

/// The records of a pass folded per visited row; `flagged` rows hold values the kernels do
/// not handle (or lost to narrowing f64 to f32).
pub(super) struct Streamed {
    pub rows: Vec<Option<Folded>>,
    pub flagged: Vec<bool>,
}

impl GpuEngine {
    /// Run a pass through the GPU.
    pub(super) fn stream<T: Element>(
        &self,
        pass: &StreamPass<'_, T>,
        stats: &mut CallStats,
    ) -> Result<Streamed> {
        let dtype = gpu_dtype(T::DTYPE, self.f64_kernels);
        let short = dispatch::short(pass.cols);
        let chunks = dispatch::chunks(
            pass.visits,
            pass.cols,
            dtype.size_bytes() as u64,
            records::rec_size(pass.file, is_f64(dtype)),
            short,
            self.chunk_bytes,
            // Room for a caller's buffer bound at an aligned offset and ending on a vector.
            self.align.max(UNIT) + UNIT,
        );
        let mut out = Streamed {
            rows: vec![None; pass.visits],
            flagged: vec![false; pass.visits],
        };
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| Error::Gpu("poisoned lock".into()))?;
        let mut pending: Option<(usize, Chunk, u64)> = None;
        // One step past the end: the last chunk is read after the loop's final submit.
        for k in 0..=chunks.len() {
            let mut next = None;
            if let Some(&chunk) = chunks.get(k) {
                let slot = k % 2;
                let bytes =
                    self.submit(&mut slots[slot], pass, dtype, short, chunk, &mut out, stats)?;
                next = Some((slot, chunk, bytes));
            }
            // Read the previous chunk while this one runs.
            if let Some((s, c, bytes)) = pending.take() {
                let ns = self.collect(&slots[s], pass, dtype, short, c, bytes, &mut out)?;
                if let Some(ns) = ns {
                    *stats.kernel_ns.get_or_insert(0) += ns;
                }
            }
            pending = next;
        }
        Ok(out)
    }

    /// Upload one chunk into `slot` (or bind the caller's buffers at it), dispatch, and
    /// copy its records for reading. Returns the record bytes to read back.
    #[allow(clippy::too_many_arguments)]
    fn submit<T: Element>(
        &self,
        slot: &mut Slot,
        pass: &StreamPass<'_, T>,
        dtype: Dtype,
        short: bool,
        chunk: Chunk,
        out: &mut Streamed,
        stats: &mut CallStats,
    ) -> Result<u64> {
        self.check_alive()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let valid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let esize = dtype.size_bytes() as u64;
        let cols = pass.cols;
        let (pbuf, qbuf, offset, size, elem_offset) = match pass.src {
            Source::Host(p, q) => {
                let (pb, fp) = chunk_bytes(p, chunk, cols, dtype);
                let (qb, fq) = chunk_bytes(q, chunk, cols, dtype);
                for r in fp.into_iter().chain(fq) {
                    out.flagged[chunk.first + r] = true;
                }
                let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
                let pbuf = ensure(&self.device, &mut slot.p, bound_len(&pb), usage);
                upload(&self.queue, &pbuf, &pb);
                let qbuf = ensure(&self.device, &mut slot.q, bound_len(&qb), usage);
                upload(&self.queue, &qbuf, &qb);
                stats.bytes_uploaded += (pb.len() + qb.len()) as u64;
                (pbuf, qbuf, 0, bound_len(&pb), 0)
            }
            Source::Device(p, q) => {
                // Bind the caller's buffers at an aligned offset (a multiple of a vector too);
                // the remainder is passed as `elem_offset`.
                let align = self.align.max(UNIT);
                let e0 = (chunk.first * cols + chunk.col0) as u64;
                let e1 = e0 + ((chunk.rows - 1) * cols + chunk.cols) as u64;
                let b0 = e0 * esize / align * align;
                let room = p.size().min(q.size());
                let end = (e1 * esize).next_multiple_of(UNIT);
                if end > room {
                    // The buffers end inside a vector the kernels cannot bind whole: the
                    // chunk's last row goes to the exact path.
                    out.flagged[chunk.first + chunk.rows - 1] = true;
                }
                (
                    p.clone(),
                    q.clone(),
                    b0,
                    end.min(room / UNIT * UNIT) - b0,
                    ((e0 * esize - b0) / esize) as u32,
                )
            }
        };
        let size = std::num::NonZeroU64::new(size.max(UNIT));
        stats.chunks += 1;

        let segs = dispatch::segs(short, chunk.cols);
        let in_f64 = is_f64(dtype);
        let out_bytes = (chunk.rows * segs) as u64 * records::rec_size(pass.file, in_f64);
        let rd_size = records::row_data_size(in_f64);
        let rec_buf = ensure(
            &self.device,
            &mut slot.out,
            out_bytes,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let readback = ensure(
            &self.device,
            &mut slot.readback,
            out_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let rd = ensure(
            &self.device,
            &mut slot.row_data,
            (chunk.rows as u64 * rd_size).max(rd_size),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        let mut shift_kernel = pass.shift_kernel;
        if !pass.row_data.is_empty() {
            let (a, b) = (
                chunk.first as u64 * rd_size,
                (chunk.first + chunk.rows) as u64 * rd_size,
            );
            self.queue
                .write_buffer(&rd, 0, &pass.row_data[a as usize..b as usize]);
            stats.bytes_uploaded += b - a;
        } else if pass.file == KernelFile::Logits && chunk.splits_row(cols) {
            // A row split over chunks needs its shift in every chunk: the host takes it
            // from the row's first block, as the CPU engine does.
            let n = cols.min(crate::consts::BLOCK);
            let (pr, qr) = self.host_row(pass.src, cols, chunk.first, 0, n)?;
            let (hi, lo) = crate::semantics::exact::row_shift(&pr, &qr);
            let shift = crate::semantics::plan::RowParams::Shift { hi, lo };
            let data = records::row_data_bytes(std::iter::once(shift), in_f64);
            self.queue.write_buffer(&rd, 0, &data);
            shift_kernel = false;
        }

        let dispatches =
            dispatch::dispatches(pass.file, &chunk, short, shift_kernel, elem_offset, dtype)?;
        while slot.params.len() < dispatches.len() {
            slot.params
                .push(self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kldiv params"),
                    size: std::mem::size_of::<records::Params>() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
        }
        if self.info.timestamps && slot.timing.is_none() {
            slot.timing = Some(self.timing_buffers());
        }
        let mut encoder = self.device.create_command_encoder(&Default::default());
        for (i, d) in dispatches.iter().enumerate() {
            let pipe = self.pipelines.get(
                &self.device,
                PipeKey {
                    file: pass.file,
                    dtype,
                    entry: d.entry,
                    div: super::shaders::div_code(pass.div),
                    transform: pass.transform,
                    reduce: self.reduce,
                },
            )?;
            self.queue
                .write_buffer(&slot.params[i], 0, bytemuck::bytes_of(&d.params));
            let binding = |buffer| {
                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset,
                    size,
                })
            };
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("kldiv"),
                layout: &self.pipelines.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: binding(&pbuf),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: binding(&qbuf),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: rec_buf.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: slot.params[i].as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: rd.as_entire_binding(),
                    },
                ],
            });
            let timestamp_writes = slot
                .timing
                .as_ref()
                .map(|t| wgpu::ComputePassTimestampWrites {
                    query_set: &t.0,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                });
            let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(d.entry),
                timestamp_writes,
            });
            cpass.set_pipeline(&pipe);
            cpass.set_bind_group(0, &bind, &[]);
            cpass.dispatch_workgroups(d.grid.0, d.grid.1, 1);
            stats.dispatches += 1;
        }
        encoder.copy_buffer_to_buffer(&rec_buf, 0, &readback, 0, Some(out_bytes));
        stats.bytes_read_back += out_bytes;
        slot.timed = 0;
        if let Some((qs, resolve, read)) = &slot.timing {
            let n = dispatches.len() as u32;
            encoder.resolve_query_set(qs, 0..2 * n, resolve, 0);
            encoder.copy_buffer_to_buffer(resolve, 0, read, 0, Some(16 * n as u64));
            slot.timed = n;
        }
        self.queue.submit([encoder.finish()]);
        if let Some(e) = pollster::block_on(valid.pop()) {
            return Err(gpu_err("validation", e));
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(gpu_err("out of GPU memory", e));
        }
        Ok(out_bytes)
    }

    /// Query set and buffers for up to two dispatches' begin/end timestamps.
    fn timing_buffers(&self) -> (wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer) {
        let qs = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kldiv timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 4,
        });
        let buf = |usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kldiv timestamps"),
                size: 32,
                usage,
                mapped_at_creation: false,
            })
        };
        let resolve = buf(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let read = buf(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        (qs, resolve, read)
    }

    /// Wait for a chunk's records and fold them into per-row sums; the kernels' time.
    #[allow(clippy::too_many_arguments)]
    fn collect<T: Element>(
        &self,
        slot: &Slot,
        pass: &StreamPass<'_, T>,
        dtype: Dtype,
        short: bool,
        chunk: Chunk,
        bytes: u64,
        out: &mut Streamed,
    ) -> Result<Option<u64>> {
        let readback = slot
            .readback
            .as_ref()
            .ok_or_else(|| Error::Gpu("readback buffer missing".into()))?;
        self.map_and_wait(readback, bytes)?;
        {
            let view = readback
                .get_mapped_range(0..bytes)
                .map_err(|e| gpu_err("reading results", e))?;
            let segs = dispatch::segs(short, chunk.cols);
            for r in 0..chunk.rows {
                let i = chunk.first + r;
                let span = r * segs..(r + 1) * segs;
                let (bad, folded) = fold(pass.file, is_f64(dtype), pass.div, &view, span);
                if bad {
                    out.flagged[i] = true;
                }
                out.rows[i] = Some(match (out.rows[i], folded) {
                    (None, f) => f,
                    (Some(Folded::Probs(mut a)), Folded::Probs(b)) => {
                        a.merge(&b);
                        Folded::Probs(a)
                    }
                    (Some(Folded::Logits(mut a)), Folded::Logits(b)) => {
                        a.merge(&b);
                        Folded::Logits(a)
                    }
                    (Some(Folded::Js(mut a)), Folded::Js(b)) => {
                        a.h += b.h;
                        a.err += b.err;
                        a.amu += b.amu;
                        a.sp += b.sp;
                        a.sq += b.sq;
                        Folded::Js(a)
                    }
                    (Some(Folded::Agree(mut a)), Folded::Agree(b)) => {
                        a.merge(&b);
                        Folded::Agree(a)
                    }
                    _ => unreachable!("one pass, one kernel"),
                });
            }
        }
        readback.unmap();
        let Some((_, _, read)) = slot.timing.as_ref().filter(|_| slot.timed > 0) else {
            return Ok(None);
        };
        let n = slot.timed as u64;
        self.map_and_wait(read, 16 * n)?;
        let ticks: u64 = {
            let view = read
                .get_mapped_range(0..16 * n)
                .map_err(|e| gpu_err("reading timestamps", e))?;
            let t: &[u64] = bytemuck::cast_slice(&view);
            t.chunks_exact(2).map(|p| p[1].saturating_sub(p[0])).sum()
        };
        read.unmap();
        Ok(Some(
            (ticks as f64 * self.queue.get_timestamp_period() as f64) as u64,
        ))
    }

    pub(super) fn map_and_wait(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        buf.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(WAIT),
            })
            .map_err(|e| gpu_err("waiting for the GPU", e))?;
        self.check_alive()?;
        rx.recv_timeout(WAIT)
            .map_err(|_| Error::Gpu("the GPU did not return results".into()))?
            .map_err(|e| gpu_err("reading results", e))
    }
}

/// Grow-only buffer: reuse `slot` if it is big enough.
pub(super) fn ensure(
    device: &wgpu::Device,
    slot: &mut Option<wgpu::Buffer>,
    size: u64,
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    let size = size.max(16).next_multiple_of(16);
    if let Some(b) = slot {
        if b.size() >= size {
            return b.clone();
        }
    }
    let b = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("kldiv"),
        size,
        usage,
        mapped_at_creation: false,
    });
    *slot = Some(b.clone());
    b
}
