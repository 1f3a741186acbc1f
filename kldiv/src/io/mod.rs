//! Reading inputs from files and writing results.

pub mod kld;
pub mod npy;
pub mod sides;
pub mod tensor;
