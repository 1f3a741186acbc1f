//! Malformed, truncated and lying input files: the readers answer with an error (or a valid
//! tensor), never a panic, a huge allocation or an out-of-bounds read.
//!
//! Two parts: every file in tests/corpus (crafted cases and past crashers, kept as
//! regressions), and a seeded mutation fuzzer over valid .npy and .safetensors files that
//! runs on stable Rust in the normal test suite. (`fuzz/` holds the same targets for
//! cargo-fuzz, for longer runs on nightly.)

mod common;
use kldiv::io::tensor::{Block, TensorFile};
use std::path::Path;

/// Open and, when small enough, decode every row: must not panic.
fn exercise(path: &Path) -> Result<(), kldiv::Error> {
    let spec = path.to_str().unwrap();
    let t = TensorFile::open(spec)?;
    if t.rows().saturating_mul(t.cols()) <= 1 << 20 && t.rows() > 0 {
        match t.block(0, t.rows()) {
            Block::F32(v) => assert_eq!(v.len(), t.rows() * t.cols()),
            Block::F64(v) => assert_eq!(v.len(), t.rows() * t.cols()),
            Block::F16(v) => assert_eq!(v.len(), t.rows() * t.cols()),
            Block::BF16(v) => assert_eq!(v.len(), t.rows() * t.cols()),
        }
    }
    Ok(())
}

#[test]
fn corpus_files_are_rejected_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let r = std::panic::catch_unwind(|| exercise(&path));
        assert!(r.is_ok(), "{} panicked", path.display());
        n += 1;
    }
    assert!(n >= 10, "corpus went missing");
}

fn valid_npy() -> Vec<u8> {
    npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 5), }")
}

/// Seeds that reach the readers' other branches: Fortran order of rank 3 (gathered), integer
/// counts, big-endian.
fn valid_npy_others() -> Vec<Vec<u8>> {
    vec![
        npy_with("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 1, 5), }"),
        npy_with("{'descr': '<i4', 'fortran_order': False, 'shape': (5, 3), }"),
        npy_with("{'descr': '>f4', 'fortran_order': True, 'shape': (5, 3), }"),
        npy_with("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 15), }"),
    ]
}

/// 60 data bytes after the given header dict.
fn npy_with(dict: &str) -> Vec<u8> {
    let mut h = dict.to_string();
    let total = 10 + h.len() + 1;
    h.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    for i in 0..15 {
        out.extend_from_slice(&(i as f32 / 105.0).to_le_bytes());
    }
    out
}

fn valid_safetensors() -> Vec<u8> {
    let h = br#"{"a":{"dtype":"BF16","shape":[2,4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]}}"#;
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h);
    out.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    out
}

#[test]
fn mutated_files_never_panic() {
    let mut rng = common::Rng::new(99);
    let dir = std::env::temp_dir().join(format!("kldiv-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds = vec![("npy", valid_npy()), ("safetensors", valid_safetensors())];
    seeds.extend(valid_npy_others().into_iter().map(|s| ("npy", s)));
    for (ext, seed) in seeds {
        for i in 0..800 {
            let mut b = seed.clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                let at = (rng.next_u64() as usize) % b.len().max(1);
                match rng.next_u64() % 6 {
                    0 => b[at] ^= 1 << (rng.next_u64() % 8),
                    1 => b[at] = b"0123456789(),:'{} -<>fFTx"[(rng.next_u64() % 25) as usize],
                    2 => b.truncate(at),
                    3 => b.insert(at, rng.next_u64() as u8),
                    4 => {
                        b.remove(at.min(b.len().saturating_sub(1)));
                    }
                    _ => b[at] = 0xff,
                }
                if b.is_empty() {
                    break;
                }
            }
            let path = dir.join(format!("m{i}.{ext}"));
            std::fs::write(&path, &b).unwrap();
            let r = std::panic::catch_unwind(|| exercise(&path));
            if r.is_err() {
                let keep = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(format!("tests/corpus/crash-{i}.{ext}"));
                std::fs::write(&keep, &b).unwrap();
                panic!("{ext} mutation {i} panicked; saved as {}", keep.display());
            }
            // A named tensor that may or may not exist.
            if ext == "safetensors" {
                let spec = format!("{}:a", path.display());
                let r = std::panic::catch_unwind(|| TensorFile::open(&spec).map(|_| ()));
                assert!(r.is_ok(), "named open panicked");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
