//! What a row's value *is*, shared by every engine.
//!
//! - [`plan`]: which passes a request takes (pure).
//! - [`sums`]: the partial sums engines reduce rows to, and how pieces merge.
//! - [`finish`]: how a row's sums become its value: checks, normalisation, the choice between
//!   equivalent forms by error estimates, infinities, clamping, units.
//! - [`exact`]: every kernel computed element by element in f64 — the definition the fast
//!   kernels approximate, and where the rows they cannot vouch for end up.
//! - [`run`]: the orchestration: a plan run on any [`run::PassEngine`], with follow-ups.
//! - [`rows`]: shapes, row numbering, and what engines hand over per row.
//!
//! Engines (`cpu`, `gpu`) only run passes; they contain no finishing rule.

pub mod exact;
pub mod finish;
pub mod plan;
pub mod rows;
pub mod run;
pub mod sums;
