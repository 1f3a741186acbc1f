//! What a computation returns.

/// One value per row, or one value for the batch (a reduction).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    PerRow(Vec<f64>),
    Scalar(f64),
}

impl Output {
    pub fn per_row(&self) -> Option<&[f64]> {
        match self {
            Output::PerRow(v) => Some(v),
            Output::Scalar(_) => None,
        }
    }
    pub fn scalar(&self) -> Option<f64> {
        match self {
            Output::Scalar(v) => Some(*v),
            Output::PerRow(_) => None,
        }
    }
    /// All values as f64 (one for a reduction).
    pub fn into_vec(self) -> Vec<f64> {
        match self {
            Output::PerRow(v) => v,
            Output::Scalar(v) => vec![v],
        }
    }
    /// All values rounded to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Output::PerRow(v) => v.iter().map(|&x| x as f32).collect(),
            Output::Scalar(v) => vec![*v as f32],
        }
    }
}
