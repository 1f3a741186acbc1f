//! Streaming a file bigger than memory: rows a block has finished with are unmapped from the
//! process (resident memory stays at a few blocks), and reading them again gives the same
//! values (the pages come back from the file).

mod common;
use common::files::{f32_npy, tmp};
use kldiv::io::tensor::TensorFile;

/// This process's resident memory in bytes (Linux).
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn released_rows_leave_memory_and_read_back_the_same() {
    let (rows, cols) = (8192, 1024); // 32 MiB of f32
    let values: Vec<f32> = (0..rows * cols).map(|i| (i % 977) as f32 * 0.5).collect();
    let path = tmp("streaming_release.npy");
    f32_npy(&path, rows, cols, &values);
    drop(values);
    let f = TensorFile::open(path.to_str().unwrap()).unwrap();
    let sum = |f: &TensorFile| -> f64 { f.rows_as::<f32>(0, rows).iter().map(|&x| x as f64).sum() };
    let want = sum(&f);
    let Some(before) = resident() else {
        eprintln!("skipping: no /proc/self/statm");
        return;
    };
    f.release(0, rows);
    let after = resident().unwrap();
    assert!(
        before >= after + (24 << 20),
        "releasing 32 MiB of rows left resident memory at {after} (was {before})"
    );
    f.read_ahead(0, rows);
    assert_eq!(sum(&f), want);
}
