//! What a request takes: which passes over the data, with which kernel and per-row data.
//! Pure planning: no engine, no data. The orchestration in `run` follows it, and the
//! scheduler costs it.

use crate::request::{Divergence, InputForm, Normalization, Request};

/// Which sums a pass collects (see `sums`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Probability rows: the divergence's t-terms, Σp, Σq, Σ(p − q).
    Probs(Divergence),
    /// Logits or log-probabilities: log-sum-exp sums and the ψ terms.
    Logits(Divergence),
    /// Jensen–Shannon over logits whose maxima and log-sums are known (`RowParams::Softmax`),
    /// in the log domain.
    LogitsJs,
    /// The agreement statistics over logits whose maxima and log-sums are known
    /// (`RowParams::Softmax`): Σ min(p, q) and each side's largest values (`sums::AgreeSums`).
    LogitsAgree,
}

/// Per-row data a pass reads besides the inputs. It stays f64 on the host; engines round it
/// as late as they can.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RowParams {
    /// Nothing: the row as it is (logits take their shift from their first block).
    #[default]
    None,
    /// Probabilities read as (x + add)·p and (y + add)·q: a pseudocount, then 1 / the row
    /// sums. `add` only touches values ≥ 0, so negatives and NaN are still reported.
    Affine { add: f64, p: f64, q: f64 },
    /// The row's maxima, ln of P's sum relative to its maximum, and l = ln sb − ln sa:
    /// probabilities are e^((a − ma) − ln sa) and e^((b − mb) − (ln sa + l)). l is given
    /// apart because ln p − ln q = (a − b − (ma − mb)) + l needs it to the digits of a
    /// near-identical row's log-ratios, which the difference of two log-sums does not keep
    /// (`finish::log_sum_ratio`).
    Softmax { ma: f64, lnsa: f64, mb: f64, l: f64 },
    /// The logits shift c = hi + lo.
    Shift { hi: f64, lo: f64 },
    /// Do not read this row (its value is already decided).
    Skip,
}

/// The rows a pass visits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rows<'a> {
    All,
    /// These rows, in increasing order.
    Listed(&'a [usize]),
}

/// One pass over the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pass<'a> {
    pub kernel: Kernel,
    pub rows: Rows<'a>,
    /// One entry per visited row (in the order visited), or empty for `base`.
    pub params: &'a [RowParams],
    /// Parameters of rows without an entry in `params`.
    pub base: RowParams,
}

impl<'a> Pass<'a> {
    pub fn all(kernel: Kernel) -> Self {
        Pass {
            kernel,
            rows: Rows::All,
            params: &[],
            base: RowParams::None,
        }
    }

    /// Whether rows carry parameters (else every row is read as it is).
    pub fn has_row_data(&self) -> bool {
        !self.params.is_empty() || self.base != RowParams::None
    }

    /// Rows visited, for `total` rows in the job.
    pub fn len(&self, total: usize) -> usize {
        match self.rows {
            Rows::All => total,
            Rows::Listed(r) => r.len(),
        }
    }

    /// The `i`-th visited row's index in the job.
    #[inline]
    pub fn row(&self, i: usize) -> usize {
        match self.rows {
            Rows::All => i,
            Rows::Listed(r) => r[i],
        }
    }

    /// The `i`-th visited row's parameters.
    #[inline]
    pub fn params(&self, i: usize) -> RowParams {
        self.params.get(i).copied().unwrap_or(self.base)
    }
}

/// What a probability row is read as before its sums are known: with the request's
/// pseudocount added, if any.
pub fn base_params(req: &Request) -> RowParams {
    if req.pseudocount > 0.0 && req.input == InputForm::Probabilities {
        RowParams::Affine {
            add: req.pseudocount,
            p: 1.0,
            q: 1.0,
        }
    } else {
        RowParams::None
    }
}

/// A probability row divided by its sums `sp`, `sq` (which include the pseudocount).
pub fn rescaled(req: &Request, sp: f64, sq: f64) -> RowParams {
    RowParams::Affine {
        add: req.pseudocount,
        p: 1.0 / sp,
        q: 1.0 / sq,
    }
}

/// The passes of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassPlan {
    /// One pass over every row; some rows may then be read again (see `run::FollowUp`):
    /// rescaled (probabilities under `Normalize` whose sums are far apart), with their ideal
    /// shift (logits whose first-block shift was poor), or on the exact f64 path.
    One { kernel: Kernel },
    /// Jensen–Shannon needs normalised distributions inside its logarithms: a first pass for
    /// each row's sums (or maxima and log-sums), a second over the rows divided by them.
    Two { first: Kernel, second: Kernel },
}

impl PassPlan {
    pub fn of(req: &Request) -> PassPlan {
        let probs = req.input == InputForm::Probabilities;
        match (req.divergence, probs) {
            // KL's first pass: its ψ sums give the second pass ln sb − ln sa to the digits of
            // a near-identical row's log-ratios (`finish::log_sum_ratio`).
            (Divergence::JensenShannon, false) => PassPlan::Two {
                first: Kernel::Logits(Divergence::Kl),
                second: Kernel::LogitsJs,
            },
            (Divergence::JensenShannon, true) if req.normalization == Normalization::Normalize => {
                PassPlan::Two {
                    first: Kernel::Probs(Divergence::Kl),
                    second: Kernel::Probs(Divergence::JensenShannon),
                }
            }
            (div, true) => PassPlan::One {
                kernel: Kernel::Probs(div),
            },
            (div, false) => PassPlan::One {
                kernel: Kernel::Logits(div),
            },
        }
    }

    /// Full reads of the data the plan makes (re-reads of single rows aside).
    pub fn reads(&self) -> usize {
        match self {
            PassPlan::One { .. } => 1,
            PassPlan::Two { .. } => 2,
        }
    }
}

/// Most divergences one shared pass finishes: KL, reverse KL, symmetric KL.
pub const MAX_SHARED: usize = 3;

/// Several divergences over the same rows (`--divergence kl,reverse-kl,js`): which of them
/// one pass of symmetric KL's kernel serves. Its sums hold both directions' terms, so KL,
/// reverse KL and symmetric KL are each finished from them, and a two-pass Jensen–Shannon
/// takes its first pass (each row's sums, or maxima and log-sums) from them too. The others
/// run their own plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPass {
    /// Indices (into the divergences given) of the KL family, in order.
    pub members: Vec<usize>,
    /// The index of a two-pass Jensen–Shannon, whose first pass is shared.
    pub js: Option<usize>,
}

impl SharedPass {
    /// `None` where sharing saves no pass (fewer than two plans would use it).
    pub fn of(req: &Request, divs: &[Divergence]) -> Option<SharedPass> {
        let members: Vec<usize> = (0..divs.len())
            .filter(|&k| {
                matches!(
                    divs[k],
                    Divergence::Kl | Divergence::ReverseKl | Divergence::SymmetricKl
                )
            })
            .take(MAX_SHARED)
            .collect();
        let js = divs.iter().position(|&d| {
            let js = Request {
                divergence: d,
                ..*req
            };
            d == Divergence::JensenShannon && PassPlan::of(&js).reads() == 2
        });
        let saves = members.len() + js.is_some() as usize > 1 && !members.is_empty();
        saves.then_some(SharedPass { members, js })
    }

    /// Whether the divergence at index `k` is served by the shared pass.
    pub fn covers(&self, k: usize) -> bool {
        self.members.contains(&k) || self.js == Some(k)
    }

    /// Full reads of the data for all of `divs`, with this sharing or without.
    pub fn reads(req: &Request, divs: &[Divergence]) -> usize {
        let alone = |k: usize| {
            PassPlan::of(&Request {
                divergence: divs[k],
                ..*req
            })
            .reads()
        };
        match SharedPass::of(req, divs) {
            None => (0..divs.len()).map(alone).sum(),
            Some(sp) => {
                1 + sp.js.map_or(0, |_| 1)
                    + (0..divs.len())
                        .filter(|&k| !sp.covers(k))
                        .map(alone)
                        .sum::<usize>()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_request() {
        let js = Request::new(Divergence::JensenShannon);
        assert_eq!(
            PassPlan::of(&js),
            PassPlan::One {
                kernel: Kernel::Probs(Divergence::JensenShannon)
            }
        );
        assert_eq!(
            PassPlan::of(&js.normalization(Normalization::Normalize)).reads(),
            2
        );
        assert_eq!(
            PassPlan::of(&js.input(InputForm::Logits)),
            PassPlan::Two {
                first: Kernel::Logits(Divergence::Kl),
                second: Kernel::LogitsJs
            }
        );
        let kl = Request::new(Divergence::Kl).input(InputForm::LogProbabilities);
        assert_eq!(
            PassPlan::of(&kl),
            PassPlan::One {
                kernel: Kernel::Logits(Divergence::Kl)
            }
        );
        let listed = [3, 7];
        let p = Pass {
            kernel: Kernel::LogitsJs,
            rows: Rows::Listed(&listed),
            params: &[RowParams::Skip],
            base: RowParams::None,
        };
        assert_eq!((p.len(10), p.row(1)), (2, 7));
        assert_eq!(
            (p.params(0), p.params(1)),
            (RowParams::Skip, RowParams::None)
        );
    }

    #[test]
    fn the_kl_family_and_js_first_pass_share_one_read() {
        use Divergence::*;
        let logits = Request::new(Kl).input(InputForm::Logits);
        let probs = Request::new(Kl);
        let norm = probs.normalization(Normalization::Normalize);
        // (request, divergences, shared members, shared JS, reads in all)
        type Case<'a> = (Request, &'a [Divergence], &'a [usize], Option<usize>, usize);
        let cases: [Case; 8] = [
            (logits, &[Kl], &[], None, 1),
            (logits, &[Kl, ReverseKl], &[0, 1], None, 1),
            (logits, &[Kl, ReverseKl, JensenShannon], &[0, 1], Some(2), 2),
            (logits, &[JensenShannon, SymmetricKl], &[1], Some(0), 2),
            (logits, &[CrossEntropy, ReverseKl, Kl], &[1, 2], None, 2),
            (logits, &[JensenShannon, CrossEntropy], &[], None, 3),
            // JS over probabilities as given is one pass of its own kernel: nothing shared.
            (probs, &[Kl, JensenShannon], &[], None, 2),
            (norm, &[Kl, JensenShannon], &[0], Some(1), 2),
        ];
        for (req, divs, members, js, reads) in cases {
            let got = SharedPass::of(&req, divs);
            match got {
                Some(ref sp) => assert_eq!((&sp.members[..], sp.js), (members, js), "{divs:?}"),
                None => assert!(members.is_empty() && js.is_none(), "{divs:?}"),
            }
            assert_eq!(SharedPass::reads(&req, divs), reads, "{divs:?} {req:?}");
        }
    }
}
