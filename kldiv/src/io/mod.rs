//! Reading inputs from files and writing results.

pub mod npy;
pub mod tensor;
