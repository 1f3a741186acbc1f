//! Fuzz the .npy / .safetensors readers: any bytes must give a tensor or an error.
//! Crashers go into tests/corpus, which `cargo test` replays (tests/fuzz_readers.rs).
#![no_main]

use kldiv::io::tensor::TensorFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir();
    for ext in ["npy", "safetensors"] {
        let path = dir.join(format!("kldiv-fuzz-{}.{ext}", std::process::id()));
        if std::fs::write(&path, data).is_err() {
            return;
        }
        if let Ok(t) = TensorFile::open(path.to_str().unwrap_or_default()) {
            if t.rows().saturating_mul(t.cols()) <= 1 << 20 && t.rows() > 0 {
                let _ = t.block(0, t.rows());
            }
        }
    }
});
