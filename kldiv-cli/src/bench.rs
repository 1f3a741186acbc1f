//! `kldiv bench`: every placement on W1–W4, with throughput against the machine's measured
//! memory-read limit; `--sweep` checks the scheduler's choices over many shapes.

use crate::{DeviceArg, Failure, InputArg};
use kldiv::scheduler::{DeviceMode, Job, Placement, Scheduler};
use kldiv::workloads::{self, Workload};
use kldiv::{bf16, f16, CpuEngine, Divergence, Dtype, Element, InputForm, Request, SimdLevel};
use rayon::prelude::*;
use std::time::Instant;

#[cfg(not(feature = "gpu"))]
use kldiv::scheduler::GPU_NOT_BUILT;

#[derive(clap::Args)]
pub struct Args {
    /// Scale the workloads down (rows / 16) to finish in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Comma-separated subset of W1,W2,W3,W4.
    #[arg(long, value_delimiter = ',')]
    shapes: Vec<String>,
    /// Element type of the inputs.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
    /// Override the workloads' input form.
    #[arg(long, value_enum)]
    input: Option<InputArg>,
    /// Only placements on this device (default: every placement).
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
    /// Timed repetitions per placement (the median is reported).
    #[arg(long)]
    repeat: Option<usize>,
    /// Sweep row counts and lengths and check the scheduler's choice at each point.
    #[arg(long)]
    sweep: bool,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Also write the table as CSV here.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
    /// Draw throughput against row length for each placement (SVG).
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

#[derive(Clone, Debug)]
struct Row {
    workload: String,
    rows: usize,
    cols: usize,
    dtype: Dtype,
    input: InputForm,
    placement: String,
    median_s: f64,
    gelem: f64,
    gbs: f64,
    frac: f64,
    choice: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One way of running a job.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    Reference,
    Scalar,
    Simd,
    Gpu,
    Split,
    Auto,
}

impl Way {
    fn name(self, simd: &str) -> String {
        match self {
            Way::Reference => "cpu-reference-f64".into(),
            Way::Scalar => "cpu-scalar".into(),
            Way::Simd => format!("cpu-simd ({simd})"),
            Way::Gpu => "gpu".into(),
            Way::Split => "split".into(),
            Way::Auto => "auto".into(),
        }
    }
}

struct Ctx {
    reference: CpuEngine,
    scalar: CpuEngine,
    auto: Scheduler,
    split: Scheduler,
    has_gpu: bool,
    /// The GPU is a software rasteriser (lavapipe): as slow as one CPU thread, so its
    /// placements are timed once after the warm-up instead of filling 0.25 s.
    software_gpu: bool,
    /// The GPU's own read limit (a plain read kernel timed by timestamp queries), GB/s: the
    /// "% limit" of GPU rows.
    gpu_limit: Option<f64>,
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    fn time<T: Element>(
        &self,
        way: Way,
        req: &Request,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
        reps: usize,
    ) -> Result<f64, Failure> {
        let once = || -> Result<(), Failure> {
            let out = match way {
                Way::Reference => self.reference.per_row(req, p, q, rows, cols)?,
                Way::Scalar => self.scalar.per_row(req, p, q, rows, cols)?,
                Way::Simd => self.auto.cpu().per_row(req, p, q, rows, cols)?,
                #[cfg(feature = "gpu")]
                Way::Gpu => self.auto.gpu()?.per_row(req, p, q, rows, cols)?,
                #[cfg(not(feature = "gpu"))]
                Way::Gpu => return Err(kldiv::Error::GpuUnavailable(GPU_NOT_BUILT.into()).into()),
                Way::Split => self.split.run(req, p, q, rows, cols)?.values,
                Way::Auto => self.auto.run(req, p, q, rows, cols)?.values,
            };
            std::hint::black_box(out);
            Ok(())
        };
        // Warm-up: pipelines, caches, page faults.
        once()?;
        // At least `reps` runs, and for short jobs enough more (up to 200) to fill 0.25 s:
        // on a shared machine single runs of a few milliseconds swing by 2x, and the
        // median of five of them with it.
        let on_software_gpu = self.software_gpu && matches!(way, Way::Gpu | Way::Split);
        let (reps, fill) = if on_software_gpu {
            (1, 0.0)
        } else {
            (reps, 0.25)
        };
        let mut times = vec![];
        let start = Instant::now();
        while times.len() < reps || (start.elapsed().as_secs_f64() < fill && times.len() < 200) {
            let t = Instant::now();
            once()?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(median(times))
    }
}

fn convert<T: Element>(v: &[f32], f: fn(f32) -> T) -> Vec<T> {
    v.par_iter().map(|&x| f(x)).collect()
}

/// Run `job` on the data of `w` in the requested element type.
fn with_data<R>(w: &Workload, dtype: Dtype, f: &mut dyn FnMut(&dyn Data) -> R) -> R {
    let (p, q) = workloads::generate(w, 42);
    match dtype {
        Dtype::F16 => f(&(convert(&p, f16::from_f32), convert(&q, f16::from_f32))),
        Dtype::BF16 => f(&(convert(&p, bf16::from_f32), convert(&q, bf16::from_f32))),
        _ => f(&(p, q)),
    }
}

trait Data {
    /// The GPU kernels' time alone for one run of `req` (timestamp queries), the best of
    /// `reps` runs back to back on inputs uploaded once, after half a second of them: measured
    /// as the read limit is, with the device busy.
    fn gpu_kernel_s(
        &self,
        ctx: &Ctx,
        req: &Request,
        rows: usize,
        cols: usize,
        reps: usize,
    ) -> Option<f64>;
    fn time(
        &self,
        ctx: &Ctx,
        way: Way,
        req: &Request,
        rows: usize,
        cols: usize,
        reps: usize,
    ) -> Result<f64, Failure>;
}

impl<T: Element> Data for (Vec<T>, Vec<T>) {
    #[cfg(feature = "gpu")]
    fn gpu_kernel_s(
        &self,
        ctx: &Ctx,
        req: &Request,
        rows: usize,
        cols: usize,
        reps: usize,
    ) -> Option<f64> {
        let g = ctx.auto.gpu().ok()?;
        let (p, q) = (g.upload(&self.0), g.upload(&self.1));
        // Keep the device busy first: a GPU that idled through the uploads of the
        // end-to-end runs is in a low-power state whose clocks made these kernels up to 6×
        // slower on an H200 (the first workload of a process ran at full speed, the rest not).
        let warm = Instant::now();
        while warm.elapsed().as_secs_f64() < if ctx.software_gpu { 0.0 } else { 0.5 } {
            g.per_row_resident::<T>(req, &p, &q, rows, cols).ok()?;
        }
        let mut best: Option<u64> = None;
        for _ in 0..reps {
            g.per_row_resident::<T>(req, &p, &q, rows, cols).ok()?;
            let ns = g.last_call().kernel_ns.filter(|&ns| ns > 0)?;
            best = Some(best.map_or(ns, |b| b.min(ns)));
        }
        best.map(|ns| ns as f64 / 1e9)
    }
    #[cfg(not(feature = "gpu"))]
    fn gpu_kernel_s(&self, _: &Ctx, _: &Request, _: usize, _: usize, _: usize) -> Option<f64> {
        None
    }
    fn time(
        &self,
        ctx: &Ctx,
        way: Way,
        req: &Request,
        rows: usize,
        cols: usize,
        reps: usize,
    ) -> Result<f64, Failure> {
        ctx.time(way, req, &self.0, &self.1, rows, cols, reps)
    }
}

pub fn run(a: Args) -> Result<(), Failure> {
    let dtype = match a.dtype {
        DtypeArg::F32 => Dtype::F32,
        DtypeArg::F16 => Dtype::F16,
        DtypeArg::Bf16 => Dtype::BF16,
    };
    let repeat = a.repeat.unwrap_or(if a.quick { 3 } else { 5 }).max(1);
    let auto = crate::engine(Some(DeviceArg::Auto))?;
    let split = Scheduler::with_mode(DeviceMode::Split);
    split.set_calibration(auto.calibrate());
    #[cfg(feature = "gpu")]
    let (has_gpu, software_gpu) = (
        auto.gpu().is_ok(),
        auto.gpu().is_ok_and(|g| g.adapter().is_software),
    );
    #[cfg(not(feature = "gpu"))]
    let (has_gpu, software_gpu) = (false, false);
    let ctx = Ctx {
        reference: CpuEngine::with_level(SimdLevel::Reference)?,
        scalar: CpuEngine::with_level(SimdLevel::Scalar)?,
        auto,
        split,
        has_gpu,
        software_gpu,
        gpu_limit: None,
    };
    let read_bytes = if a.quick { 256 << 20 } else { 1 << 30 };
    let read = ctx.auto.cpu().read_limit(read_bytes, 3);
    let mut limit = read.best_gbs;
    #[cfg(feature = "gpu")]
    let ctx = {
        let mut ctx = ctx;
        if a.device != Some(DeviceArg::Cpu) {
            if let Ok(g) = ctx.auto.gpu() {
                ctx.gpu_limit = g.read_limit(if a.quick { 64 << 20 } else { 1 << 30 }, 5)?;
            }
        }
        ctx
    };
    let simd = ctx.auto.cpu().simd_name();
    #[cfg(feature = "gpu")]
    let gpu_name = match ctx.auto.gpu() {
        Ok(g) => format!("{} ({})", g.adapter().name, g.adapter().backend),
        Err(e) => format!("none: {e}"),
    };
    #[cfg(not(feature = "gpu"))]
    let gpu_name = format!("none: {GPU_NOT_BUILT}");
    outln!(
        "kldiv bench{}: {} threads, CPU SIMD {simd}, GPU {gpu_name}",
        if a.quick { " --quick" } else { "" },
        ctx.auto.cpu().threads()
    );
    let each: Vec<String> = read
        .per_kernel
        .iter()
        .map(|(k, g)| format!("{} {g:.1}", k.name()))
        .collect();
    outln!(
        "memory-read limit {limit:.1} GB/s (best two-stream read of all threads, measured now: {})",
        each.join(", ")
    );
    if let Some(g) = ctx.gpu_limit {
        outln!(
            "GPU read limit {g:.1} GB/s (plain two-stream read kernel, timestamp queries, \
             measured now): the % limit of gpu rows"
        );
    }
    let rows = if a.sweep {
        sweep(&a, &ctx, dtype, limit, repeat)?
    } else {
        suite(&a, &ctx, dtype, &mut limit, read_bytes, repeat)?
    };
    let caption = format!(
        "{} threads of {} ({simd}); GPU {gpu_name}; read limit {limit:.1} GB/s measured in this run",
        ctx.auto.cpu().threads(),
        cpu_model()
    );
    write_outputs(&a, &rows, limit, simd, &caption)
}

/// The CPU's model name (Linux), for captions.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn ways(device: Option<DeviceArg>, has_gpu: bool) -> Vec<Way> {
    let cpu = [Way::Reference, Way::Scalar, Way::Simd];
    let mut v: Vec<Way> = match device {
        Some(DeviceArg::Cpu) => cpu.to_vec(),
        Some(DeviceArg::Gpu) => vec![Way::Gpu],
        Some(DeviceArg::Split) => vec![Way::Split],
        Some(DeviceArg::Auto) => vec![Way::Auto],
        None => cpu.iter().copied().chain([Way::Gpu, Way::Auto]).collect(),
    };
    if !has_gpu {
        v.retain(|w| !matches!(w, Way::Gpu | Way::Split));
    }
    v
}

fn print_header() -> Result<(), Failure> {
    outln!(
        "{:<4} {:>15} {:<5} {:<6} {:<18} {:>10} {:>9} {:>8} {:>7}  auto chooses",
        "",
        "shape",
        "dtype",
        "input",
        "placement",
        "median ms",
        "Gelem/s",
        "GB/s",
        "% limit"
    );
    Ok(())
}

fn print_row(r: &Row) -> Result<(), Failure> {
    outln!(
        "{:<4} {:>15} {:<5} {:<6} {:<18} {:>10.2} {:>9.3} {:>8.2} {:>6.0}%  {}",
        r.workload,
        format!("{}×{}", r.rows, r.cols),
        r.dtype.name(),
        input_name(r.input),
        r.placement,
        r.median_s * 1e3,
        r.gelem,
        r.gbs,
        r.frac * 100.0,
        r.choice
    );
    Ok(())
}

fn input_name(i: InputForm) -> &'static str {
    match i {
        InputForm::Probabilities => "probs",
        InputForm::LogProbabilities => "logp",
        InputForm::Logits => "logits",
    }
}

#[allow(clippy::too_many_arguments)]
fn measure(
    ctx: &Ctx,
    data: &dyn Data,
    name: &str,
    w: &Workload,
    input: InputForm,
    dtype: Dtype,
    way: Way,
    reps: usize,
    limit: f64,
) -> Result<Row, Failure> {
    let req = Request::new(Divergence::Kl).input(input);
    let reps = if way == Way::Reference {
        reps.min(2)
    } else {
        reps
    };
    let m = data.time(ctx, way, &req, w.rows, w.cols, reps)?;
    let gelem = w.elements() as f64 / m / 1e9;
    let gbs = gelem * 2.0 * dtype.size_bytes() as f64;
    let limit = match (way, ctx.gpu_limit) {
        (Way::Gpu, Some(g)) => g,
        _ => limit,
    };
    let plan = ctx.auto.plan(&Job::of(&req, w.rows, w.cols, dtype, false));
    Ok(Row {
        workload: name.to_string(),
        rows: w.rows,
        cols: w.cols,
        dtype,
        input,
        placement: way.name(ctx.auto.cpu().simd_name()),
        median_s: m,
        gelem,
        gbs,
        frac: gbs / limit,
        choice: placement_name(plan.placement),
    })
}

fn placement_name(p: Placement) -> String {
    match p {
        Placement::Cpu => "cpu".into(),
        Placement::Gpu => "gpu".into(),
        Placement::Split { gpu_rows } => format!("split({gpu_rows} rows on gpu)"),
    }
}

/// The workloads on every placement. The host's read bandwidth moves during a run (this
/// project's VM: by up to 1.5× within minutes), so the limit is measured again next to each
/// workload's timings, and its rows are judged against the higher of that and `limit`
/// (which ends as the highest measured).
fn suite(
    a: &Args,
    ctx: &Ctx,
    dtype: Dtype,
    limit: &mut f64,
    read_bytes: usize,
    repeat: usize,
) -> Result<Vec<Row>, Failure> {
    let factor = if a.quick { 16 } else { 1 };
    let chosen: Vec<Workload> = workloads::ALL
        .iter()
        .filter(|w| a.shapes.is_empty() || a.shapes.iter().any(|s| s.eq_ignore_ascii_case(w.name)))
        .map(|w| Workload {
            input: a.input.map_or(w.input, |i| i.into()),
            ..w.scaled(factor)
        })
        .collect();
    if chosen.is_empty() {
        return Err(Failure {
            code: 2,
            message: format!("--shapes {:?}: no such workload (W1, W2, W3, W4)", a.shapes),
        });
    }
    print_header()?;
    let mut rows = vec![];
    let on_cpu = ways(a.device, ctx.has_gpu)
        .iter()
        .any(|w| !matches!(w, Way::Gpu));
    for w in &chosen {
        if on_cpu {
            let now = ctx.auto.cpu().read_limit(read_bytes, 3).best_gbs;
            *limit = limit.max(now);
            outln!(
                "{:<4} memory-read limit measured again: {now:.1} GB/s; rows below against {:.1}",
                w.name,
                *limit
            );
        }
        let limit = *limit;
        with_data(w, dtype, &mut |data| -> Result<(), Failure> {
            for way in ways(a.device, ctx.has_gpu) {
                let r = measure(ctx, data, w.name, w, w.input, dtype, way, repeat, limit)?;
                print_row(&r)?;
                let kernel_s = match way {
                    Way::Gpu => {
                        let req = Request::new(Divergence::Kl).input(w.input);
                        // A software adapter's kernels are a smoke test: one run.
                        let reps = if ctx.software_gpu { 1 } else { repeat.max(3) };
                        data.gpu_kernel_s(ctx, &req, w.rows, w.cols, reps)
                    }
                    _ => None,
                };
                let gpu_row = r.clone();
                rows.push(r);
                // Kernel time alone, from timestamp queries on inputs already on the device.
                if let Some(m) = kernel_s {
                    let gelem = w.elements() as f64 / m / 1e9;
                    let gbs = gelem * 2.0 * dtype.size_bytes() as f64;
                    let k = Row {
                        placement: "gpu kernels only".into(),
                        median_s: m,
                        gelem,
                        gbs,
                        frac: gbs / ctx.gpu_limit.unwrap_or(limit),
                        ..gpu_row
                    };
                    print_row(&k)?;
                    rows.push(k);
                }
            }
            Ok(())
        })?;
    }
    Ok(rows)
}

/// Row lengths × row counts × dtype × form; each point is timed on every placement and the
/// scheduler's choice is scored against the fastest.
fn sweep(
    a: &Args,
    ctx: &Ctx,
    dtype: Dtype,
    limit: f64,
    repeat: usize,
) -> Result<Vec<Row>, Failure> {
    let budget = if a.quick { 1 << 20 } else { 1 << 23 };
    let cols_list = [16usize, 256, 4096, 65_536, 2_000_000];
    let dtypes = if a.dtype == DtypeArg::F32 {
        vec![Dtype::F32, Dtype::BF16]
    } else {
        vec![dtype]
    };
    let forms = [InputForm::Probabilities, InputForm::Logits];
    print_header()?;
    let mut rows = vec![];
    let (mut good, mut total, mut worst) = (0, 0, 1.0f64);
    for &dt in &dtypes {
        for &form in &forms {
            for &cols in &cols_list {
                for rows_n in [1usize, (budget / cols).max(1)] {
                    if rows_n == 1 && cols < 4096 {
                        continue;
                    }
                    let w = Workload {
                        name: "sw",
                        rows: rows_n,
                        cols,
                        input: form,
                        what: "sweep",
                    };
                    let mut times: Vec<(Way, f64)> = vec![];
                    with_data(&w, dt, &mut |data| -> Result<(), Failure> {
                        let mut ways = vec![Way::Simd, Way::Auto];
                        if ctx.has_gpu {
                            ways.insert(1, Way::Gpu);
                            if rows_n > 1 {
                                ways.insert(2, Way::Split);
                            }
                        }
                        for way in ways {
                            let r = measure(ctx, data, "sw", &w, form, dt, way, repeat, limit)?;
                            print_row(&r)?;
                            times.push((way, r.median_s));
                            rows.push(r);
                        }
                        Ok(())
                    })?;
                    let best = times
                        .iter()
                        .filter(|t| t.0 != Way::Auto)
                        .map(|t| t.1)
                        .fold(f64::INFINITY, f64::min);
                    let chosen = times
                        .iter()
                        .find(|t| t.0 == Way::Auto)
                        .map_or(f64::INFINITY, |t| t.1);
                    let ratio = chosen / best;
                    total += 1;
                    if ratio <= 1.10 {
                        good += 1;
                    }
                    worst = worst.max(ratio);
                }
            }
        }
    }
    outln!(
        "sweep: the scheduler's choice was within 10% of the fastest placement at {good}/{total} points ({:.0}%); worst {worst:.2}× the fastest",
        100.0 * good as f64 / total as f64
    );
    Ok(rows)
}

fn write_outputs(
    a: &Args,
    rows: &[Row],
    limit: f64,
    simd: &str,
    caption: &str,
) -> Result<(), Failure> {
    let io_err = |path: &std::path::Path, e: std::io::Error| Failure {
        code: 1,
        message: format!("{}: {e}", path.display()),
    };
    if let Some(path) = &a.csv {
        let mut s = String::from("workload,rows,cols,dtype,input,placement,median_s,gelem_per_s,gb_per_s,fraction_of_read_limit,auto_chooses\n");
        for r in rows {
            s += &format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                r.workload,
                r.rows,
                r.cols,
                r.dtype,
                input_name(r.input),
                r.placement,
                r.median_s,
                r.gelem,
                r.gbs,
                r.frac,
                r.choice
            );
        }
        std::fs::write(path, s).map_err(|e| io_err(path, e))?;
    }
    if let Some(path) = &a.json {
        let j = serde_json::json!({
            "read_limit_gb_per_s": limit,
            "simd": simd,
            "rows": rows.iter().map(|r| serde_json::json!({
                "workload": r.workload, "rows": r.rows, "cols": r.cols, "dtype": r.dtype.name(),
                "input": input_name(r.input), "placement": r.placement, "median_s": r.median_s,
                "gelem_per_s": r.gelem, "gb_per_s": r.gbs, "fraction_of_read_limit": r.frac,
                "auto_chooses": r.choice,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, j.to_string()).map_err(|e| io_err(path, e))?;
    }
    if let Some(path) = &a.plot {
        let points: Vec<crate::plot::Point> = rows
            .iter()
            .map(|r| crate::plot::Point {
                placement: r.placement.clone(),
                input: r.input,
                dtype: r.dtype,
                rows: r.rows,
                cols: r.cols,
                gelem: r.gelem,
            })
            .collect();
        let title = if a.sweep {
            "kldiv bench --sweep: throughput by row length"
        } else {
            "kldiv bench: throughput on W1–W4"
        };
        let chart = crate::plot::svg(&points, title, caption)
            .map_err(|message| Failure { code: 1, message })?;
        std::fs::write(path, chart).map_err(|e| io_err(path, e))?;
    }
    Ok(())
}
