//! llama.cpp's KL-divergence base files (`.kld`) end to end: `export-kld` writes them by
//! llama.cpp's rules, `compare` reads them against arrays of scored or of all positions.
//! Expected values come from the format's specification, decoded here independently.

#[path = "../../kldiv/tests/common/mod.rs"]
mod common;
use common::files::{f32_npy_shaped, i32_npy, read_f64_npy, tmp};
use common::*;
use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kldiv"))
}

fn ok(args: &[&str]) -> std::process::Output {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(args: &[&str], needle: &str) {
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"));
    // One readable line: no source indentation leaked into the message.
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("   "), "{err}");
}

const N_CHUNK: usize = 2;
const N_CTX: usize = 8;
const V: usize = 11;
/// Scored positions per chunk: n_ctx/2 … n_ctx − 2.
const R: usize = N_CTX - 1 - N_CTX / 2;

fn le_f32(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Record `row`'s log-probabilities as the format defines them: scale·q + min_log_prob.
fn decoded(kld: &[u8], row: usize) -> Vec<f64> {
    let nv = 2 * V.div_ceil(2) + 4;
    let at = 20 + 4 * N_CHUNK * N_CTX + row * 2 * nv;
    let (scale, min) = (le_f32(kld, at), le_f32(kld, at + 4));
    (0..V)
        .map(|i| {
            let q = u16::from_le_bytes([kld[at + 8 + 2 * i], kld[at + 9 + 2 * i]]);
            (scale * q as f32 + min) as f64
        })
        .collect()
}

fn kl_logits(a: &[f64], b: &[f64]) -> f64 {
    let lsm = |x: &[f64]| {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        x.iter().map(|v| v - lse).collect::<Vec<f64>>()
    };
    let (la, lb) = (lsm(a), lsm(b));
    la.iter().zip(&lb).map(|(x, y)| x.exp() * (x - y)).sum()
}

/// Position (over all chunks) of scored row `row`: n_ctx/2 + j of chunk c.
fn position(row: usize) -> usize {
    (row / R) * N_CTX + N_CTX / 2 + row % R
}

/// `kldiv export-kld LOGITS --tokens TOKENS --n-ctx N -o KLD`, which must succeed.
fn export_kld(logits: &Path, tokens: &Path, n_ctx: usize, kld: &Path) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let n_ctx = n_ctx.to_string();
    ok(&[
        "export-kld",
        &s(logits),
        "--tokens",
        &s(tokens),
        "--n-ctx",
        &n_ctx,
        "-o",
        &s(kld),
    ]);
}

/// Base and quantised logits (normal, `spread` wide, the quantised ones off by `noise`),
/// tokens i·`step` mod V, written as files; the base exported to a .kld by `kldiv export-kld`.
struct Exported {
    base: Vec<f32>,
    quant: Vec<f32>,
    tokens: Vec<i32>,
    tok_bytes: Vec<u8>,
    bp: std::path::PathBuf,
    qp: std::path::PathBuf,
    tp: std::path::PathBuf,
    kp: std::path::PathBuf,
    n_ctx: String,
}

fn exported(
    name: &str,
    seed: u64,
    spread: f64,
    noise: f64,
    step: usize,
    base_shape: &[usize],
) -> Exported {
    let mut rng = Rng::new(seed);
    let base: Vec<f32> = (0..N_CHUNK * N_CTX * V)
        .map(|_| (spread * rng.normal()) as f32)
        .collect();
    let quant: Vec<f32> = base
        .iter()
        .map(|&x| x + (noise * rng.normal()) as f32)
        .collect();
    let tokens: Vec<i32> = (0..N_CHUNK * N_CTX)
        .map(|i| (i * step % V) as i32)
        .collect();
    let path = |what: &str| tmp(&format!("{name}_{what}"));
    let (bp, qp, tp, kp) = (
        path("base.npy"),
        path("quant.npy"),
        path("tokens.npy"),
        path("base.kld"),
    );
    f32_npy_shaped(&bp, base_shape, &base);
    f32_npy_shaped(&qp, &[N_CHUNK * N_CTX, V], &quant);
    i32_npy(&tp, &tokens);
    let tok_bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    let n_ctx = N_CTX.to_string();
    export_kld(&bp, &tp, N_CTX, &kp);
    Exported {
        base,
        quant,
        tokens,
        tok_bytes,
        bp,
        qp,
        tp,
        kp,
        n_ctx,
    }
}

#[test]
fn export_then_compare_against_scored_and_all_positions() {
    let Exported {
        base,
        quant,
        tokens,
        tok_bytes,
        bp,
        qp,
        kp,
        n_ctx,
        tp,
    } = exported("base", 7, 3.0, 0.2, 5, &[N_CHUNK, N_CTX, V]);
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();

    // The file, as the specification lays it out.
    let kld = std::fs::read(&kp).unwrap();
    let nv = 2 * V.div_ceil(2) + 4;
    assert_eq!(kld.len(), 20 + 4 * N_CHUNK * N_CTX + 2 * N_CHUNK * R * nv);
    assert_eq!(&kld[..8], b"_logits_");
    let hdr: Vec<i32> = (0..3)
        .map(|k| i32::from_le_bytes(kld[8 + 4 * k..12 + 4 * k].try_into().unwrap()))
        .collect();
    assert_eq!(hdr, vec![N_CTX as i32, V as i32, N_CHUNK as i32]);
    assert_eq!(&kld[20..20 + tok_bytes.len()], &tok_bytes[..]);
    // Each record holds its position's log-softmax to half a 16/65535 step (above the
    // clamp 16 below the row's maximum).
    for row in 0..N_CHUNK * R {
        let pos = position(row);
        let x: Vec<f64> = base[pos * V..(pos + 1) * V]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        for (i, d) in decoded(&kld, row).iter().enumerate() {
            if x[i] > m - 16.0 {
                assert!((d - (x[i] - lse)).abs() < 1.5e-4, "row {row} col {i}");
            }
        }
    }

    // KL(base record ‖ quant) per scored row, from the decoded records.
    let want: Vec<f64> = (0..N_CHUNK * R)
        .map(|row| {
            let pos = position(row);
            let q: Vec<f64> = quant[pos * V..(pos + 1) * V]
                .iter()
                .map(|&v| v as f64)
                .collect();
            kl_logits(&decoded(&kld, row), &q)
        })
        .collect();
    let mean = want.iter().sum::<f64>() / want.len() as f64;
    let json = |out: std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The quantised model's logits for every position, and for the scored ones only.
    let j = json(ok(&["compare", &s(&kp), &s(&qp), "--json"]));
    assert_eq!(j["rows"], N_CHUNK * R);
    assert!((j["mean"].as_f64().unwrap() - mean).abs() <= 1e-5 * mean);
    let scored: Vec<f32> = (0..N_CHUNK * R)
        .flat_map(|row| {
            let pos = position(row);
            quant[pos * V..(pos + 1) * V].to_vec()
        })
        .collect();
    let sp = tmp("scored.npy");
    f32_npy_shaped(&sp, &[N_CHUNK * R, V], &scored);
    let j = json(ok(&[
        "compare",
        &s(&kp),
        &s(&sp),
        "--json",
        "--input",
        "logprobs",
    ]));
    assert!((j["mean"].as_f64().unwrap() - mean).abs() <= 1e-5 * mean);
    // A base against itself.
    let j = json(ok(&["compare", &s(&kp), &s(&kp), "--json"]));
    assert!(j["mean"].as_f64().unwrap().abs() < 1e-9);

    // The report with targets: the .kld's own tokens (row r predicts the next position's).
    let lsm_at = |x: &[f64], t: usize| {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        x[t] - m - x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    };
    let (mut nll_p, mut nll_q, mut dp) = (vec![], vec![], vec![]);
    for row in 0..N_CHUNK * R {
        let pos = position(row);
        let t = tokens[pos + 1] as usize;
        let q: Vec<f64> = quant[pos * V..(pos + 1) * V]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let (lp, lq) = (lsm_at(&decoded(&kld, row), t), lsm_at(&q, t));
        nll_p.push(-lp);
        nll_q.push(-lq);
        dp.push(lq.exp() - lp.exp());
    }
    let n = nll_q.len() as f64;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n;
    let j = json(ok(&["compare", &s(&kp), &s(&qp), "--json"]));
    // f32 rows: each ln p within 2e-6 of f64 (SIMD exponentials, cpu::row_stats), so means
    // of NLL and Δp within 4e-6, PPL within 4e-6 relative.
    let close = |key: &str, want: f64| {
        let got = j[key]["mean"].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 4e-6 * want.abs().max(1.0),
            "{key}: {got} vs {want}"
        );
    };
    close("ppl_q", mean(&nll_q).exp());
    close("ppl_p", mean(&nll_p).exp());
    close("ln_ppl_ratio", mean(&nll_q) - mean(&nll_p));
    close("delta_p", mean(&dp));
    close(
        "rms_delta_p",
        (dp.iter().map(|x| x * x).sum::<f64>() / n).sqrt(),
    );
    // SE of ln PPL(Q) as llama.cpp computes it: sqrt((mean(x²) − mean(x)²)/(n − 1)).
    let m2 = nll_q.iter().map(|x| x * x).sum::<f64>() / n;
    let se = ((m2 - mean(&nll_q).powi(2)) / (n - 1.0)).sqrt();
    let got_se = j["ppl_q"]["sem"].as_f64().unwrap();
    assert!((got_se - mean(&nll_q).exp() * se).abs() <= 1e-5 * got_se);
    let text = String::from_utf8(ok(&["compare", &s(&kp), &s(&qp)]).stdout).unwrap();
    for l in [
        "====== Perplexity statistics ======",
        "Mean PPL(Q)                   : ",
        "====== KL divergence statistics ======",
        "====== Token probability statistics ======",
        "Same top p: ",
    ] {
        assert!(text.contains(l), "{l:?} missing from\n{text}");
    }
    // Targets for arrays, −100 leaving a row out.
    let mut t: Vec<i32> = (0..N_CHUNK * R)
        .map(|row| tokens[position(row) + 1])
        .collect();
    t[0] = -100;
    let tt = tmp("targets.npy");
    i32_npy(&tt, &t);
    let j = json(ok(&[
        "compare",
        &s(&sp),
        &s(&sp),
        "--input",
        "logits",
        "--json",
        "--targets",
        &s(&tt),
    ]));
    assert_eq!(j["target_rows"], N_CHUNK * R - 1);
    assert!(j["ln_ppl_ratio"]["mean"].as_f64().unwrap().abs() < 1e-12);
    t[1] = V as i32;
    i32_npy(&tt, &t);
    fails(
        &[
            "compare",
            &s(&sp),
            &s(&sp),
            "--input",
            "logits",
            "--targets",
            &s(&tt),
        ],
        "target of row 1",
    );

    // Bad input: exit 2 naming what and where.
    fails(
        &["compare", &s(&kp), &s(&qp), "--input", "probs"],
        "log-probabilities",
    );
    let short = tmp("short.kld");
    std::fs::write(&short, &kld[..kld.len() - 2 * nv - 3]).unwrap();
    fails(&["compare", &s(&short), &s(&qp)], "chunk 1 record 1");
    let mut magic = kld.clone();
    magic[0] = b'X';
    let bad = tmp("magic.kld");
    std::fs::write(&bad, &magic).unwrap();
    fails(&["compare", &s(&bad), &s(&qp)], "magic");
    // Entropy reads P alone: a .kld's tokens score nothing then (no report of NaNs), and
    // explicit targets or agreement are refused.
    let out = ok(&["compare", &s(&kp), &s(&qp), "--divergence", "entropy"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains("Perplexity") && !text.contains("nan"),
        "{text}"
    );
    for extra in ["--targets", "--agreement"] {
        let mut args = vec!["compare", &s(&qp), &s(&qp)]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        args.extend(["--input", "logits", "--divergence", "entropy", extra].map(String::from));
        if extra == "--targets" {
            args.push(s(&tp));
        }
        let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        fails(&args, "entropy");
    }
    // Two bases made from different texts (one token apart, at chunk 1 position 3), or of
    // different shapes, are not compared.
    let mut other = kld.clone();
    let at = 20 + 4 * (N_CTX + 3);
    let t = i32::from_le_bytes(other[at..at + 4].try_into().unwrap());
    other[at..at + 4].copy_from_slice(&((t + 1) % V as i32).to_le_bytes());
    let other_text = tmp("other_text.kld");
    std::fs::write(&other_text, &other).unwrap();
    fails(&["compare", &s(&kp), &s(&other_text)], "tokens differ from");
    fails(
        &["compare", &s(&kp), &s(&other_text)],
        &format!("chunk 1, position 3: {} against {t}", (t + 1) % V as i32),
    );
    let other_shape = tmp("other_shape.kld");
    export_kld(&bp, &tp, 4, &other_shape);
    fails(
        &["compare", &s(&kp), &s(&other_shape)],
        &format!(
            "another shape (n_ctx 4, n_vocab {V}, n_chunk {})",
            2 * N_CHUNK
        ),
    );
    let few = tmp("few.npy");
    f32_npy_shaped(&few, &[5, V], &quant[..5 * V]);
    fails(&["compare", &s(&kp), &s(&few)], "per scored position");
    fails(
        &[
            "export-kld",
            &s(&bp),
            "--tokens",
            &s(&tp),
            "--n-ctx",
            "5",
            "-o",
            &s(&tmp("x.kld")),
        ],
        "--n-ctx 5",
    );
    // The output is never an input.
    fails(
        &[
            "export-kld",
            &s(&bp),
            "--tokens",
            &s(&tp),
            "--n-ctx",
            &n_ctx,
            "-o",
            &s(&bp),
        ],
        "refusing to overwrite",
    );
}

#[test]
fn llama_compat_reproduces_llama_cpp_arithmetic() {
    // Wide logits, so that many base log-probabilities fall below −16 (llama.cpp leaves
    // those terms out of its KL sum and keeps the quantised values).
    let Exported {
        quant,
        tokens,
        qp,
        kp,
        ..
    } = exported("wide", 11, 8.0, 0.3, 3, &[N_CHUNK * N_CTX, V]);
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let kld = std::fs::read(&kp).unwrap();

    // llama.cpp's formulas, computed here in f64 from the decoded records.
    let (mut kl, mut nll_base, mut below) = (vec![], vec![], 0);
    for row in 0..N_CHUNK * R {
        let pos = position(row);
        let lp = decoded(&kld, row);
        let q: Vec<f64> = quant[pos * V..(pos + 1) * V]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let m = q.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + q.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        below += lp.iter().filter(|&&x| x <= -16.0).count();
        kl.push(
            lp.iter()
                .zip(&q)
                .filter(|(x, _)| **x > -16.0)
                .map(|(x, y)| x.exp() * (x - (y - lse)))
                .sum::<f64>(),
        );
        nll_base.push(-lp[tokens[pos + 1] as usize]);
    }
    assert!(below > 10, "the data must exercise the −16 floor");
    let n = kl.len() as f64;
    let mean_kl = kl.iter().sum::<f64>() / n;
    let ppl_base = (nll_base.iter().sum::<f64>() / n).exp();
    let j: serde_json::Value = serde_json::from_slice(
        &ok(&["compare", &s(&kp), &s(&qp), "--llama-compat", "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(j["mode"], "llama-compat");
    let got = j["mean"].as_f64().unwrap();
    // f32 arithmetic, as llama.cpp's: 1e-5 relative.
    assert!(
        (got - mean_kl).abs() <= 1e-5 * mean_kl,
        "{got} vs {mean_kl}"
    );
    let got = j["ppl_p"]["mean"].as_f64().unwrap();
    assert!(
        (got - ppl_base).abs() <= 1e-5 * ppl_base,
        "{got} vs {ppl_base}"
    );
    // The exact mode renormalises the record and keeps every term.
    let exact: serde_json::Value =
        serde_json::from_slice(&ok(&["compare", &s(&kp), &s(&qp), "--json"]).stdout).unwrap();
    assert_eq!(exact["mode"], "exact");
    assert_ne!(exact["mean"], j["mean"]);
    // Only a .kld base against logits.
    fails(
        &["compare", &s(&qp), &s(&kp), "--llama-compat"],
        "--llama-compat",
    );
}

/// A NaN in Q's logits with `--propagate-nan` makes that row NaN in `--llama-compat` as in
/// the exact mode: counted in `nan_rows` and left out of llama.cpp's own NLL sums, so the
/// perplexities stay those of the other rows (they were NaN).
#[test]
fn llama_compat_leaves_a_nan_row_out_of_the_perplexities() {
    let Exported {
        mut quant,
        tokens,
        kp,
        ..
    } = exported("compat_nan", 12, 2.0, 0.3, 3, &[N_CHUNK * N_CTX, V]);
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    // The first scored position's target, in Q: NaN.
    let pos = position(0);
    quant[pos * V + tokens[pos + 1] as usize] = f32::NAN;
    let qp = tmp("compat_nan_quant_nan.npy");
    f32_npy_shaped(&qp, &[N_CHUNK * N_CTX, V], &quant);
    let kld = std::fs::read(&kp).unwrap();
    let j: serde_json::Value = serde_json::from_slice(
        &ok(&[
            "compare",
            &s(&kp),
            &s(&qp),
            "--llama-compat",
            "--propagate-nan",
            "--json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(j["nan_rows"], 1, "{j}");
    // PPL(base) over the other scored rows, from the decoded records.
    let nll: Vec<f64> = (1..N_CHUNK * R)
        .map(|row| -decoded(&kld, row)[tokens[position(row) + 1] as usize])
        .collect();
    let want = (nll.iter().sum::<f64>() / nll.len() as f64).exp();
    let got = j["ppl_p"]["mean"].as_f64().expect("PPL(base) is a number");
    assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    assert!(j["ppl_q"]["mean"].as_f64().is_some(), "{j}");
}

/// `--llama-compat`'s printed PPL, KLD and Δp lines are llama.cpp's, digit for digit: its
/// report code (tools/perplexity/perplexity.cpp, `kl_divergence`) is mirrored here on the
/// per-row values — KLD from `--out` (checked against llama.cpp's per-row formula), NLLs and
/// Δp recomputed in llama.cpp's f32 arithmetic — its sums (f32 products summed in f64), its
/// mean_and_uncertainty and covariance, its f32 percentiles and median, its printf.
#[test]
fn llama_compat_prints_llama_cpps_percentile_lines() {
    const CTX: usize = 64;
    const CHUNKS: usize = 20;
    const VOC: usize = 40;
    const SCORED: usize = CTX - 1 - CTX / 2;
    let mut rng = Rng::new(31);
    let base: Vec<f32> = (0..CHUNKS * CTX * VOC)
        .map(|_| (3.0 * rng.normal()) as f32)
        .collect();
    let quant: Vec<f32> = base
        .iter()
        .map(|&x| x + (2.5 * rng.normal()) as f32)
        .collect();
    let tokens: Vec<i32> = (0..CHUNKS * CTX).map(|i| (i * 7 % VOC) as i32).collect();
    let (bp, qp, tp, kp, out) = (
        tmp("pct_base.npy"),
        tmp("pct_quant.npy"),
        tmp("pct_tokens.npy"),
        tmp("pct_base.kld"),
        tmp("pct_kl.npy"),
    );
    f32_npy_shaped(&bp, &[CHUNKS * CTX, VOC], &base);
    f32_npy_shaped(&qp, &[CHUNKS * CTX, VOC], &quant);
    i32_npy(&tp, &tokens);
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    export_kld(&bp, &tp, CTX, &kp);
    let text = String::from_utf8(
        ok(&[
            "compare",
            &s(&kp),
            &s(&qp),
            "--llama-compat",
            "--out",
            &s(&out),
        ])
        .stdout,
    )
    .unwrap();
    let kld_file = std::fs::read(&kp).unwrap();
    let nv = 2 * VOC.div_ceil(2) + 4;
    let rec0 = 20 + 4 * CHUNKS * CTX;
    let (_, kl) = read_f64_npy(&out);
    assert_eq!(kl.len(), CHUNKS * SCORED);
    let (mut dp, mut big) = (vec![], 0);
    // llama.cpp's kl_divergence_result: f32 NLLs, their products in f32, sums in f64.
    let mut sums = [0f64; 5];
    for (row, &got) in kl.iter().enumerate() {
        let pos = (row / SCORED) * CTX + CTX / 2 + row % SCORED;
        let at = rec0 + row * 2 * nv;
        let (scale, min) = (le_f32(&kld_file, at), le_f32(&kld_file, at + 4));
        let lp: Vec<f32> = (0..VOC)
            .map(|i| {
                let q = u16::from_le_bytes([kld_file[at + 8 + 2 * i], kld_file[at + 9 + 2 * i]]);
                scale * q as f32 + min
            })
            .collect();
        let logits = &quant[pos * VOC..(pos + 1) * VOC];
        // llama.cpp's log_softmax against a base record, in its own types.
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
        let lse = sum_exp.ln() as f32;
        let want: f64 = lp
            .iter()
            .zip(logits)
            .filter(|(x, _)| **x > -16.0)
            .map(|(&x, &l)| (x.exp() * (x - l + (max + lse))) as f64)
            .sum();
        assert!(
            (got - want).abs() <= 1e-5 * want.abs() + 1e-6,
            "row {row}: {got} vs {want}"
        );
        big += usize::from(got > 1.0);
        let tok = tokens[pos + 1] as usize;
        let nll = max + lse - logits[tok];
        let nll_base = -lp[tok];
        dp.push((-nll).exp() - (-nll_base).exp());
        for (acc, v) in sums.iter_mut().zip([
            nll,
            nll * nll,
            nll_base,
            nll_base * nll_base,
            nll * nll_base,
        ]) {
            *acc += v as f64;
        }
    }
    assert!(
        big > 5,
        "the tail must hold KLDs whose f32 rounding shows in 6 decimals"
    );
    // llama.cpp's percentile and median over sorted f32 values.
    let sorted = |v: Vec<f32>| {
        let mut v = v;
        v.sort_by(f32::total_cmp);
        v
    };
    let percentile = |v: &[f32], fraction: f32| -> f32 {
        if fraction <= 0.0 {
            return v[0];
        }
        if fraction >= 1.0 {
            return v[v.len() - 1];
        }
        let p = fraction * (v.len() - 1) as f32;
        let ip = p as usize;
        let p = p - ip as f32;
        (1.0 - p) * v[ip] + p * v[(ip + 1).min(v.len() - 1)]
    };
    let median = |v: &[f32]| {
        let n = v.len();
        if n.is_multiple_of(2) {
            0.5f32 * (v[n / 2] + v[n / 2 - 1])
        } else {
            v[n / 2]
        }
    };
    // Its report's mean_and_uncertainty and covariance over those sums (count > 10 here).
    let n = kl.len() as f64;
    let mean_unc = |sum: f64, sum2: f64| {
        let f = sum / n;
        let df = sum2 / n - f * f;
        (
            f,
            if df > 0.0 {
                (df / (n - 1.0)).sqrt()
            } else {
                0.0
            },
        )
    };
    let (lq, lb) = (mean_unc(sums[0], sums[1]), mean_unc(sums[2], sums[3]));
    let cov = (sums[4] / n - (sums[0] / n) * (sums[2] / n)) / (n - 1.0);
    let (ppl, ppl_base) = (lq.0.exp(), lb.0.exp());
    let (ppl_unc, base_unc) = (ppl * lq.1, ppl_base * lb.1);
    let ratio_unc = (lq.1 * lq.1 + lb.1 * lb.1 - 2.0 * cov).sqrt();
    let pm = |label: &str, v: f64, u: f64| format!("{label:<30}: {v:10.6} ± {u:10.6}");
    let ppl_lines = [
        pm("Mean PPL(Q)", ppl, ppl_unc),
        pm("Mean PPL(base)", ppl_base, base_unc),
        format!(
            "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%",
            100.0 * cov / (lq.1 * lb.1)
        ),
        pm("Mean ln(PPL(Q)/PPL(base))", lq.0 - lb.0, ratio_unc),
        pm(
            "Mean PPL(Q)/PPL(base)",
            (lq.0 - lb.0).exp(),
            (lq.0 - lb.0).exp() * ratio_unc,
        ),
        pm(
            "Mean PPL(Q)-PPL(base)",
            ppl - ppl_base,
            (ppl_unc * ppl_unc + base_unc * base_unc - 2.0 * ppl * ppl_base * cov).sqrt(),
        ),
    ];
    let k = sorted(kl.iter().map(|&x| x as f32).collect());
    let d = sorted(dp);
    let mut want = vec![
        format!("Maximum KLD: {:10.6}", k[k.len() - 1]),
        format!("Median  KLD: {:10.6}", median(&k)),
        format!("Minimum KLD: {:10.6}", k[0]),
        format!("Maximum Δp: {:6.3}%", 100.0 * d[d.len() - 1] as f64),
        format!("Median  Δp: {:6.3}%", 100.0 * median(&d) as f64),
        format!("Minimum Δp: {:6.3}%", 100.0 * d[0] as f64),
    ];
    for (label, f) in [
        ("99.9%", 0.999f32),
        ("99.0%", 0.990),
        ("95.0%", 0.950),
        ("90.0%", 0.900),
        ("10.0%", 0.100),
        (" 5.0%", 0.050),
        (" 1.0%", 0.010),
        (" 0.1%", 0.001),
    ] {
        want.push(format!("{label}   KLD: {:10.6}", percentile(&k, f)));
    }
    for (label, f) in [
        ("99.9%", 0.999f32),
        ("75.0%", 0.750),
        ("25.0%", 0.250),
        (" 0.1%", 0.001),
    ] {
        want.push(format!(
            "{label}   Δp: {:6.3}%",
            100.0 * percentile(&d, f) as f64
        ));
    }
    want.extend(ppl_lines);
    for line in want {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
}
