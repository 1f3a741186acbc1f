//! Mergeable statistics: every report (`kldiv compare`, llama.cpp's, the Python package's) is
//! built from a [`Summary`], and two summaries of disjoint rows merge into the summary of
//! their union: counts exactly, moments to rounding (Chan's merge), min/max with global rows,
//! quantiles exactly while every value is kept (one machine) and within [`sketch::ALPHA`]
//! (relative) from the sketch otherwise (shards, see `kldiv merge`).

pub mod agreement;
pub mod llama;
pub mod moments;
pub mod report;
pub mod sketch;
mod values;

use crate::cpu::row_stats;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::request::{Divergence, InputForm, Normalization, Request, Unit};
use crate::semantics::sums::AgreeSums;
use agreement::Agreement;
use moments::{Bivariate, Moments};
use serde::{Deserialize, Serialize};
pub use values::Values;
use values::ValuesWire;

/// What was compared, and how: the part of a report that is not a statistic. Summaries merge
/// only when their divergence, input form, unit, width and mode agree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Where P and Q came from (file labels; "array" from Python).
    pub p: String,
    pub q: String,
    pub divergence: String,
    pub input: String,
    pub unit: String,
    pub cols: u64,
    /// The element types stored, and the type computed in.
    pub p_dtype: String,
    pub q_dtype: String,
    pub dtype: String,
    /// "exact", or "llama-compat" (llama.cpp's own arithmetic).
    pub mode: String,
    /// The leading axes that number the rows ([batch, seq]), when there are several: rows
    /// in reports are then also named by their multi-index. Empty after a merge.
    #[serde(default)]
    pub row_shape: Vec<u64>,
    /// The options beyond divergence, input and unit that change the values, in the CLI's
    /// spelling ("normalize", "pseudocount 0.5", "temperature-p 2"; comma-separated, empty
    /// for none): shards computed with different ones are not merged. (Absent from
    /// summaries written before it: read as none; left out when empty, so that a summary
    /// without options stays readable by those versions.)
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub settings: String,
}

impl Meta {
    /// Row `r` as a multi-index of `row_shape` (C order), when it has several axes.
    pub fn index_of(&self, r: u64) -> Option<Vec<u64>> {
        let n: u64 = self.row_shape.iter().product();
        if self.row_shape.len() < 2 || r >= n {
            return None;
        }
        let mut idx = vec![0; self.row_shape.len()];
        let mut rest = r;
        for (i, d) in self.row_shape.iter().enumerate().rev() {
            idx[i] = rest % d;
            rest /= d;
        }
        Some(idx)
    }
}

impl Meta {
    /// The metadata of `req` over rows of `cols` values.
    pub fn of(req: &Request, cols: usize, dtype: crate::Dtype) -> Meta {
        Meta {
            p: "P".into(),
            q: "Q".into(),
            divergence: req.divergence.name().into(),
            input: req.input.name().into(),
            unit: req.unit.name().into(),
            cols: cols as u64,
            p_dtype: dtype.name().into(),
            q_dtype: dtype.name().into(),
            dtype: dtype.name().into(),
            mode: "exact".into(),
            row_shape: vec![],
            settings: String::new(),
        }
        .with_setting(match req.normalization {
            _ if req.pseudocount > 0.0 => format!("pseudocount {}", req.pseudocount),
            Normalization::Normalize => "normalize".into(),
            Normalization::AsGiven => "as-given".into(),
            Normalization::Check { .. } => String::new(),
        })
    }

    /// Each side's temperature (logits divided by T), where it is not 1.
    pub fn with_temperatures(self, p: Option<f64>, q: Option<f64>) -> Meta {
        let t = |side, t: Option<f64>| match t {
            Some(t) if t != 1.0 => format!("temperature-{side} {t}"),
            _ => String::new(),
        };
        self.with_setting(t("p", p)).with_setting(t("q", q))
    }

    fn with_setting(mut self, s: String) -> Meta {
        if !s.is_empty() {
            if !self.settings.is_empty() {
                self.settings.push_str(", ");
            }
            self.settings.push_str(&s);
        }
        self
    }

    pub fn divergence(&self) -> Option<Divergence> {
        Divergence::from_name(&self.divergence)
    }

    pub fn input(&self) -> Option<InputForm> {
        InputForm::from_name(&self.input)
    }

    pub fn unit(&self) -> Option<Unit> {
        Unit::from_name(&self.unit)
    }

    /// Whether Q is read (every divergence but entropy).
    pub fn reads_q(&self) -> bool {
        self.divergence() != Some(Divergence::Entropy)
    }
}

/// The statistics of the rows that have a target (the actual next token).
#[derive(Clone, Debug, PartialEq)]
pub struct TargetStats {
    /// x = −ln p_Q(target), y = −ln p_P(target).
    pub nll: Bivariate,
    /// Δp = p_Q(target) − p_P(target).
    pub dp: Values,
    /// Moments of Δp² (RMS Δp and its uncertainty).
    pub dp2: Moments,
    /// llama.cpp's own running sums of the NLLs, in llama-compat mode only.
    pub llama_sums: Option<LlamaSums>,
}

/// The NLL sums of llama.cpp's `kl_divergence_result` as it accumulates them: each product
/// of two f32 NLLs taken in f32, summed in f64. Its report's PPL lines are computed from
/// these; f64 moments of the same values differ at ~4e-8 relative, which a model whose PPL
/// prints 13 digits shows (`scripts/llama-check`). Merged by adding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaSums {
    pub n: u64,
    /// Σ nll_Q, Σ nll_Q², Σ nll_P, Σ nll_P², Σ nll_Q·nll_P.
    pub nll: f64,
    pub nll2: f64,
    pub base: f64,
    pub base2: f64,
    pub cross: f64,
}

impl LlamaSums {
    pub fn push(&mut self, nll_q: f32, nll_p: f32) {
        self.n += 1;
        self.nll += nll_q as f64;
        self.nll2 += (nll_q * nll_q) as f64;
        self.base += nll_p as f64;
        self.base2 += (nll_p * nll_p) as f64;
        self.cross += (nll_q * nll_p) as f64;
    }

    pub fn merge(&mut self, o: &LlamaSums) {
        self.n += o.n;
        self.nll += o.nll;
        self.nll2 += o.nll2;
        self.base += o.base;
        self.base2 += o.base2;
        self.cross += o.cross;
    }
}

/// One row's target values.
#[derive(Clone, Copy, Debug)]
pub struct RowTarget {
    pub nll_p: f64,
    pub nll_q: f64,
    pub dp: f64,
}

impl RowTarget {
    /// From the target's ln p under P and under Q.
    pub fn of(ln_p: f64, ln_q: f64) -> RowTarget {
        RowTarget {
            nll_p: -ln_p,
            nll_q: -ln_q,
            dp: ln_q.exp() - ln_p.exp(),
        }
    }
}

/// The statistics of a comparison, mergeable across shards.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub meta: Meta,
    /// Global index of the first row, and rows seen (NaN rows included).
    pub first_row: u64,
    pub rows: u64,
    /// The per-row values (the divergence).
    pub values: Values,
    /// Rows whose argmax agrees (when Q is read).
    pub same_top: u64,
    /// With targets: the statistics of the rows that have one.
    pub targets: Option<TargetStats>,
    /// Opt-in: top-K agreement, Σ min(p, q), KLD by P's confidence.
    pub agreement: Option<Agreement>,
    /// Further divergences of the same rows (`--divergence kl,reverse-kl,js`): each one's
    /// name (as `Divergence::name`) and the distribution of its per-row values, in the
    /// order asked.
    pub also: Vec<(String, Values)>,
    /// Wall time (a merge keeps the longest shard's: shards run side by side).
    pub elapsed_s: f64,
}

/// The format name and version written in every serialised summary.
pub const FORMAT: &str = "kldiv-summary";
pub const VERSION: u32 = 1;

/// A target id that leaves its row out of the target statistics (torch's ignore_index).
pub const IGNORE: i64 = -100;

impl Summary {
    /// An empty summary whose rows start at global row `first_row`. `keep`: keep every value
    /// for exact percentiles (8 bytes a row; a serialised summary never holds them).
    pub fn new(meta: Meta, keep: bool, first_row: u64) -> Summary {
        Summary {
            meta,
            first_row,
            rows: 0,
            values: Values::new(keep),
            same_top: 0,
            targets: None,
            agreement: None,
            also: vec![],
            elapsed_s: 0.0,
        }
    }

    /// Also keeps the per-row values of these divergences (before the first row; `keep` as
    /// in [`Summary::new`]).
    pub fn with_also(mut self, divergences: &[Divergence], keep: bool) -> Summary {
        self.also = divergences
            .iter()
            .map(|d| (d.name().to_string(), Values::new(keep)))
            .collect();
        self
    }

    /// The further divergences, parsed.
    pub fn also_divergences(&self) -> Vec<Divergence> {
        self.also
            .iter()
            .filter_map(|(n, _)| Divergence::from_name(n))
            .collect()
    }

    /// Adds the next rows' values of further divergence `k` (the rows `add_block` or
    /// `push_row` add, in the same order).
    pub fn push_also(&mut self, k: usize, values: &[f64]) -> Result<()> {
        let first = self.first_row;
        let Some((_, v)) = self.also.get_mut(k) else {
            return Err(Error::InvalidRequest(format!(
                "no further divergence {k} in this summary"
            )));
        };
        for &x in values {
            let row = first + v.count() + v.nan_count();
            v.push(x, row);
        }
        Ok(())
    }

    /// Turns on the agreement statistics (before the first row; one more read of each row:
    /// see [`Summary::add_block_from_run`]).
    pub fn with_agreement(mut self) -> Summary {
        self.agreement = Some(Agreement::default());
        self
    }

    /// Whether a run of `req` can have target or agreement statistics: both compare P's
    /// probabilities with Q's, which entropy (P alone) has not. An error names what was asked.
    pub fn check_extras(req: &Request, targets: bool, agreement: bool) -> Result<()> {
        let what = match (targets, agreement) {
            _ if req.reads_q() => return Ok(()),
            (true, _) => "targets (perplexities, Δp, same top)",
            (false, true) => "agreement statistics",
            (false, false) => return Ok(()),
        };
        Err(Error::InvalidRequest(format!(
            "{what} compare P with Q: not with entropy, which reads P alone"
        )))
    }

    /// Turns on the target statistics (before the first row).
    pub fn with_targets(mut self, keep: bool) -> Summary {
        self.targets = Some(TargetStats {
            nll: Bivariate::default(),
            dp: Values::new(keep),
            dp2: Moments::default(),
            llama_sums: None,
        });
        self
    }

    /// Adds the next row; whether it entered the statistics (a NaN row does not), for
    /// what a caller records beside them ([`Summary::push_llama_nll`]).
    pub fn push_row(&mut self, value: f64, same_top: bool, target: Option<RowTarget>) -> bool {
        let row = self.first_row + self.rows;
        self.rows += 1;
        self.values.push(value, row);
        // A NaN row (its input held NaN, kept by `NanPolicy::Propagate`) is counted
        // (`nan_rows`) and left out of every statistic, as it is of the divergence's.
        let scored = !value.is_nan();
        self.same_top += (same_top && scored) as u64;
        if let (Some(ts), Some(t), true) = (&mut self.targets, target, scored) {
            ts.nll.push(t.nll_q, t.nll_p);
            ts.dp.push(t.dp, row);
            ts.dp2.push(t.dp * t.dp);
        }
        scored
    }

    /// Rows that have statistics: all but those whose value is NaN (the "same top" share is
    /// of these).
    pub fn scored_rows(&self) -> u64 {
        self.rows - self.values.nan_count()
    }

    /// Records the last row's target NLLs into llama.cpp's own sums as well (llama-compat
    /// mode: see [`LlamaSums`]). Call after [`Summary::push_row`] for rows with a target
    /// that it scored.
    pub fn push_llama_nll(&mut self, nll_q: f32, nll_p: f32) {
        if let Some(t) = &mut self.targets {
            t.llama_sums
                .get_or_insert_with(Default::default)
                .push(nll_q, nll_p);
        }
    }

    /// Adds a block of rows: `values` computed by an engine for `req` over `p`, `q`
    /// (row-major, `cols` wide), and each row's target (`IGNORE` to leave one out). The
    /// argmax agreement and the targets' log-probabilities are computed here (SIMD
    /// `row_stats`, or f64 for the rows it leaves).
    pub fn add_block<T: Element>(
        &mut self,
        req: &Request,
        (p, q): (&[T], &[T]),
        cols: usize,
        values: &[f64],
        targets: Option<&[i64]>,
    ) -> Result<()> {
        self.add_block_with_tops(req, (p, q), cols, values, &[], targets)
    }

    /// [`Summary::add_block`] with each row's argmaxes and log-sum-exps where the engine's
    /// pass over logits gave them (`Run::tops`, one per row, or empty): "same top" and the
    /// targets' log-probabilities then need no further read of the rows (agreement
    /// statistics still do).
    pub fn add_block_with_tops<T: Element>(
        &mut self,
        req: &Request,
        (p, q): (&[T], &[T]),
        cols: usize,
        values: &[f64],
        tops: &[Option<crate::RowTops>],
        targets: Option<&[i64]>,
    ) -> Result<()> {
        self.add_block_from_run(req, (p, q), cols, values, (tops, &[]), targets)
    }

    /// [`Summary::add_block_with_tops`] with, where the engine computed them (`Run::agreement`,
    /// one per row, or empty), each row's agreement sums: then no statistic needs a further
    /// read of the rows here (rows without them are computed in f64).
    pub fn add_block_from_run<T: Element>(
        &mut self,
        req: &Request,
        (p, q): (&[T], &[T]),
        cols: usize,
        values: &[f64],
        (tops, agreed): (&[Option<crate::RowTops>], &[Option<AgreeSums>]),
        targets: Option<&[i64]>,
    ) -> Result<()> {
        let rows = values.len();
        if cols == 0 || p.len() != rows * cols || (req.reads_q() && q.len() != rows * cols) {
            return Err(Error::InvalidRequest(format!(
                "a block of {rows} values needs {rows} × {cols} elements per side"
            )));
        }
        if let Some(t) = targets {
            check_targets(t, rows, cols)?;
            if self.targets.is_none() {
                return Err(Error::InvalidRequest(
                    "targets given to a summary made without them".into(),
                ));
            }
        }
        // A pseudocount smooths the rows the divergence was computed on: the targets'
        // probabilities and the agreement come from the same smoothed rows (x + ε, each
        // normalised by its sum below), in f64.
        if req.pseudocount > 0.0 && (targets.is_some() || self.agreement.is_some()) {
            let eps = req.pseudocount;
            let smooth = |x: &[T]| x.iter().map(|v| v.to_f64() + eps).collect::<Vec<f64>>();
            let (ps, qs) = (smooth(p), smooth(q));
            let plain = Request {
                pseudocount: 0.0,
                ..*req
            };
            return self.add_block_from_run(
                &plain,
                (&ps, &qs),
                cols,
                values,
                (tops, agreed),
                targets,
            );
        }
        let reads_q = req.reads_q();
        let agree = self.agreement.is_some() && reads_q;
        // Top K, log-normalisers and Σ min with the SIMD kernels; rows they leave (f64
        // inputs, NaN, ±inf, no mass) in f64 below.
        // Tops (and agreement sums) from the engine's reads (the few rows without them, e.g.
        // NaN rows, in f64).
        let agreed = if agree && agreed.len() == rows && tops.len() == rows {
            agreed
        } else {
            &[]
        };
        // (row_stats_given ignores them unless there is one per row.)
        let known = tops;
        let tops = if (!agree || !agreed.is_empty()) && tops.len() == rows {
            tops
        } else {
            &[]
        };
        let fast = if reads_q && tops.is_empty() {
            let want = row_stats::Want {
                top: if agree { agreement::TOP_K[2] } else { 1 },
                ln_sum: targets.is_some() || agree,
                sum_min: agree,
            };
            // The divergence pass's log-sum-exps, where it gave them (logits), spare
            // row_stats two exponentials per element.
            crate::cpu::CpuEngine::new().row_stats_given(req.input, p, q, cols, want, known)
        } else {
            vec![]
        };
        type Extra = (bool, Option<RowTarget>, Option<agreement::RowAgreement>);
        let target_of = |r: usize| targets.map(|t| t[r]).filter(|&t| t != IGNORE);
        // kldiv's own threads: rayon's global pool panics where it cannot start.
        let extra: Vec<Extra> = crate::cpu::par_map(rows, |r| {
            let a = &p[r * cols..(r + 1) * cols];
            if !reads_q {
                return (false, None, None);
            }
            let b = &q[r * cols..(r + 1) * cols];
            if let Some(tp) = tops.get(r).copied().flatten() {
                let t = target_of(r).map(|t| {
                    let t = t as usize;
                    RowTarget::of(a[t].to_f64() - tp.lse_a, b[t].to_f64() - tp.lse_b)
                });
                let g = agree.then(|| match agreed.get(r).copied().flatten() {
                    Some(s) => Some(agreement::from_sums(&s, &tp)),
                    None => agreement::row(req.input, a, b),
                });
                return (tp.top_a == tp.top_b, t, g.flatten());
            }
            if let Some(st) = fast.get(r).copied().flatten() {
                let t = target_of(r).map(|t| {
                    let (lp, lq) = (
                        st.p.ln_prob(req.input, a, t as usize),
                        st.q.ln_prob(req.input, b, t as usize),
                    );
                    RowTarget::of(lp, lq)
                });
                let g = agree.then(|| agreement::from_stats(req.input, &st, cols));
                return (st.p.top[0] == st.q.top[0], t, g);
            }
            let t = target_of(r).map(|t| {
                let (lp, lq) = (
                    ln_prob_of(req.input, a, t as usize),
                    ln_prob_of(req.input, b, t as usize),
                );
                RowTarget::of(lp, lq)
            });
            let g = if agree {
                agreement::row(req.input, a, b)
            } else {
                None
            };
            (argmax(a) == argmax(b), t, g)
        });
        for (v, (same, t, g)) in values.iter().zip(extra) {
            self.push_row(*v, same, t);
            if let (Some(ag), Some(g)) = (&mut self.agreement, g) {
                ag.push(&g, *v);
            }
        }
        Ok(())
    }

    /// Places these rows `by` rows later in the whole run (a shard computed from row 0 whose
    /// global place is known only afterwards).
    pub fn shift_rows(&mut self, by: u64) {
        self.first_row += by;
        self.values.shift_rows(by);
        for (_, v) in &mut self.also {
            v.shift_rows(by);
        }
        if let Some(t) = &mut self.targets {
            t.dp.shift_rows(by);
        }
    }

    /// Adds `o`'s rows. The two must describe the same comparison over disjoint rows.
    pub fn merge(&mut self, o: &Summary) -> Result<()> {
        let bad = |m: String| Err(Error::Summary(m));
        let (a, b) = (&self.meta, &o.meta);
        for (what, x, y) in [
            ("divergence", &a.divergence, &b.divergence),
            ("input", &a.input, &b.input),
            ("unit", &a.unit, &b.unit),
            ("mode", &a.mode, &b.mode),
        ] {
            if x != y {
                return bad(format!("cannot merge a {what} of {x} with one of {y}"));
            }
        }
        if a.settings != b.settings {
            let say = |s: &str| {
                if s.is_empty() {
                    "no options".to_string()
                } else {
                    format!("'{s}'")
                }
            };
            return bad(format!(
                "cannot merge a summary computed with {} with one computed with {}",
                say(&a.settings),
                say(&b.settings)
            ));
        }
        if a.cols != b.cols {
            return bad(format!(
                "cannot merge rows of {} values with rows of {}",
                a.cols, b.cols
            ));
        }
        if self.targets.is_some() != o.targets.is_some() {
            return bad("cannot merge a summary with targets and one without".into());
        }
        if self.agreement.is_some() != o.agreement.is_some() {
            return bad("cannot merge a summary with agreement statistics and one without".into());
        }
        let names = |s: &Summary| s.also.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        if names(self) != names(o) {
            return bad(format!(
                "cannot merge summaries of different further divergences ({:?} and {:?})",
                names(self),
                names(o)
            ));
        }
        let (s0, s1) = (self.first_row, self.first_row + self.rows);
        let (o0, o1) = (o.first_row, o.first_row + o.rows);
        if self.rows > 0 && o.rows > 0 && s0 < o1 && o0 < s1 {
            return bad(format!(
                "rows {s0}..{s1} and {o0}..{o1} overlap (give each shard its first global row \
                 with --row-offset, or merge each shard once)"
            ));
        }
        // Merge in row order, so that ties of min/max keep the first row.
        let (mut first, second) = if o0 < s0 && o.rows > 0 {
            (o.clone(), &*self)
        } else {
            (self.clone(), o)
        };
        first.values.merge(&second.values);
        if let (Some(x), Some(y)) = (&mut first.targets, &second.targets) {
            // A shard without target rows has no sums to give (compat shards with rows have).
            let (xn, yn) = (x.nll.x.n, y.nll.x.n);
            x.llama_sums = match (x.llama_sums, y.llama_sums) {
                (Some(mut a), Some(b)) => {
                    a.merge(&b);
                    Some(a)
                }
                (Some(a), None) if yn == 0 => Some(a),
                (None, Some(b)) if xn == 0 => Some(b),
                _ => None,
            };
            x.nll = x.nll.merge(&y.nll);
            x.dp.merge(&y.dp);
            x.dp2 = x.dp2.merge(&y.dp2);
        }
        if let (Some(x), Some(y)) = (&mut first.agreement, &second.agreement) {
            x.merge(y);
        }
        for ((_, x), (_, y)) in first.also.iter_mut().zip(&second.also) {
            x.merge(y);
        }
        first.meta.p = join_labels(&first.meta.p, &second.meta.p);
        first.meta.q = join_labels(&first.meta.q, &second.meta.q);
        for (x, y) in [
            (&mut first.meta.p_dtype, &second.meta.p_dtype),
            (&mut first.meta.q_dtype, &second.meta.q_dtype),
            (&mut first.meta.dtype, &second.meta.dtype),
        ] {
            if x != y && !x.split('+').any(|d| d == y) {
                *x = format!("{x}+{y}");
            }
        }
        // A shard's leading shape does not describe the merged rows.
        first.meta.row_shape.clear();
        first.first_row = s0.min(o0);
        if self.rows == 0 {
            first.first_row = o0;
        } else if o.rows == 0 {
            first.first_row = s0;
        }
        first.rows = self.rows + o.rows;
        first.same_top = self.same_top + o.same_top;
        first.elapsed_s = self.elapsed_s.max(o.elapsed_s);
        *self = first;
        Ok(())
    }

    /// The summary as versioned JSON (without kept values: percentiles of a summary read
    /// back come from the sketch).
    pub fn to_json(&self) -> String {
        let w = Wire {
            format: FORMAT.into(),
            version: VERSION,
            meta: self.meta.clone(),
            first_row: self.first_row,
            rows: self.rows,
            values: self.values.to_wire(),
            same_top: self.same_top,
            targets: self.targets.as_ref().map(|t| TargetsWire {
                nll: t.nll,
                dp: t.dp.to_wire(),
                dp2: t.dp2,
                llama_sums: t.llama_sums,
            }),
            agreement: self.agreement.clone(),
            also: self
                .also
                .iter()
                .map(|(n, v)| AlsoWire {
                    divergence: n.clone(),
                    values: v.to_wire(),
                })
                .collect(),
            elapsed_s: self.elapsed_s,
        };
        serde_json::to_string(&w).expect("a summary always serialises")
    }

    /// Reads `to_json`'s output, checking the format, the version and the consistency of
    /// every count: a corrupt or foreign summary is an error, never a wrong number.
    pub fn from_json(s: &str) -> Result<Summary> {
        let bad = |m: String| Error::Summary(m);
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| bad(format!("not JSON: {e}")))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(bad(format!("not a {FORMAT} (no \"format\": \"{FORMAT}\")")));
        }
        match v.get("version").and_then(|f| f.as_u64()) {
            Some(ver) if ver == VERSION as u64 => {}
            other => {
                return Err(bad(format!(
                    "version {} is not supported (this kldiv reads version {VERSION})",
                    other.map_or("none".into(), |v| v.to_string())
                )))
            }
        }
        let w: Wire = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
        let values = Values::from_wire(&w.values).map_err(|e| bad(format!("values: {e}")))?;
        let targets = match &w.targets {
            None => None,
            Some(t) => Some(TargetStats {
                nll: t.nll,
                dp: Values::from_wire(&t.dp).map_err(|e| bad(format!("delta_p: {e}")))?,
                dp2: t.dp2,
                llama_sums: t.llama_sums,
            }),
        };
        let seen = values.count() + values.nan_count();
        let target_rows = targets
            .as_ref()
            .map_or(0, |t| t.dp.count() + t.dp.nan_count());
        let nll_rows = targets.as_ref().map_or(0, |t| t.nll.x.n);
        let llama_rows = targets
            .as_ref()
            .and_then(|t| t.llama_sums)
            .map_or(nll_rows, |l| l.n);
        if seen != w.rows
            || w.same_top > w.rows
            || target_rows > w.rows
            || nll_rows != target_rows
            || llama_rows != nll_rows
        {
            return Err(bad(format!(
                "counts disagree: {} rows, {seen} values, {} same top, {target_rows} rows with \
                 targets, {nll_rows} NLL pairs, {llama_rows} in llama.cpp's NLL sums",
                w.rows, w.same_top
            )));
        }
        if w.meta.divergence().is_none() || w.meta.input().is_none() || w.meta.unit().is_none() {
            return Err(bad(format!(
                "unknown divergence, input or unit: {}, {}, {}",
                w.meta.divergence, w.meta.input, w.meta.unit
            )));
        }
        if let Some(a) = &w.agreement {
            a.check(w.rows).map_err(bad)?;
        }
        if w.first_row.checked_add(w.rows).is_none() {
            return Err(bad("row numbers overflow".into()));
        }
        let mut also = Vec::with_capacity(w.also.len());
        for a in &w.also {
            if Divergence::from_name(&a.divergence).is_none() {
                return Err(bad(format!("unknown divergence {:?}", a.divergence)));
            }
            let v =
                Values::from_wire(&a.values).map_err(|e| bad(format!("{}: {e}", a.divergence)))?;
            if v.count() + v.nan_count() != w.rows {
                return Err(bad(format!(
                    "counts disagree: {} rows, {} values of {}",
                    w.rows,
                    v.count() + v.nan_count(),
                    a.divergence
                )));
            }
            also.push((a.divergence.clone(), v));
        }
        Ok(Summary {
            meta: w.meta,
            first_row: w.first_row,
            rows: w.rows,
            values,
            same_top: w.same_top,
            targets,
            agreement: w.agreement,
            also,
            elapsed_s: w.elapsed_s,
        })
    }

    /// llama.cpp's report numbers, when the rows had targets.
    pub fn llama(&self) -> Option<llama::LlamaStats> {
        self.targets.as_ref().map(|t| llama::stats(self, t))
    }
}

fn join_labels(a: &str, b: &str) -> String {
    if a == b || a.split(", ").any(|x| x == b) {
        a.to_string()
    } else {
        format!("{a}, {b}")
    }
}

fn check_targets(t: &[i64], rows: usize, cols: usize) -> Result<()> {
    if t.len() != rows {
        return Err(Error::InvalidRequest(format!(
            "{} targets for {rows} rows",
            t.len()
        )));
    }
    check_target_ids(t, cols)
}

/// Every target is a column of a `cols`-wide row or `IGNORE`; the first that is not is
/// `Error::BadTarget` naming its row (its index in `t`).
pub fn check_target_ids(t: &[i64], cols: usize) -> Result<()> {
    match t
        .iter()
        .position(|&x| x != IGNORE && !(0..cols as i64).contains(&x))
    {
        Some(row) => Err(Error::BadTarget {
            row,
            target: t[row],
            cols,
        }),
        None => Ok(()),
    }
}

/// Index of the largest value (first on ties; NaN never wins; 0 where no value is above
/// −inf). The maximum first, in 8 independent lanes (a running (index, value) pair is one
/// long chain of compares: ~25% of an f64 probability report's time), then its first place.
pub fn argmax<T: Element>(row: &[T]) -> usize {
    let mut lanes = [f64::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            let v = v.to_f64();
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = lanes
        .into_iter()
        .fold(f64::NEG_INFINITY, |a, b| if b > a { b } else { a });
    for v in tail {
        let v = v.to_f64();
        max = if v > max { v } else { max };
    }
    if max == f64::NEG_INFINITY {
        return 0;
    }
    row.iter().position(|v| v.to_f64() == max).unwrap_or(0)
}

/// ln p(t) of one row in f64: for logits and log-probabilities through the row's
/// log-sum-exp, for probabilities as ln(p_t / Σp).
pub fn ln_prob_of<T: Element>(input: InputForm, row: &[T], t: usize) -> f64 {
    match input {
        InputForm::Probabilities => {
            let s: f64 = row.iter().map(|x| x.to_f64()).sum();
            (row[t].to_f64() / s).ln()
        }
        _ => {
            let m = row
                .iter()
                .map(|x| x.to_f64())
                .fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|x| (x.to_f64() - m).exp()).sum();
            row[t].to_f64() - m - s.ln()
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: String,
    version: u32,
    meta: Meta,
    first_row: u64,
    rows: u64,
    values: ValuesWire,
    same_top: u64,
    targets: Option<TargetsWire>,
    #[serde(default)]
    agreement: Option<Agreement>,
    #[serde(default)]
    also: Vec<AlsoWire>,
    elapsed_s: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlsoWire {
    divergence: String,
    values: ValuesWire,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsWire {
    nll: Bivariate,
    dp: ValuesWire,
    dp2: Moments,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    llama_sums: Option<LlamaSums>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first index of the largest value, as a running (index, value) pair finds it, on
    /// rows of every length up to 40 with ties, NaN, ±inf and rows of −inf or NaN alone.
    #[test]
    fn argmax_is_the_first_largest() {
        fn naive(row: &[f64]) -> usize {
            let mut best = (0, f64::NEG_INFINITY);
            for (i, &v) in row.iter().enumerate() {
                if v > best.1 {
                    best = (i, v);
                }
            }
            best.0
        }
        let mut state = 17u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % 7
        };
        for n in 0..40 {
            for _ in 0..50 {
                let row: Vec<f64> = (0..n)
                    .map(|_| match next() {
                        0 => f64::NAN,
                        1 => f64::NEG_INFINITY,
                        2 => 3.0,
                        k => k as f64 * 0.5,
                    })
                    .collect();
                assert_eq!(super::argmax(&row), naive(&row), "{row:?}");
                let f: Vec<f32> = row.iter().map(|&x| x as f32).collect();
                assert_eq!(super::argmax(&f), naive(&row), "{row:?}");
            }
        }
        for row in [
            vec![f64::NAN; 9],
            vec![f64::NEG_INFINITY; 17],
            vec![f64::INFINITY; 3],
        ] {
            assert_eq!(super::argmax(&row), naive(&row), "{row:?}");
        }
    }

    /// The options that change the values are named in the metadata, merged shards must
    /// share them, and a summary written before the field existed reads as having none.
    #[test]
    fn shards_with_different_options_are_not_merged() {
        let base = Request::new(Divergence::Kl);
        let meta = |req: &Request| Meta::of(req, 4, crate::Dtype::F32);
        assert_eq!(meta(&base).settings, "");
        assert_eq!(
            meta(&base.normalization(Normalization::Normalize)).settings,
            "normalize"
        );
        assert_eq!(meta(&base.pseudocount(0.5)).settings, "pseudocount 0.5");
        let logits = base.input(InputForm::Logits);
        let warm = meta(&logits).with_temperatures(Some(2.0), Some(1.0));
        assert_eq!(warm.settings, "temperature-p 2");
        let both = meta(&logits).with_temperatures(Some(0.5), Some(1.5));
        assert_eq!(both.settings, "temperature-p 0.5, temperature-q 1.5");
        let summary = |m: Meta, first| {
            let mut s = Summary::new(m, true, first);
            s.push_row(0.25, true, None);
            s
        };
        let mut a = summary(meta(&logits), 0);
        let err = a.merge(&summary(warm.clone(), 1)).unwrap_err().to_string();
        assert!(
            err.contains("no options") && err.contains("'temperature-p 2'"),
            "{err}"
        );
        let mut b = summary(warm.clone(), 0);
        b.merge(&summary(warm, 1)).unwrap();
        assert_eq!(b.rows, 2);
        // Without options the field is left out (older readers refuse unknown fields).
        assert!(!a.to_json().contains("settings"));
        // Written before `settings`: read as none.
        let mut wire: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        wire["meta"].as_object_mut().unwrap().remove("settings");
        let old = Summary::from_json(&wire.to_string()).unwrap();
        assert_eq!(old.meta.settings, "");
    }

    /// With a pseudocount, the targets' probabilities and the agreement are those of the
    /// smoothed rows the divergence saw, (x + ε)/Σ(x + ε), not of the raw counts (a zero
    /// count at a target made PPL(base) infinite).
    #[test]
    fn a_pseudocount_smooths_the_targets_and_the_agreement() {
        let eps = 0.5;
        let req = Request::new(Divergence::Kl).pseudocount(eps);
        let p = [3.0f64, 0.0, 1.0, 1.0, 1.0, 2.0];
        let q = [2.0f64, 1.0, 1.0, 1.0, 2.0, 1.0];
        let targets = [1i64, 2];
        let smooth = |r: &[f64]| {
            let s: f64 = r.iter().map(|x| x + eps).sum();
            r.iter().map(|x| (x + eps) / s).collect::<Vec<f64>>()
        };
        let meta = Meta::of(&req, 3, crate::Dtype::F64);
        let mut sum = Summary::new(meta, true, 0)
            .with_targets(true)
            .with_agreement();
        // The divergence's values come from an engine; only the extra statistics are checked.
        sum.add_block(&req, (&p, &q), 3, &[0.1, 0.2], Some(&targets))
            .unwrap();
        let (mut nll_p, mut nll_q, mut min) = (0.0, 0.0, 0.0);
        for (r, &t) in targets.iter().enumerate() {
            let (a, b) = (smooth(&p[3 * r..3 * r + 3]), smooth(&q[3 * r..3 * r + 3]));
            nll_p -= a[t as usize].ln() / 2.0;
            nll_q -= b[t as usize].ln() / 2.0;
            min += a.iter().zip(&b).map(|(x, y)| x.min(*y)).sum::<f64>() / 2.0;
        }
        let l = sum.llama().unwrap();
        assert!((l.ppl_p.0 / nll_p.exp() - 1.0).abs() < 1e-12, "{l:?}");
        assert!((l.ppl_q.0 / nll_q.exp() - 1.0).abs() < 1e-12, "{l:?}");
        let a = sum.agreement.as_ref().unwrap();
        assert!((a.sum_min.mean_unc().0 - min).abs() < 1e-12, "{a:?}");
    }

    /// A target outside the row is a typed error naming its row, which a caller that
    /// computes a file block by block moves to the file's row (it was an untyped message
    /// naming the row within the block).
    #[test]
    fn a_target_outside_the_row_names_its_row_in_the_whole_input() {
        let req = Request::new(Divergence::Kl);
        let (p, q) = ([0.5f64, 0.25, 0.25, 0.2, 0.3, 0.5], [1.0 / 3.0; 6]);
        let mut sum =
            Summary::new(Meta::of(&req, 3, crate::Dtype::F64), true, 0).with_targets(true);
        let e = sum
            .add_block(&req, (&p, &q), 3, &[0.1, 0.2], Some(&[IGNORE, 3]))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadTarget {
                    row: 1,
                    target: 3,
                    cols: 3
                }
            ),
            "{e:?}"
        );
        let moved = crate::semantics::rows::relocate_row_by(e, 4096);
        assert!(
            matches!(moved, Error::BadTarget { row: 4097, .. }),
            "{moved:?}"
        );
        assert!(moved.to_string().contains("row 4097 is 3"), "{moved}");
        assert!(sum
            .add_block(&req, (&p, &q), 3, &[0.1, 0.2], Some(&[IGNORE, 2]))
            .is_ok());
    }

    /// A NaN row (kept by `NanPolicy::Propagate`) is left out of the targets' statistics and
    /// of "same top", as of the divergence's: it made PPL(base) and RMS Δp NaN and counted
    /// as a row whose argmax agrees.
    #[test]
    fn a_nan_row_is_left_out_of_every_statistic() {
        let req = Request::new(Divergence::Kl);
        let mut sum =
            Summary::new(Meta::of(&req, 3, crate::Dtype::F64), true, 0).with_targets(true);
        let t = |nll_p: f64, nll_q: f64| RowTarget::of(-nll_p, -nll_q);
        sum.push_row(0.1, true, Some(t(1.0, 2.0)));
        sum.push_row(f64::NAN, true, Some(t(f64::NAN, 1.0)));
        sum.push_row(0.3, false, Some(t(3.0, 2.0)));
        assert_eq!((sum.rows, sum.scored_rows(), sum.same_top), (3, 2, 1));
        let l = sum.llama().unwrap();
        assert!((l.ppl_p.0 - 2f64.exp()).abs() < 1e-12, "{l:?}");
        assert!((l.ppl_q.0 - 2f64.exp()).abs() < 1e-12, "{l:?}");
        assert!(l.rms_dp.0.is_finite() && l.ppl_diff.0.is_finite(), "{l:?}");
        assert_eq!(l.same_top.0, 0.5);
        let j = report::json(&sum);
        assert_eq!(j["same_top"]["mean"].as_f64(), Some(0.5), "{j}");
    }
}
