//! placeholder
mod shaders;
