//! llama.cpp's KL-divergence base files (`.kld`, written by `llama-perplexity
//! --kl-divergence-base`; tools/perplexity/perplexity.cpp): validated against their exact
//! size, decoded a record at a time from the mapping, and written by the same rules.
//!
//! Layout (host byte order, little-endian in practice; no version, no checksum):
//! - 8 bytes `_logits_`; i32 n_ctx; i32 n_vocab; i32 n_chunk;
//! - i32 tokens[n_chunk·n_ctx];
//! - per chunk, R = n_ctx − 1 − n_ctx/2 records for positions n_ctx/2 … n_ctx − 2 (record j
//!   predicts token first + j + 1 of its chunk), each nv = 2·⌈n_vocab/2⌉ + 4 u16: f32 scale,
//!   f32 min_log_prob, n_vocab u16 q (one pad when n_vocab is odd). log p = scale·q + min.

use crate::error::{Error, Result};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"_logits_";
/// Magic and the three i32 header values.
pub const HEADER_BYTES: u64 = 20;

/// The shape of a `.kld` file, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KldLayout {
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
}

impl std::fmt::Display for KldLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n_ctx {}, n_vocab {}, n_chunk {}",
            self.n_ctx, self.n_vocab, self.n_chunk
        )
    }
}

impl KldLayout {
    /// The first scored position of a chunk (llama.cpp scores the second half).
    pub fn first(&self) -> usize {
        self.n_ctx / 2
    }
    /// Records per chunk.
    pub fn per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.n_ctx / 2
    }
    /// Scored rows in the file, chunk-major.
    pub fn scored_rows(&self) -> usize {
        self.n_chunk * self.per_chunk()
    }
    /// Token positions of all chunks.
    pub fn positions(&self) -> usize {
        self.n_chunk * self.n_ctx
    }
    /// u16 values per record.
    pub fn record_u16(&self) -> usize {
        2 * self.n_vocab.div_ceil(2) + 4
    }
    pub fn record_bytes(&self) -> u64 {
        2 * self.record_u16() as u64
    }
    pub fn records_offset(&self) -> u64 {
        HEADER_BYTES + 4 * self.positions() as u64
    }
    /// The exact size of a complete file (`None` if it overflows u64).
    pub fn file_bytes(&self) -> Option<u64> {
        let tokens = (self.n_chunk as u64)
            .checked_mul(self.n_ctx as u64)?
            .checked_mul(4)?;
        let records = (self.scored_rows() as u64).checked_mul(self.record_bytes())?;
        HEADER_BYTES.checked_add(tokens)?.checked_add(records)
    }
    /// The token position (over all chunks) whose distribution scored row `row` holds.
    pub fn position_of(&self, row: usize) -> usize {
        let (c, j) = (row / self.per_chunk(), row % self.per_chunk());
        c * self.n_ctx + self.first() + j
    }
    /// The token position scored row `row` predicts (the next one).
    pub fn target_of(&self, row: usize) -> usize {
        self.position_of(row) + 1
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn i32_at(bytes: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    i32::from_le_bytes(a)
}

fn f32_at(bytes: &[u8], at: usize) -> f32 {
    f32::from_bits(i32_at(bytes, at) as u32)
}

/// Check the header and the exact size of a `.kld` file's bytes. A short file names the
/// chunk and record where it ends (llama.cpp does not check its writes, so they exist).
pub fn layout(path: &Path, bytes: &[u8]) -> Result<KldLayout> {
    if bytes.len() < HEADER_BYTES as usize {
        return Err(bad(
            path,
            format!(
                "truncated .kld header: {} of {HEADER_BYTES} bytes",
                bytes.len()
            ),
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err(bad(
            path,
            "not a llama.cpp KL-divergence base file (magic is not \"_logits_\")",
        ));
    }
    let field = |name: &str, at: usize| -> Result<usize> {
        let v = i32_at(bytes, at);
        if v <= 0 {
            return Err(bad(
                path,
                format!(".kld header: {name} = {v} (must be > 0)"),
            ));
        }
        Ok(v as usize)
    };
    let l = KldLayout {
        n_ctx: field("n_ctx", 8)?,
        n_vocab: field("n_vocab", 12)?,
        n_chunk: field("n_chunk", 16)?,
    };
    if l.per_chunk() == 0 {
        return Err(bad(
            path,
            format!(".kld header: n_ctx = {} scores no position", l.n_ctx),
        ));
    }
    let want = l
        .file_bytes()
        .ok_or_else(|| bad(path, ".kld header: sizes overflow"))?;
    let have = bytes.len() as u64;
    if have < want {
        let message = if have < l.records_offset() {
            format!(
                "truncated .kld: {have} of {want} bytes, ends in the tokens (token {} of {})",
                (have - HEADER_BYTES) / 4,
                l.positions()
            )
        } else {
            let row = ((have - l.records_offset()) / l.record_bytes()) as usize;
            format!(
                "truncated .kld: {have} of {want} bytes, ends in chunk {} record {} (of {} chunks × {} records)",
                row / l.per_chunk(),
                row % l.per_chunk(),
                l.n_chunk,
                l.per_chunk()
            )
        };
        return Err(bad(path, message));
    }
    if have > want {
        return Err(bad(
            path,
            format!(
                ".kld holds {} bytes after its last record (header: n_ctx {}, n_vocab {}, n_chunk {})",
                have - want,
                l.n_ctx,
                l.n_vocab,
                l.n_chunk
            ),
        ));
    }
    Ok(l)
}

/// Token `i` (over all chunks) of a validated file.
pub fn token(bytes: &[u8], i: usize) -> i32 {
    i32_at(bytes, HEADER_BYTES as usize + 4 * i)
}

/// Scored row `row`'s log-probabilities, scale·q + min_log_prob in f32 as llama.cpp
/// computes them, into `out[..n_vocab]`.
pub fn decode_row(l: &KldLayout, bytes: &[u8], row: usize, out: &mut [f32]) {
    let at = (l.records_offset() + row as u64 * l.record_bytes()) as usize;
    let scale = f32_at(bytes, at);
    let min_log_prob = f32_at(bytes, at + 4);
    let q = &bytes[at + 8..at + 8 + 2 * l.n_vocab];
    for (o, b) in out.iter_mut().zip(q.chunks_exact(2)) {
        *o = scale * u16::from_le_bytes([b[0], b[1]]) as f32 + min_log_prob;
    }
}

/// llama.cpp's rounding of a non-negative f32 to the nearest integer, ties to even (adding
/// 1.5·2²³ leaves the integer in the low mantissa bits).
fn nearest_int(v: f32) -> i32 {
    let t = (v + 12_582_912.0).to_bits() as i32;
    (t & 0x007f_ffff) - 0x0040_0000
}

/// One record for a row of logits, appended to `out` as llama.cpp's writer makes it: the
/// range is clamped to 16 below the maximum, ln Σ e^(l − max) summed in f64 of f32
/// exponentials, and every value above the clamp quantised to 65535 steps (f32 arithmetic).
pub fn encode_row(logits: &[f32], out: &mut Vec<u8>) {
    let n = logits.len();
    let (mut max, mut min) = (logits[0], logits[0]);
    for &l in &logits[1..] {
        max = max.max(l);
        min = min.min(l);
    }
    let min = min.max(max - 16.0);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let lse = sum.ln() as f32;
    let min_log_prob = min - max - lse;
    let scale = (max - min) / 65535.0;
    out.extend_from_slice(&scale.to_le_bytes());
    out.extend_from_slice(&min_log_prob.to_le_bytes());
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for &l in logits {
            let q = if l > min {
                nearest_int(inv * (l - min))
            } else {
                0
            };
            // As llama.cpp's store into uint16_t.
            out.extend_from_slice(&(q as u16).to_le_bytes());
        }
    } else {
        out.resize(out.len() + 2 * n, 0);
    }
    if n % 2 == 1 {
        out.extend_from_slice(&[0, 0]);
    }
}

/// The header and tokens of a file of `n_chunk` chunks of `n_ctx` tokens over `n_vocab`.
pub fn encode_head(l: &KldLayout, tokens: &[i32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES as usize + 4 * tokens.len());
    out.extend_from_slice(MAGIC);
    for v in [l.n_ctx, l.n_vocab, l.n_chunk] {
        out.extend_from_slice(&(v as i32).to_le_bytes());
    }
    for t in tokens {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(l: &KldLayout, rows: &[Vec<f32>]) -> Vec<u8> {
        let tokens: Vec<i32> = (0..l.positions() as i32).collect();
        let mut b = encode_head(l, &tokens);
        for r in rows {
            encode_row(r, &mut b);
        }
        b
    }

    #[test]
    fn hand_computed_record() {
        // Logits [2, 0, -1, -20, 2 - 16 = -14 clamp]: max 2, min max(-20, -14) = -14.
        let logits = [2.0f32, 0.0, -1.0, -20.0, -13.0];
        let mut b = vec![];
        encode_row(&logits, &mut b);
        let l = KldLayout {
            n_ctx: 4,
            n_vocab: 5,
            n_chunk: 1,
        };
        assert_eq!(b.len() as u64, l.record_bytes());
        let scale = f32::from_le_bytes(b[0..4].try_into().unwrap());
        let minlp = f32::from_le_bytes(b[4..8].try_into().unwrap());
        assert_eq!(scale, 16.0f32 / 65535.0);
        let lse: f64 = logits
            .iter()
            .map(|&x| (x as f64 - 2.0).exp())
            .sum::<f64>()
            .ln();
        assert!((minlp as f64 - (-16.0 - lse)).abs() < 1e-5);
        let q: Vec<u16> = b[8..18]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        // (l + 14)·65535/16, rounded; -20 is below the clamp: 0.
        let want = |l: f64| ((l + 14.0) * 65535.0 / 16.0).round() as u16;
        assert_eq!(q, vec![65535, want(0.0), want(-1.0), 0, want(-13.0)]);
        assert_eq!(&b[18..20], &[0, 0], "odd n_vocab: one pad value");
    }

    #[test]
    fn ties_round_to_even_like_llama_cpp() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(65534.5), 65534);
        assert_eq!(nearest_int(7.49), 7);
    }

    #[test]
    fn round_trip_within_half_a_step() {
        let l = KldLayout {
            n_ctx: 6,
            n_vocab: 7,
            n_chunk: 2,
        };
        let rows: Vec<Vec<f32>> = (0..l.scored_rows())
            .map(|r| {
                (0..7)
                    .map(|c| ((r * 7 + c * 3) % 11) as f32 * 0.9 - 4.0)
                    .collect()
            })
            .collect();
        let b = file(&l, &rows);
        assert_eq!(layout(Path::new("t.kld"), &b).unwrap(), l);
        let mut out = vec![0f32; 7];
        for (r, row) in rows.iter().enumerate() {
            decode_row(&l, &b, r, &mut out);
            let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            for (&x, &d) in row.iter().zip(&out) {
                let exact = x as f64 - lse;
                // Half a quantisation step (16/65535/2) plus f32 rounding.
                assert!((d as f64 - exact).abs() < 1.3e-4, "{d} vs {exact}");
            }
        }
        assert_eq!(token(&b, 5), 5);
        assert_eq!((l.position_of(0), l.target_of(0)), (3, 4));
        assert_eq!(l.position_of(2), 6 + 3);
    }

    #[test]
    fn malformed_files_name_where_they_end() {
        let l = KldLayout {
            n_ctx: 6,
            n_vocab: 7,
            n_chunk: 2,
        };
        let rows = vec![vec![0.5f32; 7]; l.scored_rows()];
        let good = file(&l, &rows);
        let p = Path::new("base.kld");
        let msg = |b: &[u8]| layout(p, b).unwrap_err().to_string();
        assert!(msg(&good[..10]).contains("header"));
        let mut m = good.clone();
        m[0] = b'x';
        assert!(msg(&m).contains("magic"));
        let mut m = good.clone();
        m[8..12].copy_from_slice(&(-3i32).to_le_bytes());
        assert!(msg(&m).contains("n_ctx = -3"));
        // Absurd sizes: an error from arithmetic on the header, no allocation.
        let mut m = good.clone();
        m[12..16].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(msg(&m).contains("truncated"));
        assert!(msg(&good[..30]).contains("ends in the tokens"));
        let cut = l.records_offset() as usize + 3 * l.record_bytes() as usize + 5;
        let e = msg(&good[..cut]);
        assert!(e.contains("chunk 1 record 1"), "{e}");
        let mut long = good.clone();
        long.push(0);
        assert!(msg(&long).contains("1 bytes after"));
    }
}
