//! Per-row partial sums and how two of them merge.
//!
//! Every engine reduces a row (or a piece of one) to one of these small records, in its own
//! precision; `finish` turns them into the row's value, once, on the host.

/// Partial sums over (a piece of) a probability row.
///
/// `main` holds the divergence's own term summed over the row: Σ t(p,q) for KL where
/// t(x,y) = x·ln(x/y) − x + y ≥ 0, Σ t(q,p) for reverse KL, Σ t(p,m)+t(q,m) for
/// Jensen–Shannon, Σ p·ln q for cross-entropy, Σ p·ln p for entropy. Symmetric KL keeps
/// Σ t(q,p) in `main2`. The non-negative t-terms keep every digit when p ≈ q; the linear
/// parts they leave out are exactly Σ(p − q), kept in `diff`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProbSums {
    pub main: f64,
    pub main2: f64,
    pub sp: f64,
    pub sq: f64,
    pub diff: f64,
}

impl ProbSums {
    pub fn merge(&mut self, o: &ProbSums) {
        self.main += o.main;
        self.main2 += o.main2;
        self.sp += o.sp;
        self.sq += o.sq;
        self.diff += o.diff;
    }
}

/// Partial sums over (a piece of) a row of logits a (for P) and b (for Q).
///
/// Weights are taken relative to the piece's maxima: wa = e^(a−ma), wb = e^(b−mb), so
/// sa = Σ wa and sb = Σ wb never overflow. The row has one shift c, kept as the pair
/// `shift_hi + shift_lo` exactly as the kernel used it; with x = a − b − c:
///
/// ```text
/// KL(P‖Q) = E_p[x] + L with L = ln E_p[e^−x] = (c − (ma − mb)) + ln(sb/sa)   (plain form)
///         = ln(1+X) − X + E_p[ψ(x)] with X = E_p[ψ(x)] − E_p[x]               (ψ form)
/// ```
///
/// where ψ(x) = e^−x − 1 + x ≥ 0 and 1 + X = E_p[e^−x]. The ψ form keeps every digit when
/// X ≈ 0, which the ideal shift c* = lse_a − lse_b gives exactly (the engines take c from
/// the row's first block, and re-read rows where that was not good enough); the plain form is
/// better when P and Q differ a lot. [`finish_logits`](super::finish::finish_logits) takes the form with the smaller error
/// estimate, from `ax_*` (Σ w·|x|) and `xerr_*` (a bound on the rounding of x itself, which
/// only the GPU has: the CPU forms x exactly by TwoSum; the CPU's f32 kernel adds what its ψ
/// terms lose to underflow). Cross-entropy and entropy need no
/// shift: H(P,Q) = ln sb − E_p[b − mb] and H(P) = ln sa − E_p[a − ma] add two non-negative
/// terms. `q_zero` counts entries with a finite and b = −inf (q = 0 < p), `p_zero` the
/// reverse.
///
/// A piece where one side has no finite value measures that side from the other's maximum
/// and the shift (so that the ψ terms it carries stay finite); its sums are 0 and it never
/// sets the row's maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitSums {
    pub ma: f64,
    pub mb: f64,
    pub sa: f64,
    pub sb: f64,
    /// Σ wa·(a − ma) ≤ 0.
    pub ea: f64,
    /// Σ wa·(b − mb) ≤ 0 over entries where both are finite.
    pub eb: f64,
    /// Σ wa·x and Σ wb·x.
    pub xa: f64,
    pub xb: f64,
    /// Σ wa·|x| and Σ wb·|x|.
    pub ax_a: f64,
    pub ax_b: f64,
    /// Σ wa·ψ(x) and Σ wb·ψ(−x); NaN when they could not be formed (the ψ form is then
    /// unavailable for the row).
    pub psi_a: f64,
    pub psi_b: f64,
    /// Σ wa·δ and Σ wb·δ, δ a bound on the rounding error of x (0 where x is exact), plus
    /// what f32 ψ terms lose to underflow (`finish::F32_TERM_FLOOR`).
    pub xerr_a: f64,
    pub xerr_b: f64,
    /// The row's shift c = shift_hi + shift_lo.
    pub shift_hi: f64,
    pub shift_lo: f64,
    pub q_zero: u64,
    pub p_zero: u64,
    /// The column of each side's first maximum in the row ([`NO_TOP`] where the side has no
    /// finite value): the argmax the reports need ("same top"), from the same read.
    pub top_a: u64,
    pub top_b: u64,
}

/// `LogitSums::top_*` of a side without a finite value.
pub const NO_TOP: u64 = u64::MAX;

/// What a logits row's sums give besides its value, from the same read: each side's first
/// argmax and its log-sum-exp (ln p_i = x_i − lse), for the reports' "same top" and the
/// targets' log-probabilities. From f32 sums the log-sum-exp is within 2e-6 (the sums'
/// relative error, `finish::SUMS_EPS_F32`, with margin).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RowTops {
    pub top_a: u64,
    pub top_b: u64,
    pub lse_a: f64,
    pub lse_b: f64,
    /// Each side's maximum (the value at `top_*`).
    pub max_a: f64,
    pub max_b: f64,
}

impl RowTops {
    /// The row read as probabilities, e^((a − ma) − ln sa), for a pass after this one.
    pub fn softmax(&self) -> super::plan::RowParams {
        super::plan::RowParams::Softmax {
            ma: self.max_a,
            lnsa: self.lse_a - self.max_a,
            mb: self.max_b,
            l: (self.lse_b - self.max_b) - (self.lse_a - self.max_a),
        }
    }
}

impl Default for LogitSums {
    fn default() -> Self {
        LogitSums {
            ma: f64::NEG_INFINITY,
            mb: f64::NEG_INFINITY,
            sa: 0.0,
            sb: 0.0,
            ea: 0.0,
            eb: 0.0,
            xa: 0.0,
            xb: 0.0,
            ax_a: 0.0,
            ax_b: 0.0,
            psi_a: 0.0,
            psi_b: 0.0,
            xerr_a: 0.0,
            xerr_b: 0.0,
            shift_hi: 0.0,
            shift_lo: 0.0,
            q_zero: 0,
            p_zero: 0,
            top_a: NO_TOP,
            top_b: NO_TOP,
        }
    }
}

/// The first maximum of two pieces' (maximum, its column): the larger maximum, the lower
/// column on a tie.
#[inline]
fn first_top(m1: f64, t1: u64, m2: f64, t2: u64) -> u64 {
    match (t1 != NO_TOP, t2 != NO_TOP) {
        (true, false) => t1,
        (false, true) => t2,
        (false, false) => NO_TOP,
        (true, true) if m1 > m2 => t1,
        (true, true) if m2 > m1 => t2,
        (true, true) => t1.min(t2),
    }
}

/// a + b as an unevaluated pair (hi, lo) with hi + lo exact (Knuth's TwoSum).
#[inline]
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// The shift c = (ma − mb) + extra as a pair, ma − mb exact: what logsumexp-style shifts
/// look like (`extra` = ln(sa/sb), or 0 for a shift by the maxima alone).
pub fn shift_from(ma: f64, mb: f64, extra: f64) -> (f64, f64) {
    if !(ma.is_finite() && mb.is_finite()) {
        return (0.0, 0.0);
    }
    let (hi, lo) = two_sum(ma, -mb);
    let (hi, lo2) = two_sum(hi, extra);
    (hi, lo + lo2)
}

/// `v·k` with 0·k = 0 for any k (a side without mass scaled by an infinite factor).
#[inline]
fn scaled(v: f64, k: f64) -> f64 {
    if v == 0.0 {
        0.0
    } else {
        v * k
    }
}

impl LogitSums {
    /// Empty sums of a row whose shift is `hi + lo`.
    pub fn with_shift(hi: f64, lo: f64) -> Self {
        LogitSums {
            shift_hi: hi,
            shift_lo: lo,
            ..LogitSums::default()
        }
    }

    /// Online log-sum-exp merge: rescale both sides to the larger maximum of the pieces
    /// that have mass there. Both pieces belong to one row (same shift).
    pub fn merge(&mut self, o: &LogitSums) {
        if self.ma == f64::NEG_INFINITY && self.mb == f64::NEG_INFINITY {
            // An empty start takes the row's shift from its first piece.
            self.shift_hi = o.shift_hi;
            self.shift_lo = o.shift_lo;
        }
        let top = |m1: f64, s1: f64, m2: f64, s2: f64| match (s1 > 0.0, s2 > 0.0) {
            (true, false) => m1,
            (false, true) => m2,
            _ => m1.max(m2),
        };
        let ma = top(self.ma, self.sa, o.ma, o.sa);
        let mb = top(self.mb, self.sb, o.mb, o.sb);
        self.top_a = first_top(self.ma, self.top_a, o.ma, o.top_a);
        self.top_b = first_top(self.mb, self.top_b, o.mb, o.top_b);
        // e^0 = 1 exactly: the side that holds the maximum needs no exponential (one of the
        // two in every merge; the merges of 512-element blocks are ~3% of the logits kernel).
        let k = |m: f64, m_new: f64| {
            if m == f64::NEG_INFINITY {
                0.0
            } else if m == m_new {
                1.0
            } else {
                (m - m_new).exp()
            }
        };
        // Sums of w·(v − m) move with the maximum: Σ w'(v − m') = k·(Σ w(v − m) + (m − m')·Σ w).
        let moved = |e: f64, m: f64, m_new: f64, s: f64| {
            if s == 0.0 {
                e
            } else {
                e + (m - m_new) * s
            }
        };
        let (x, y) = (k(self.ma, ma), k(o.ma, ma));
        self.ea = scaled(moved(self.ea, self.ma, ma, self.sa), x)
            + scaled(moved(o.ea, o.ma, ma, o.sa), y);
        self.eb = scaled(moved(self.eb, self.mb, mb, self.sa), x)
            + scaled(moved(o.eb, o.mb, mb, o.sa), y);
        self.sa = scaled(self.sa, x) + scaled(o.sa, y);
        self.xa = scaled(self.xa, x) + scaled(o.xa, y);
        self.ax_a = scaled(self.ax_a, x) + scaled(o.ax_a, y);
        self.psi_a = scaled(self.psi_a, x) + scaled(o.psi_a, y);
        self.xerr_a = scaled(self.xerr_a, x) + scaled(o.xerr_a, y);
        let (x, y) = (k(self.mb, mb), k(o.mb, mb));
        self.sb = scaled(self.sb, x) + scaled(o.sb, y);
        self.xb = scaled(self.xb, x) + scaled(o.xb, y);
        self.ax_b = scaled(self.ax_b, x) + scaled(o.ax_b, y);
        self.psi_b = scaled(self.psi_b, x) + scaled(o.psi_b, y);
        self.xerr_b = scaled(self.xerr_b, x) + scaled(o.xerr_b, y);
        self.ma = ma;
        self.mb = mb;
        self.q_zero += o.q_zero;
        self.p_zero += o.p_zero;
    }
    /// Places these sums `by` columns later in the row (a block or piece of it).
    pub fn offset_tops(&mut self, by: usize) {
        for t in [&mut self.top_a, &mut self.top_b] {
            if *t != NO_TOP {
                *t += by as u64;
            }
        }
    }

    /// Each side's maximum where its first maximum is located (−inf for a side without
    /// one): what a later block must exceed to hold the row's first maximum.
    pub fn located_maxima(&self) -> (f64, f64) {
        let so_far = |m: f64, top| if top == NO_TOP { f64::NEG_INFINITY } else { m };
        (so_far(self.ma, self.top_a), so_far(self.mb, self.top_b))
    }

    /// The row's [`RowTops`], where both sides have a finite value.
    pub fn tops(&self) -> Option<RowTops> {
        (self.top_a != NO_TOP && self.top_b != NO_TOP).then(|| RowTops {
            top_a: self.top_a,
            top_b: self.top_b,
            lse_a: self.lse_a(),
            lse_b: self.lse_b(),
            max_a: self.ma,
            max_b: self.mb,
        })
    }

    /// ln Σ e^a (the log-sum-exp of P's row).
    pub fn lse_a(&self) -> f64 {
        self.ma + self.sa.ln()
    }
    pub fn lse_b(&self) -> f64 {
        self.mb + self.sb.ln()
    }
    /// c − (ma − mb), the log of the factor that turns e^(b−mb) into e^(a−ma)·e^(−x).
    pub fn shift_gap(&self) -> f64 {
        let (h1, l1) = two_sum(self.shift_hi, -self.ma);
        let (h2, l2) = two_sum(h1, self.mb);
        h2 + (l2 + l1 + self.shift_lo)
    }
    /// The ideal shift c* = lse_a − lse_b of the row these sums describe (X = 0 with it).
    pub fn ideal_shift(&self) -> (f64, f64) {
        shift_from(self.ma, self.mb, (self.sa / self.sb).ln())
    }
}

/// Sums of the second Jensen–Shannon pass over logits (see `exact::logit_js_segment`):
/// `h` = Σ m·F(ln p − ln q), and Σp, Σq. `err` bounds what rounding the engine could not
/// avoid cost `h` (the GPU's f32 u; f32 terms lost to underflow, on both; 0 on the exact
/// path).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JsSums {
    pub h: f64,
    pub sp: f64,
    pub sq: f64,
    pub err: f64,
}

impl JsSums {
    pub fn merge(&mut self, o: &JsSums) {
        self.h += o.h;
        self.sp += o.sp;
        self.sq += o.sq;
        self.err += o.err;
    }
}

/// Entries a [`TopList`] keeps: the largest K of the agreement statistics
/// (`summary::agreement::TOP_K`).
pub const TOP_LIST: usize = 10;

/// The largest values of (a piece of) one side of a row with their columns, largest first and
/// the lower column first on ties (the raw logits: softmax is monotone).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopList {
    pub len: usize,
    pub val: [f64; TOP_LIST],
    pub col: [u64; TOP_LIST],
}

impl Default for TopList {
    fn default() -> Self {
        TopList {
            len: 0,
            val: [f64::NEG_INFINITY; TOP_LIST],
            col: [NO_TOP; TOP_LIST],
        }
    }
}

impl TopList {
    /// Whether (v1, c1) ranks before (v2, c2).
    fn before(v1: f64, c1: u64, v2: f64, c2: u64) -> bool {
        v1 > v2 || (v1 == v2 && c1 < c2)
    }

    /// Value `v` at column `col`, kept if it ranks among the largest.
    pub fn push(&mut self, v: f64, col: u64) {
        let n = self.len;
        if n == TOP_LIST && !Self::before(v, col, self.val[n - 1], self.col[n - 1]) {
            return;
        }
        let mut at = n.min(TOP_LIST - 1);
        while at > 0 && Self::before(v, col, self.val[at - 1], self.col[at - 1]) {
            self.val[at] = self.val[at - 1];
            self.col[at] = self.col[at - 1];
            at -= 1;
        }
        self.val[at] = v;
        self.col[at] = col;
        self.len = (n + 1).min(TOP_LIST);
    }

    pub fn merge(&mut self, o: &TopList) {
        for i in 0..o.len {
            self.push(o.val[i], o.col[i]);
        }
    }

    /// The columns, largest value first.
    pub fn cols(&self) -> &[u64] {
        &self.col[..self.len]
    }

    fn offset(&mut self, by: usize) {
        for c in &mut self.col[..self.len] {
            *c += by as u64;
        }
    }
}

/// Sums of the agreement pass over logits whose maxima and log-sums are known (see
/// `exact::logit_agree_segment`): Σ min(p, q) and each side's largest values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AgreeSums {
    pub sum_min: f64,
    pub top_a: TopList,
    pub top_b: TopList,
}

impl AgreeSums {
    pub fn merge(&mut self, o: &AgreeSums) {
        self.sum_min += o.sum_min;
        self.top_a.merge(&o.top_a);
        self.top_b.merge(&o.top_b);
    }
}

/// Partial sums of one kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Partial {
    Probs(ProbSums),
    Logits(LogitSums),
    Js(JsSums),
    Agree(AgreeSums),
}

impl Partial {
    pub fn merge(&mut self, o: &Partial) {
        match (self, o) {
            (Partial::Probs(a), Partial::Probs(b)) => a.merge(b),
            (Partial::Logits(a), Partial::Logits(b)) => a.merge(b),
            (Partial::Js(a), Partial::Js(b)) => a.merge(b),
            (Partial::Agree(a), Partial::Agree(b)) => a.merge(b),
            _ => unreachable!("pieces of one row always come from one kernel"),
        }
    }

    /// Places these sums `by` columns later in the row (see [`LogitSums::offset_tops`]).
    pub fn offset_cols(mut self, by: usize) -> Partial {
        match &mut self {
            Partial::Logits(s) => s.offset_tops(by),
            Partial::Agree(s) => {
                s.top_a.offset(by);
                s.top_b.offset(by);
            }
            _ => {}
        }
        self
    }

    /// The sums of symmetric KL's kernel as the kernel of `member` (KL in either direction,
    /// or symmetric KL) would give them: the same terms, with reverse KL's t-terms moved from
    /// `main2` to `main`. Logits sums already hold both directions in their own fields.
    #[inline]
    pub fn as_kl_member(self, member: crate::request::Divergence) -> Partial {
        match self {
            Partial::Probs(s) if member == crate::request::Divergence::ReverseKl => {
                Partial::Probs(ProbSums { main: s.main2, ..s })
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists over pieces of a row, merged in any order, hold the row's largest values in
    /// order, lower columns first on ties (values drawn from a few, so ties abound).
    #[test]
    fn top_lists_merge_to_the_sorted_row() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for len in [1, 3, 10, 11, 40, 200] {
            let v: Vec<f64> = (0..len)
                .map(|_| match next() % 7 {
                    0 => f64::NEG_INFINITY,
                    k => k as f64,
                })
                .collect();
            let mut want: Vec<usize> = (0..len).collect();
            want.sort_by(|&i, &j| v[j].partial_cmp(&v[i]).unwrap().then(i.cmp(&j)));
            want.truncate(TOP_LIST);
            let cut = next() % len;
            let (mut a, mut b) = (TopList::default(), TopList::default());
            for (i, &x) in v.iter().enumerate() {
                if i < cut { &mut a } else { &mut b }.push(x, i as u64);
            }
            b.merge(&a);
            let got: Vec<usize> = b.cols().iter().map(|&c| c as usize).collect();
            assert_eq!(got, want, "{len}: {v:?}");
        }
    }
}
