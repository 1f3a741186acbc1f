//! The report of a comparison, as text and as JSON, from its [`Summary`]: what `kldiv compare`
//! and `kldiv merge` print and what the Python package returns.

use super::llama::{self, num, share_with_error};
use super::Summary;
use std::fmt::Write as _;

impl Summary {
    /// Share of rows whose argmax agrees, with its standard error (when Q is read).
    fn same_top_share(&self) -> Option<(f64, f64)> {
        self.meta
            .reads_q()
            .then(|| share_with_error(self.same_top as usize, self.scored_rows() as usize))
    }
}

/// The report as one JSON object (stable snake_case keys; non-finite values are null).
pub fn json(s: &Summary) -> serde_json::Value {
    let st = s.values.stats();
    let f = s.values.finite_stats();
    let m = &s.meta;
    let mut j = values_json(&s.values);
    let extra = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "p": m.p,
        "q": m.q,
        "elapsed_s": s.elapsed_s,
        "divergence": m.divergence,
        "input": m.input,
        "unit": m.unit,
        "rows": s.rows,
        "first_row": s.first_row,
        "cols": m.cols,
        "dtype": m.dtype,
        // The value-changing options ("normalize", "pseudocount 0.5", …; empty for none).
        "settings": m.settings,
        // Exact, or from the quantile sketch (summaries merged from shards).
        "percentiles_exact": s.values.is_exact(),
        // The statistics of the rows whose value is finite (`inf_rows`: q = 0 < p).
        "finite": {
            "count": f.count,
            "mean": num(f.mean),
            "sem": num(f.sem),
            "min": num(f.min),
            "median": num(f.median),
            "max": num(f.max),
        },
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (j.as_object_mut(), extra) {
        obj.extend(extra);
    }
    if let Some((share, se)) = s.same_top_share() {
        j["same_top"] = serde_json::json!({ "mean": share, "sem": num(se) });
    }
    if let (Some(a), Some(b)) = (m.index_of(st.min_row as u64), m.index_of(st.max_row as u64)) {
        j["min_index"] = a.into();
        j["max_index"] = b.into();
    }
    if let Some(a) = &s.agreement {
        j["agreement"] = a.json(llama::Labels::of(&m.divergence));
    }
    if !s.also.is_empty() {
        let also: serde_json::Map<String, serde_json::Value> = s
            .also
            .iter()
            .map(|(name, v)| (name.clone(), values_json(v)))
            .collect();
        j["also"] = also.into();
    }
    if let (Some(l), Some(obj)) = (s.llama(), j.as_object_mut()) {
        if let serde_json::Value::Object(extra) = llama::json(&l) {
            obj.extend(extra);
        }
        obj.insert("mode".into(), m.mode.clone().into());
    }
    j
}

/// A distribution of per-row values: the main block's statistics, and each further
/// divergence's.
fn values_json(v: &super::values::Values) -> serde_json::Value {
    let st = v.stats();
    let pct: serde_json::Map<String, serde_json::Value> = st
        .percentiles
        .iter()
        .map(|(p, v)| (format!("p{p}"), num(*v)))
        .collect();
    serde_json::json!({
        "count": st.count,
        "nan_rows": st.nan_rows,
        "inf_rows": v.inf_count(),
        "mean": num(st.mean),
        "sem": num(st.sem),
        "std": num(st.std),
        "min": num(st.min),
        "min_row": st.min_row,
        "median": num(st.median),
        "max": num(st.max),
        "max_row": st.max_row,
        "percentiles": pct,
    })
}

/// The report as text: the summary, then llama.cpp's three blocks when rows had targets.
pub fn text(s: &Summary) -> String {
    let st = s.values.stats();
    let m = &s.meta;
    let mut o = String::new();
    let dtypes = if m.reads_q() && m.p_dtype != m.q_dtype {
        format!("{} and {}, read as {}", m.p_dtype, m.q_dtype, m.dtype)
    } else {
        m.p_dtype.clone()
    };
    let div = m
        .divergence()
        .map_or(m.divergence.clone(), |d| d.formula().to_string());
    let files = if m.reads_q() {
        format!("{} and {}", m.p, m.q)
    } else {
        m.p.clone()
    };
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let _ = writeln!(
        o,
        "{div} of {files}: {} × {}, {dtypes} {}, in {}",
        plural(s.rows, "row", "rows"),
        plural(m.cols, "column", "columns"),
        m.input,
        m.unit
    );
    // The options that changed the values, so a reader of the text knows what was compared.
    if !m.settings.is_empty() {
        let _ = writeln!(o, "  options   {}", m.settings);
    }
    let _ = writeln!(o, "  mean      {:.6e} ± {:.2e}", st.mean, st.sem);
    let _ = writeln!(o, "  std       {:.6e}", st.std);
    let at = |r: usize| match m.index_of(r as u64) {
        Some(i) => format!("row {r}, index ({})", join(&i)),
        None => format!("row {r}"),
    };
    let _ = writeln!(o, "  min       {:.6e}  ({})", st.min, at(st.min_row));
    for (pct, v) in st.percentiles.iter().rev() {
        if *pct < 50.0 {
            let _ = writeln!(o, "  p{pct:<8} {v:.6e}");
        }
    }
    let _ = writeln!(o, "  median    {:.6e}", st.median);
    for (pct, v) in st.percentiles.iter().rev() {
        if *pct > 50.0 {
            let _ = writeln!(o, "  p{pct:<8} {v:.6e}");
        }
    }
    let _ = writeln!(o, "  max       {:.6e}  ({})", st.max, at(st.max_row));
    if let Some((share, se)) = s.same_top_share() {
        let _ = writeln!(
            o,
            "  same top  {share:.4} ± {se:.4}  (rows whose argmax agrees)"
        );
    }
    if st.nan_rows > 0 {
        let _ = writeln!(o, "  NaN rows  {}", st.nan_rows);
    }
    let inf = s.values.inf_count();
    if inf > 0 {
        let f = s.values.finite_stats();
        let _ = writeln!(
            o,
            "  inf rows  {inf} (q = 0 where p > 0); the other {} rows: mean {:.6e} ± {:.2e}, max {:.6e}",
            f.count, f.mean, f.sem, f.max
        );
    }
    for (name, v) in &s.also {
        let st = v.stats();
        let p99 = st
            .percentiles
            .iter()
            .find(|(p, _)| *p == 99.0)
            .map_or(f64::NAN, |x| x.1);
        let _ = writeln!(
            o,
            "  {name}: mean {:.6e} ± {:.2e}, median {:.6e}, p99 {p99:.6e}, max {:.6e} ({}){}",
            st.mean,
            st.sem,
            st.median,
            st.max,
            at(st.max_row),
            match v.inf_count() {
                0 => String::new(),
                n => format!(", {n} inf rows"),
            }
        );
    }
    if let Some(a) = &s.agreement {
        o.push_str(&a.text(llama::Labels::of(&m.divergence)));
    }
    if !s.values.is_exact() {
        let _ = writeln!(
            o,
            "  (percentiles from the merged quantile sketch: within {}% of the exact values)",
            super::sketch::ALPHA * 100.0
        );
    }
    if let Some(l) = s.llama() {
        let _ = write!(
            o,
            "\nllama.cpp's report ({} arithmetic):\n{}",
            m.mode,
            llama::text(&l)
        );
    }
    o
}

fn join(i: &[u64]) -> String {
    i.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use crate::summary::{Meta, Summary};
    use crate::{Divergence, Request};

    /// The first line counts rows and columns in words that agree with the counts.
    #[test]
    fn the_first_line_counts_in_singular_and_plural() {
        let req = Request::new(Divergence::Kl);
        let first_line = |rows: usize, cols: usize| {
            let mut s = Summary::new(Meta::of(&req, cols, crate::Dtype::F64), true, 0);
            for r in 0..rows {
                s.push_row(0.1 * r as f64, true, None);
            }
            super::text(&s)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            first_line(1, 1).contains(": 1 row × 1 column, "),
            "{}",
            first_line(1, 1)
        );
        assert!(
            first_line(2, 7).contains(": 2 rows × 7 columns, "),
            "{}",
            first_line(2, 7)
        );
    }
}
