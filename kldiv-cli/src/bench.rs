//! `kldiv bench`: every placement on W1–W4, with throughput against the machine's measured
//! memory-read limit; `--sweep` checks the scheduler's choices over many shapes.

use crate::{DeviceArg, Failure, InputArg};
use kldiv::scheduler::{DeviceMode, Job, Placement, Scheduler};
use kldiv::workloads::{self, Workload};
use kldiv::{bf16, f16, CpuEngine, Divergence, Dtype, Element, InputForm, Request, SimdLevel};
use rayon::prelude::*;
use std::time::Instant;

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

/// Two-stream read limit (Σ a·b over two large arrays, all threads), in GB/s.
pub fn read_limit(bytes_each: usize) -> f64 {
    let n = bytes_each / 4;
    let a: Vec<f32> = (0..n).into_par_iter().map(|i| (i % 7) as f32).collect();
    let b: Vec<f32> = (0..n).into_par_iter().map(|i| (i % 5) as f32).collect();
    let mut times = vec![];
    for _ in 0..3 {
        let t = Instant::now();
        let s: f32 = a
            .par_chunks(1 << 16)
            .zip(b.par_chunks(1 << 16))
            .map(|(x, y)| {
                let mut acc = [0f32; 16];
                for (xc, yc) in x.chunks_exact(16).zip(y.chunks_exact(16)) {
                    for k in 0..16 {
                        acc[k] += xc[k] * yc[k];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(s);
    }
    2.0 * bytes_each as f64 / median(times) / 1e9
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
                Way::Gpu => self.auto.gpu()?.per_row(req, p, q, rows, cols)?,
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
        let mut times = vec![];
        let start = Instant::now();
        while times.len() < reps || (start.elapsed().as_secs_f64() < 0.25 && times.len() < 200) {
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
    let has_gpu = auto.gpu().is_ok();
    let ctx = Ctx {
        reference: CpuEngine::with_level(SimdLevel::Reference)?,
        scalar: CpuEngine::with_level(SimdLevel::Scalar)?,
        auto,
        split,
        has_gpu,
    };
    let limit = read_limit(if a.quick { 256 << 20 } else { 1 << 30 });
    let simd = ctx.auto.cpu().simd_name();
    let gpu_name = match ctx.auto.gpu() {
        Ok(g) => format!("{} ({})", g.adapter().name, g.adapter().backend),
        Err(e) => format!("none: {e}"),
    };
    outln!(
        "kldiv bench{}: {} threads, CPU SIMD {simd}, GPU {gpu_name}",
        if a.quick { " --quick" } else { "" },
        ctx.auto.cpu().threads()
    );
    outln!("memory-read limit {limit:.1} GB/s (two-stream read, all threads, measured now)");
    let rows = if a.sweep {
        sweep(&a, &ctx, dtype, limit, repeat)?
    } else {
        suite(&a, &ctx, dtype, limit, repeat)?
    };
    write_outputs(&a, &rows, limit, simd)
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

fn suite(
    a: &Args,
    ctx: &Ctx,
    dtype: Dtype,
    limit: f64,
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
    for w in &chosen {
        with_data(w, dtype, &mut |data| -> Result<(), Failure> {
            for way in ways(a.device, ctx.has_gpu) {
                let r = measure(ctx, data, w.name, w, w.input, dtype, way, repeat, limit)?;
                print_row(&r)?;
                let kernel_ns = match (way, ctx.auto.gpu()) {
                    (Way::Gpu, Ok(g)) => g.last_call().kernel_ns,
                    _ => None,
                };
                let gpu_row = r.clone();
                rows.push(r);
                // Kernel time alone, from timestamp queries (last repetition).
                if let Some(ns) = kernel_ns.filter(|&ns| ns > 0) {
                    let m = ns as f64 / 1e9;
                    let gelem = w.elements() as f64 / m / 1e9;
                    let gbs = gelem * 2.0 * dtype.size_bytes() as f64;
                    let k = Row {
                        placement: "gpu kernels only".into(),
                        median_s: m,
                        gelem,
                        gbs,
                        frac: gbs / limit,
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

fn write_outputs(a: &Args, rows: &[Row], limit: f64, simd: &str) -> Result<(), Failure> {
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
        std::fs::write(path, svg(rows)).map_err(|e| io_err(path, e))?;
    }
    Ok(())
}

/// Throughput (Gelem/s, log scale) against row length (log scale), one line per placement.
fn svg(rows: &[Row]) -> String {
    let (w, h, m) = (760.0, 420.0, 60.0);
    let mut placements: Vec<String> = rows.iter().map(|r| r.placement.clone()).collect();
    placements.dedup();
    placements.sort();
    placements.dedup();
    let xs: Vec<f64> = rows.iter().map(|r| (r.cols as f64).log10()).collect();
    let ys: Vec<f64> = rows.iter().map(|r| r.gelem.max(1e-4).log10()).collect();
    let (x0, x1) = (
        xs.iter().cloned().fold(f64::INFINITY, f64::min),
        xs.iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max)
            .max(1.0),
    );
    let (y0, y1) = (
        ys.iter().cloned().fold(f64::INFINITY, f64::min).floor(),
        ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max).ceil(),
    );
    let sx = |x: f64| m + (x - x0) / (x1 - x0).max(1e-9) * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - y0) / (y1 - y0).max(1e-9) * (h - 2.0 * m);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
    ];
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='{}' y='20' text-anchor='middle' font-size='14'>kldiv throughput by row length (Gelem/s, log scales)</text>\n\
         <line x1='{m}' y1='{}' x2='{}' y2='{}' stroke='black'/><line x1='{m}' y1='{m}' x2='{m}' y2='{}' stroke='black'/>\n",
        w / 2.0, h - m, w - m, h - m, h - m
    );
    let mut d = y0;
    while d <= y1 + 1e-9 {
        s += &format!(
            "<line x1='{m}' y1='{0}' x2='{1}' y2='{0}' stroke='#ddd'/><text x='{2}' y='{3}' text-anchor='end'>{4}</text>\n",
            sy(d), w - m, m - 6.0, sy(d) + 4.0, 10f64.powf(d)
        );
        d += 1.0;
    }
    let mut xs_u: Vec<usize> = rows.iter().map(|r| r.cols).collect();
    xs_u.sort();
    xs_u.dedup();
    for c in xs_u {
        let x = sx((c as f64).log10());
        s += &format!(
            "<text x='{x}' y='{}' text-anchor='middle'>{c}</text>\n",
            h - m + 16.0
        );
    }
    s += &format!(
        "<text x='{}' y='{}' text-anchor='middle'>columns per row</text>\n",
        w / 2.0,
        h - 16.0
    );
    for (i, p) in placements.iter().enumerate() {
        let color = colors[i % colors.len()];
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| &r.placement == p)
            .map(|r| (sx((r.cols as f64).log10()), sy(r.gelem.max(1e-4).log10())))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        s += &format!(
            "<polyline fill='none' stroke='{color}' stroke-width='2' points='{}'/>\n",
            line.join(" ")
        );
        for (x, y) in &pts {
            s += &format!("<circle cx='{x:.1}' cy='{y:.1}' r='3' fill='{color}'/>\n");
        }
        s += &format!(
            "<rect x='{}' y='{}' width='10' height='10' fill='{color}'/><text x='{}' y='{}'>{p}</text>\n",
            w - m - 170.0, m + 16.0 * i as f64, w - m - 155.0, m + 9.0 + 16.0 * i as f64
        );
    }
    s + "</svg>\n"
}
