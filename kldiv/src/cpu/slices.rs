//! Rows a slice at a time, each slice on one thread from start to end: for work that reads
//! each row twice (a report's agreement read after the divergence pass), so that the second
//! read finds the rows in the core's cache where the first left them. Over a whole block it
//! came from memory again and waited on it (perf: most of its samples on its prefetches).
//! (Jensen–Shannon's second pass, tried the same way, gained nothing: it is arithmetic.)

use super::pool;
use crate::error::Result;
use crate::semantics::run::PerRow;

/// Bytes of both sides one slice holds: half of a core's L2 on current x86 server cores
/// (1–2 MiB). A longer row pair is a slice alone.
const SLICE_BYTES: usize = 1 << 20;

/// `f(r0, r1)` over consecutive slices of `rows` rows (`pair_bytes` each, both sides), in
/// parallel, each slice on one thread (`pool::serial`); the results in row order.
pub fn each<R: Send>(
    rows: usize,
    pair_bytes: usize,
    f: impl Fn(usize, usize) -> R + Sync + Send,
) -> Vec<R> {
    let per_slice = (SLICE_BYTES / pair_bytes.max(1)).max(1);
    pool::map(rows.div_ceil(per_slice), |k| {
        let (r0, r1) = (k * per_slice, ((k + 1) * per_slice).min(rows));
        pool::serial(|| f(r0, r1))
    })
}

/// The slices' [`PerRow`]s (in row order) as one; the first error (the lowest rows').
pub fn join(parts: impl IntoIterator<Item = Result<PerRow>>, divs: usize) -> Result<PerRow> {
    let mut out = PerRow {
        values: vec![vec![]; divs],
        tops: vec![],
    };
    let mut rows = 0;
    for part in parts {
        let mut part = part?;
        let n = part.values.first().map_or(0, Vec::len);
        for (all, values) in out.values.iter_mut().zip(&mut part.values) {
            all.append(values);
        }
        // Tops are kept where every slice has them (logits), row for row.
        if part.tops.len() == n && out.tops.len() == rows {
            out.tops.append(&mut part.tops);
        } else {
            out.tops.clear();
        }
        rows += n;
    }
    if out.tops.len() != rows {
        out.tops.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::semantics::sums::RowTops;

    fn part(values: &[f64], tops: bool) -> Result<PerRow> {
        Ok(PerRow {
            values: vec![values.to_vec()],
            tops: if tops {
                vec![Some(RowTops::default()); values.len()]
            } else {
                vec![]
            },
        })
    }

    /// Values in row order; tops only where every slice has them; the first error wins.
    #[test]
    fn join_keeps_row_order_tops_and_the_first_error() {
        let all = join([part(&[1.0, 2.0], true), part(&[3.0], true)], 1).unwrap();
        assert_eq!((all.values, all.tops.len()), (vec![vec![1.0, 2.0, 3.0]], 3));
        for parts in [
            [part(&[1.0], false), part(&[2.0], true)],
            [part(&[1.0], true), part(&[2.0], false)],
        ] {
            assert!(join(parts, 1).unwrap().tops.is_empty());
        }
        let bad = |row| Err(Error::InvalidRequest(format!("row {row}")));
        let e = join([part(&[1.0], true), bad(1), bad(2)], 1).unwrap_err();
        assert!(e.to_string().contains("row 1"), "{e}");
        // Slices in row order on the pool: each sees its own rows.
        let spans = each(10, 400 << 10, |r0, r1| (r0, r1));
        assert_eq!(spans, [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]);
    }
}
