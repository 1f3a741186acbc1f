//! The orchestration every engine shares. An engine only runs passes ([`PassEngine`]); this
//! module runs a request's plan on it: the passes, each row's sums through the rules of
//! `finish`, the rows that need another look (re-read rescaled, re-read with their ideal
//! shift, or computed on the exact path), and the order errors are reported in.

use super::exact;
use super::finish::{self, LaneFinish, LaneSums, LogitOutcome};
use super::plan::{
    base_params, rescaled, Kernel, Pass, PassPlan, RowParams, Rows, SharedPass, MAX_SHARED,
};
use super::rows::{located, nan_row, Irregular, RowPair, RowSums, Shape};
use super::sums::{AgreeSums, Partial, RowTops};
use crate::element::{Dtype, Element};
use crate::error::Result;
use crate::request::{Divergence, InputForm, Normalization, Request, Unit};
use std::sync::{Mutex, OnceLock};

/// What an engine does: run one pass over rows and hand each row's sums to a [`Finish`].
pub trait PassEngine: Sync {
    /// Where the engine reads rows from (host slices, GPU buffers).
    type Src<'a, T: Element>: Copy + Send + Sync
    where
        Self: 'a;

    /// Visit the pass's rows; each row's result is `finish.row(row, its sums)`, in the order
    /// the pass visits them. An error is the one of the lowest failing row.
    fn run_pass<T: Element, F: Finish>(
        &self,
        pass: &Pass<'_>,
        src: Self::Src<'_, T>,
        shape: Shape,
        finish: &F,
    ) -> Result<Vec<F::Out>>;

    /// Row `row` of both inputs on the host, for the exact path.
    fn host_row<'a, T: Element>(
        &'a self,
        src: Self::Src<'a, T>,
        shape: Shape,
        row: usize,
    ) -> Result<RowPair<'a, T>>;

    /// Relative error of the sums this engine produces for `dtype` (see
    /// `finish::SUMS_EPS_F32`).
    fn sums_eps(&self, dtype: Dtype) -> f64;
}

/// What becomes of each row's sums in a pass: its result, or the error that stops the job.
pub trait Finish: Sync {
    type Out: Copy + Default + Send + Sync;
    fn row(&self, row: usize, sums: RowSums) -> Result<Self::Out>;
    /// The results of a group of short probability rows straight from the SIMD lanes that
    /// summed them (lane r holds row r; see [`LaneFinish`]), one per slot of `out`; `false`
    /// (the default) sends the group row by row through [`Finish::row`].
    #[inline(always)]
    fn lanes<S: pulp::Simd>(&self, s: S, sums: &LaneSums<S>, out: &mut [Self::Out]) -> bool {
        let _ = (s, sums, out);
        false
    }
}

/// A row's second look, after its first pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FollowUp {
    /// Probability sums far apart under `Normalize`: read again divided by Σp, Σq.
    Rescale { sp: f64, sq: f64 },
    /// Logits whose first-block shift was not good enough: read again with the ideal one.
    Reshift { hi: f64, lo: f64 },
    /// Only the exact f64 path gets this row within the bound.
    Exact,
}

/// Rows put aside during a pass, with what they need.
#[derive(Default)]
struct Later(Mutex<Vec<(usize, FollowUp)>>);

impl Later {
    fn push(&self, row: usize, f: FollowUp) -> Result<f64> {
        if let Ok(mut v) = self.0.lock() {
            v.push((row, f));
        }
        Ok(f64::NAN)
    }
    fn take(self) -> Vec<(usize, FollowUp)> {
        let mut v = self.0.into_inner().unwrap_or_default();
        v.sort_by_key(|f| f.0);
        v
    }
}

/// Each logits row's [`RowTops`], set by whichever thread finishes the row: kept beside the
/// values rather than in each row's output, so that a pass over a million short probability
/// rows writes 8 bytes per row, not 64 (the output is allocated, page by page, on every call).
struct TopsTable(Vec<OnceLock<RowTops>>);

impl TopsTable {
    /// A slot per row where `kernel` reads logits; none otherwise.
    fn new(kernel: Kernel, rows: usize) -> TopsTable {
        let rows = if matches!(kernel, Kernel::Logits(_)) {
            rows
        } else {
            0
        };
        TopsTable((0..rows).map(|_| OnceLock::new()).collect())
    }

    fn keep(&self, row: usize, sums: &RowSums) {
        if let (Some(slot), Some(t)) = (self.0.get(row), tops_of(sums)) {
            // A row is finished once per pass.
            let _ = slot.set(t);
        }
    }

    fn into_vec(self) -> Vec<Option<RowTops>> {
        self.0.into_iter().map(OnceLock::into_inner).collect()
    }
}

// What a pass writes per row for a plain request stays one f64 (see `TopsTable`): 64 bytes
// per row made W2 (a million 16-column rows) 6× slower, in page faults of the output.
const _: () = assert!(std::mem::size_of::<<Values<'static> as Finish>::Out>() == 8);

/// The first (and usually only) pass of a one-pass request: each row's value, or NaN and a
/// follow-up.
struct Values<'a> {
    req: &'a Request,
    tol: Option<f64>,
    eps: f64,
    /// Short rows whose sums can be finished in their lanes (not for `Normalize`).
    lane_finish: Option<LaneFinish>,
    later: Later,
    tops: &'a TopsTable,
}

/// A logits row's [`RowTops`] from its sums (none for rows without them).
fn tops_of(sums: &RowSums) -> Option<RowTops> {
    match sums {
        Ok(Partial::Logits(s)) => s.tops(),
        _ => None,
    }
}

impl Finish for Values<'_> {
    /// The row's value; its tops go to the table, taken from the first pass's sums even for
    /// rows that are re-read (neither the argmax nor the log-sum-exp depends on the shift).
    type Out = f64;
    fn row(&self, row: usize, sums: RowSums) -> Result<Self::Out> {
        self.tops.keep(row, &sums);
        self.value(row, &sums)
    }
    #[inline(always)]
    fn lanes<S: pulp::Simd>(&self, s: S, sums: &LaneSums<S>, out: &mut [Self::Out]) -> bool {
        let Some(v) = self.lane_finish.and_then(|l| l.values(s, sums)) else {
            return false;
        };
        let mut nats = [0f32; 16];
        s.partial_store_f32s(&mut nats, v);
        let clamp = self.req.normalization != Normalization::AsGiven;
        // Nats, the common case, chosen once per group: `finalize`'s division for bits was
        // otherwise computed for every row and then discarded (~5% of W2).
        if self.req.unit == Unit::Nats {
            for (slot, &v) in out.iter_mut().zip(&nats) {
                *slot = finish::clamp_range(self.req, v as f64, clamp);
            }
        } else {
            for (slot, &v) in out.iter_mut().zip(&nats) {
                *slot = finish::finalize(self.req, v as f64, clamp);
            }
        }
        true
    }
}

impl Values<'_> {
    fn value(&self, row: usize, sums: &RowSums) -> Result<f64> {
        let req = self.req;
        let sums = *sums;
        match sums {
            Err(Irregular::Bad(bad)) if nan_row(req, &bad) => Ok(f64::NAN),
            Err(Irregular::Bad(bad)) => Err(located(row, bad)),
            Err(Irregular::Skipped) => Ok(f64::NAN),
            Err(Irregular::NeedsExact) => self.later.push(row, FollowUp::Exact),
            Ok(Partial::Probs(s)) if finish::needs_rescale(req, &s) => self
                .later
                .push(row, FollowUp::Rescale { sp: s.sp, sq: s.sq }),
            Ok(Partial::Probs(s)) => finish::finish_probs(req, &s, self.tol, row),
            Ok(Partial::Logits(s)) => {
                match finish::finish_logits(req, &s, self.tol, row, self.eps, false)? {
                    LogitOutcome::Value(v) => Ok(v),
                    LogitOutcome::Reshift { hi, lo } => {
                        self.later.push(row, FollowUp::Reshift { hi, lo })
                    }
                    LogitOutcome::Exact => self.later.push(row, FollowUp::Exact),
                }
            }
            Ok(Partial::Js(_) | Partial::Agree(_)) => {
                unreachable!("one-pass requests run neither the JS nor the agreement kernel")
            }
        }
    }
}

/// A re-read row (rescaled or reshifted): its value, or `None` for the exact path.
struct Reread<'a> {
    req: &'a Request,
    tol: Option<f64>,
    eps: f64,
}

impl Finish for Reread<'_> {
    type Out = Option<f64>;
    fn row(&self, row: usize, sums: RowSums) -> Result<Option<f64>> {
        let req = self.req;
        match sums {
            Err(Irregular::Bad(bad)) if nan_row(req, &bad) => Ok(Some(f64::NAN)),
            Err(Irregular::Bad(bad)) => Err(located(row, bad)),
            Err(_) => Ok(None),
            Ok(Partial::Probs(s)) if finish::needs_rescale(req, &s) => Ok(None),
            Ok(Partial::Probs(s)) => finish::finish_probs(req, &s, self.tol, row).map(Some),
            Ok(Partial::Logits(s)) => {
                match finish::finish_logits(req, &s, self.tol, row, self.eps, true)? {
                    LogitOutcome::Value(v) => Ok(Some(v)),
                    _ => Ok(None),
                }
            }
            Ok(Partial::Js(_) | Partial::Agree(_)) => {
                unreachable!("re-reads run the first pass's kernel")
            }
        }
    }
}

/// The first pass of a two-pass request: each row's checks, and what the second pass needs
/// of it (`Skip` for rows already decided: NaN, or the exact path).
struct SumsOfRows<'a> {
    req: &'a Request,
    tol: Option<f64>,
    /// The relative error of the engine's sums (`PassEngine::sums_eps`).
    eps: f64,
    exact: Later,
    tops: &'a TopsTable,
}

impl Finish for SumsOfRows<'_> {
    type Out = RowParams;
    fn row(&self, row: usize, sums: RowSums) -> Result<RowParams> {
        let req = self.req;
        self.tops.keep(row, &sums);
        match sums {
            Err(Irregular::Bad(bad)) if nan_row(req, &bad) => Ok(RowParams::Skip),
            Err(Irregular::Bad(bad)) => Err(located(row, bad)),
            Err(Irregular::Skipped) => Ok(RowParams::Skip),
            Err(Irregular::NeedsExact) => {
                self.exact.push(row, FollowUp::Exact)?;
                Ok(RowParams::Skip)
            }
            Ok(Partial::Probs(s)) => {
                finish::check_probs(req, &s, self.tol, row)?;
                Ok(rescaled(req, s.sp, s.sq))
            }
            Ok(Partial::Logits(s)) => {
                finish::check_logits(req, &s, self.tol, row)?;
                Ok(RowParams::Softmax {
                    ma: s.ma,
                    lnsa: s.sa.ln(),
                    mb: s.mb,
                    l: finish::log_sum_ratio(&s, self.eps),
                })
            }
            Ok(Partial::Js(_) | Partial::Agree(_)) => {
                unreachable!("first passes run neither the JS nor the agreement kernel")
            }
        }
    }
}

/// The second pass of a two-pass request: values of the rescaled rows.
struct SecondPass<'a> {
    req: &'a Request,
    /// The request as the second pass sees it: probabilities already normalised.
    second: Request,
    /// The relative error of the engine's sums (`PassEngine::sums_eps`).
    eps: f64,
    later: Later,
}

impl Finish for SecondPass<'_> {
    type Out = f64;
    fn row(&self, row: usize, sums: RowSums) -> Result<f64> {
        match sums {
            Err(Irregular::Skipped) => Ok(f64::NAN),
            Err(Irregular::Bad(bad)) if nan_row(self.req, &bad) => Ok(f64::NAN),
            Err(Irregular::Bad(bad)) => Err(located(row, bad)),
            Err(Irregular::NeedsExact) => self.later.push(row, FollowUp::Exact),
            Ok(Partial::Probs(s)) => finish::finish_probs(&self.second, &s, None, row),
            Ok(Partial::Js(s)) => match finish::finish_js(self.req, &s, self.eps) {
                Some(v) => Ok(v),
                None => self.later.push(row, FollowUp::Exact),
            },
            Ok(Partial::Logits(_) | Partial::Agree(_)) => {
                unreachable!("second passes read probabilities")
            }
        }
    }
}

/// Per-row values of `req` over `src` (before the request's reduction), on `engine`.
pub fn per_row<'a, E: PassEngine, T: Element>(
    engine: &'a E,
    req: &Request,
    src: E::Src<'a, T>,
    shape: Shape,
) -> Result<(Vec<f64>, Vec<Option<RowTops>>)> {
    let req = &req.resolved()?;
    let first_pass = |kernel| Pass {
        base: base_params(req),
        ..Pass::all(kernel)
    };
    let tol = finish::sum_tolerance(req, T::DTYPE);
    let eps = engine.sums_eps(T::DTYPE);
    match PassPlan::of(req) {
        PassPlan::One { kernel } => {
            let tops = TopsTable::new(kernel, shape.rows);
            let values = Values {
                req,
                tol,
                eps,
                lane_finish: LaneFinish::new(req, tol),
                later: Later::default(),
                tops: &tops,
            };
            let mut out = engine.run_pass(&first_pass(kernel), src, shape, &values)?;
            let later = values.later.take();
            follow_up(engine, req, kernel, src, shape, &later, &mut out)?;
            Ok((out, tops.into_vec()))
        }
        PassPlan::Two { first, second } => {
            // Logits: the first pass's maxima and log-sums are the rows' tops too.
            let tops = TopsTable::new(first, shape.rows);
            let sums = SumsOfRows {
                req,
                tol,
                eps,
                exact: Later::default(),
                tops: &tops,
            };
            let params = engine.run_pass(&first_pass(first), src, shape, &sums)?;
            let exact_rows = sums.exact.take();
            let out = second_pass(
                engine,
                req,
                (first, second),
                &params,
                exact_rows,
                src,
                shape,
            )?;
            Ok((out, tops.into_vec()))
        }
    }
}

/// The second pass of a two-pass request, over the rows as its first pass described them
/// (`params`, one per row), then the exact path for `exact_rows` and the rows it leaves.
fn second_pass<'a, E: PassEngine, T: Element>(
    engine: &'a E,
    req: &Request,
    (first, second): (Kernel, Kernel),
    params: &[RowParams],
    mut exact_rows: Vec<(usize, FollowUp)>,
    src: E::Src<'a, T>,
    shape: Shape,
) -> Result<Vec<f64>> {
    let pass = Pass {
        kernel: second,
        rows: Rows::All,
        params,
        base: RowParams::None,
    };
    let second = SecondPass {
        req,
        second: Request {
            input: InputForm::Probabilities,
            normalization: Normalization::Normalize,
            ..*req
        },
        eps: engine.sums_eps(T::DTYPE),
        later: Later::default(),
    };
    let mut out = engine.run_pass(&pass, src, shape, &second)?;
    exact_rows.extend(second.later.take());
    exact_rows.sort_by_key(|f| f.0);
    // Second passes leave only exact rows behind (`first` is never re-run).
    follow_up(engine, req, first, src, shape, &exact_rows, &mut out)?;
    Ok(out)
}

/// Per-row values of `req` with each of `divs` as its divergence, over the same rows, in
/// the order given. Divergences of the KL family (see [`SharedPass`]) share one pass of
/// symmetric KL's kernel, each finishing its rows from those sums (and following up its own
/// rows); a two-pass Jensen–Shannon takes its first pass (each row's sums, or maxima and
/// log-sums) from the same pass. The others run their own plans. Every divergence must read
/// Q (entropy runs alone: `Divergence::check_list`).
pub fn per_row_set<'a, E: PassEngine, T: Element>(
    engine: &'a E,
    req: &Request,
    divs: &[Divergence],
    src: E::Src<'a, T>,
    shape: Shape,
) -> Result<PerRow> {
    let with = |div| Request {
        divergence: div,
        ..*req
    };
    if divs.iter().any(|&d| !with(d).reads_q()) && divs.len() > 1 {
        return Err(crate::Error::InvalidRequest(
            "entropy reads P alone and runs on its own".into(),
        ));
    }
    let mut out = PerRow {
        values: vec![vec![]; divs.len()],
        tops: vec![],
    };
    let shared = SharedPass::of(req, divs);
    if let Some(sp) = &shared {
        let members: Vec<Request> = sp.members.iter().map(|&k| with(divs[k])).collect();
        let family = kl_family(engine, &members, sp.js.map(|k| with(divs[k])), src, shape)?;
        for (k, v) in sp.members.iter().chain(&sp.js).zip(family.values) {
            out.values[*k] = v;
        }
        out.tops = family.tops;
    }
    for (k, &div) in divs.iter().enumerate() {
        if !shared.as_ref().is_some_and(|sp| sp.covers(k)) {
            let (values, tops) = per_row(engine, &with(div), src, shape)?;
            out.values[k] = values;
            if out.tops.is_empty() {
                out.tops = tops;
            }
        }
    }
    Ok(out)
}

/// Each row's agreement sums over logits (Σ min(p, q) and each side's largest values), from a
/// pass after the one that gave the rows' `tops` (one per row): rows are read as
/// probabilities through their maxima and log-sums (`RowTops::softmax`). `None` for rows
/// without tops and rows the engine could not handle (values it does not take): the caller
/// computes those in f64 (`summary::agreement::row`).
pub fn agreement<'a, E: PassEngine, T: Element>(
    engine: &'a E,
    src: E::Src<'a, T>,
    shape: Shape,
    tops: &[Option<RowTops>],
) -> Result<Vec<Option<AgreeSums>>> {
    let params: Vec<RowParams> = tops
        .iter()
        .map(|t| t.map_or(RowParams::Skip, |t| t.softmax()))
        .collect();
    let pass = Pass {
        kernel: Kernel::LogitsAgree,
        rows: Rows::All,
        params: &params,
        base: RowParams::Skip,
    };
    engine.run_pass(&pass, src, shape, &AgreeRows)
}

struct AgreeRows;

impl Finish for AgreeRows {
    type Out = Option<AgreeSums>;
    fn row(&self, _: usize, sums: RowSums) -> Result<Self::Out> {
        Ok(match sums {
            Ok(Partial::Agree(s)) => Some(s),
            _ => None,
        })
    }
}

/// Per-row results of one or several divergences over the same rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerRow {
    /// One vector per divergence asked for (in that order), one value per row.
    pub values: Vec<Vec<f64>>,
    /// Each row's [`RowTops`] from the first logits pass that read it: empty where no pass
    /// over logits ran, `None` for rows whose sums the engine did not hand over (bad values,
    /// rows the exact path computed from scratch).
    pub tops: Vec<Option<RowTops>>,
}

/// The members of the KL family (1 to 3 requests differing only in their divergence) from
/// one pass of symmetric KL's kernel, in order, then Jensen–Shannon's values when `js` is
/// given, its first pass taken from the same sums; and the rows' tops.
fn kl_family<'a, E: PassEngine, T: Element>(
    engine: &'a E,
    members: &[Request],
    js: Option<Request>,
    src: E::Src<'a, T>,
    shape: Shape,
) -> Result<PerRow> {
    let reqs = members
        .iter()
        .map(|r| r.resolved())
        .collect::<Result<Vec<_>>>()?;
    let js = js.map(|r| r.resolved()).transpose()?;
    let tol = finish::sum_tolerance(&reqs[0], T::DTYPE);
    let eps = engine.sums_eps(T::DTYPE);
    let shared = Request {
        divergence: Divergence::SymmetricKl,
        ..reqs[0]
    };
    let PassPlan::One { kernel } = PassPlan::of(&shared) else {
        unreachable!("symmetric KL is one pass")
    };
    // The family keeps the tops once; its members none.
    let (tops, no_tops) = (TopsTable::new(kernel, shape.rows), TopsTable(vec![]));
    let family = Family {
        members: reqs
            .iter()
            .map(|req| Values {
                req,
                tol,
                eps,
                lane_finish: LaneFinish::new(req, tol),
                later: Later::default(),
                tops: &no_tops,
            })
            .collect(),
        js: js.as_ref().map(|req| SumsOfRows {
            req,
            tol,
            eps,
            exact: Later::default(),
            // (The family keeps them.)
            tops: &no_tops,
        }),
        tops: &tops,
    };
    let pass = Pass {
        base: base_params(&shared),
        ..Pass::all(kernel)
    };
    let rows = engine.run_pass(&pass, src, shape, &family)?;
    let mut out = vec![];
    for (k, member) in family.members.into_iter().enumerate() {
        let mut values: Vec<f64> = rows.iter().map(|r| r.0[k]).collect();
        let later = member.later.take();
        let own = match kernel {
            Kernel::Probs(_) => Kernel::Probs(member.req.divergence),
            _ => Kernel::Logits(member.req.divergence),
        };
        follow_up(engine, member.req, own, src, shape, &later, &mut values)?;
        out.push(values);
    }
    if let (Some(req), Some(first_sums)) = (js.as_ref(), family.js) {
        let PassPlan::Two { first, second } = PassPlan::of(req) else {
            unreachable!("only a two-pass Jensen–Shannon shares the first pass")
        };
        let params: Vec<RowParams> = rows.iter().map(|r| r.1).collect();
        let exact_rows = first_sums.exact.take();
        out.push(second_pass(
            engine,
            req,
            (first, second),
            &params,
            exact_rows,
            src,
            shape,
        )?);
    }
    Ok(PerRow {
        values: out,
        tops: tops.into_vec(),
    })
}

/// Each member's first-pass [`Values`] from the same sums, what a Jensen–Shannon second
/// pass needs of each row, and the row's tops (once for all members).
struct Family<'a> {
    members: Vec<Values<'a>>,
    js: Option<SumsOfRows<'a>>,
    tops: &'a TopsTable,
}

impl Finish for Family<'_> {
    type Out = ([f64; MAX_SHARED], RowParams);
    fn row(&self, row: usize, sums: RowSums) -> Result<Self::Out> {
        self.tops.keep(row, &sums);
        let mut out = ([f64::NAN; MAX_SHARED], RowParams::Skip);
        for (slot, m) in out.0.iter_mut().zip(&self.members) {
            *slot = m.value(row, &sums.map(|p| p.as_kl_member(m.req.divergence)))?;
        }
        if let Some(js) = &self.js {
            out.1 = js.row(row, sums)?;
        }
        Ok(out)
    }
    #[inline(always)]
    fn lanes<S: pulp::Simd>(&self, s: S, sums: &LaneSums<S>, out: &mut [Self::Out]) -> bool {
        if self.js.is_some() {
            return false;
        }
        let mut each = [[0f64; 16]; MAX_SHARED];
        for (k, m) in self.members.iter().enumerate() {
            let own = sums.as_kl_member(m.req.divergence);
            if !m.lanes(s, &own, &mut each[k][..out.len()]) {
                return false;
            }
        }
        for (i, slot) in out.iter_mut().enumerate() {
            for (k, v) in slot.0.iter_mut().enumerate() {
                *v = each[k][i];
            }
        }
        true
    }
}

/// The follow-ups of a pass: re-reads on the engine (one pass per kind, over the rows that
/// need it), then the exact path for what is left. Errors come in row order.
fn follow_up<'a, E: PassEngine, T: Element>(
    engine: &'a E,
    req: &Request,
    kernel: Kernel,
    src: E::Src<'a, T>,
    shape: Shape,
    later: &[(usize, FollowUp)],
    out: &mut [f64],
) -> Result<()> {
    if later.is_empty() {
        return Ok(());
    }
    let tol = finish::sum_tolerance(req, T::DTYPE);
    let reread = Reread {
        req,
        tol,
        eps: engine.sums_eps(T::DTYPE),
    };
    let mut exact_rows = vec![];
    for kind in [0, 1] {
        let (rows, params): (Vec<usize>, Vec<RowParams>) = later
            .iter()
            .filter_map(|&(r, f)| match (kind, f) {
                (0, FollowUp::Rescale { sp, sq }) => Some((r, rescaled(req, sp, sq))),
                (1, FollowUp::Reshift { hi, lo }) => Some((r, RowParams::Shift { hi, lo })),
                _ => None,
            })
            .unzip();
        if rows.is_empty() {
            continue;
        }
        let pass = Pass {
            kernel,
            rows: Rows::Listed(&rows),
            params: &params,
            base: RowParams::None,
        };
        let values = engine.run_pass(&pass, src, shape, &reread)?;
        for (&r, v) in rows.iter().zip(values) {
            match v {
                Some(v) => out[r] = v,
                None => exact_rows.push(r),
            }
        }
    }
    exact_rows.extend(later.iter().filter(|f| f.1 == FollowUp::Exact).map(|f| f.0));
    exact_rows.sort_unstable();
    for r in exact_rows {
        let (p, q) = engine.host_row(src, shape, r)?;
        out[r] = exact_row(req, &p, &q, r)?;
    }
    Ok(())
}

/// One row of `req` (resolved by `per_row`), entirely on the exact f64 path: what every
/// follow-up ends in.
fn exact_row<T: Element>(req: &Request, p: &[T], q: &[T], row: usize) -> Result<f64> {
    let tol = finish::sum_tolerance(req, T::DTYPE);
    let q = if req.reads_q() { q } else { p };
    let seg = |kernel, params| exact::segment(kernel, params, p, q);
    let sums = |kernel, params| -> Result<std::result::Result<Partial, f64>> {
        match seg(kernel, params) {
            Ok(s) => Ok(Ok(s)),
            Err(bad) if nan_row(req, &bad) => Ok(Err(f64::NAN)),
            Err(bad) => Err(located(row, bad)),
        }
    };
    match PassPlan::of(req) {
        PassPlan::One { kernel } => match sums(kernel, base_params(req))? {
            Err(nan) => Ok(nan),
            Ok(Partial::Probs(s)) if finish::needs_rescale(req, &s) => {
                match sums(kernel, rescaled(req, s.sp, s.sq))? {
                    Ok(Partial::Probs(s)) => finish::finish_probs(req, &s, tol, row),
                    Ok(_) => unreachable!("probability kernels give probability sums"),
                    Err(nan) => Ok(nan),
                }
            }
            Ok(Partial::Probs(s)) => finish::finish_probs(req, &s, tol, row),
            Ok(Partial::Logits(s)) => {
                match finish::finish_logits(req, &s, tol, row, finish::SUMS_EPS_F64, true)? {
                    LogitOutcome::Value(v) => Ok(v),
                    // Unreachable with f64 sums; NaN rather than a loop.
                    _ => Ok(f64::NAN),
                }
            }
            Ok(Partial::Js(_) | Partial::Agree(_)) => {
                unreachable!("one-pass requests run neither the JS nor the agreement kernel")
            }
        },
        PassPlan::Two { first, second } => {
            let sums_of = SumsOfRows {
                req,
                tol,
                eps: finish::SUMS_EPS_F64,
                exact: Later::default(),
                tops: &TopsTable(vec![]),
            };
            let params = sums_of.row(row, seg(first, base_params(req)).map_err(Irregular::Bad))?;
            if params == RowParams::Skip {
                return Ok(f64::NAN);
            }
            let values = SecondPass {
                req,
                second: Request {
                    input: InputForm::Probabilities,
                    normalization: Normalization::Normalize,
                    ..*req
                },
                eps: finish::SUMS_EPS_F64,
                later: Later::default(),
            };
            // Exact sums carry no rounding bound: the value is taken.
            values.row(row, seg(second, params).map_err(Irregular::Bad))
        }
    }
}
