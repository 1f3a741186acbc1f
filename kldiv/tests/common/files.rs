//! Test-side writers for the file formats kldiv reads, written from the formats'
//! specifications (not with kldiv's own writers).

use std::path::{Path, PathBuf};

/// A fresh path in this test process's scratch directory.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kldiv-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// An .npy file (version 1.0) with the given header dict and raw data.
pub fn write_npy(path: &Path, dict: &str, data: &[u8]) {
    let mut header = dict.to_string();
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

/// numpy's spelling of a shape tuple.
pub fn shape_tuple(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Row-major (C order) `values` of `shape` as little-endian f32 .npy.
pub fn f32_npy_shaped(path: &Path, shape: &[usize], values: &[f32]) {
    let data: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_npy(
        path,
        &format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}",
            shape_tuple(shape)
        ),
        &data,
    );
}

/// The same C-order `values` of `shape`, stored as numpy stores a Fortran-order array:
/// element (i0, i1, …, ik) at i0 + d0·(i1 + d1·(…)).
pub fn f32_npy_fortran(path: &Path, shape: &[usize], values: &[f32]) {
    let n: usize = shape.iter().product();
    assert_eq!(n, values.len());
    let mut out = vec![0f32; n];
    for (c_index, &v) in values.iter().enumerate() {
        // Multi-index of the C-order position.
        let mut rem = c_index;
        let mut idx = vec![0; shape.len()];
        for j in (0..shape.len()).rev() {
            idx[j] = rem % shape[j];
            rem /= shape[j];
        }
        let mut f = 0;
        let mut stride = 1;
        for j in 0..shape.len() {
            f += idx[j] * stride;
            stride *= shape[j];
        }
        out[f] = v;
    }
    let data: Vec<u8> = out.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_npy(
        path,
        &format!(
            "{{'descr': '<f4', 'fortran_order': True, 'shape': {}, }}",
            shape_tuple(shape)
        ),
        &data,
    );
}

/// A `rows × cols` f32 .npy.
pub fn f32_npy(path: &Path, rows: usize, cols: usize, v: &[f32]) {
    f32_npy_shaped(path, &[rows, cols], v);
}

/// A .safetensors file: (name, dtype, shape, raw little-endian bytes) per tensor.
pub fn write_safetensors(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let mut entries = vec![];
    let mut data = vec![];
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            "\"{}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{start},{}]}}",
            name.replace('\\', "\\\\").replace('"', "\\\""),
            dims.join(","),
            data.len()
        ));
    }
    let mut h = format!("{{{}}}", entries.join(",")).into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// The values of a 1-D (or any-rank) little-endian f64 .npy, with its shape.
pub fn read_f64_npy(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hl]).unwrap();
    assert!(header.contains("'<f8'"), "{header}");
    let shape_text = header.split("'shape': (").nth(1).unwrap();
    let shape_text = shape_text.split(')').next().unwrap();
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let values = bytes[10 + hl..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, values)
}

/// A 1-D int32 .npy.
pub fn i32_npy(path: &Path, v: &[i32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_npy(
        path,
        &format!(
            "{{'descr': '<i4', 'fortran_order': False, 'shape': ({},), }}",
            v.len()
        ),
        &bytes,
    );
}
