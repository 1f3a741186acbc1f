//! Argument parsing and dispatch. Exit codes: 0 success, 2 bad usage or invalid input,
//! 1 any other failure. Errors are one line on stderr, never a panic trace.

mod bench;
mod compare;

use clap::{Parser, Subcommand, ValueEnum};
use kldiv::{Divergence, InputForm};

#[derive(Parser)]
#[command(
    name = "kldiv",
    version,
    about = "KL divergence over batches of distributions, on CPU and GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compare two arrays row by row (P ‖ Q) and print summary statistics.
    Compare(compare::Args),
    /// Time every engine on the built-in workloads W1–W4 (the README's main command).
    Bench(bench::Args),
    /// Describe the CPU (SIMD level, threads) and any GPU adapters.
    Info,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InputArg {
    Probs,
    Logprobs,
    Logits,
}

impl From<InputArg> for InputForm {
    fn from(a: InputArg) -> Self {
        match a {
            InputArg::Probs => InputForm::Probabilities,
            InputArg::Logprobs => InputForm::LogProbabilities,
            InputArg::Logits => InputForm::Logits,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DivergenceArg {
    Kl,
    ReverseKl,
    SymmetricKl,
    Js,
    CrossEntropy,
    Entropy,
}

impl From<DivergenceArg> for Divergence {
    fn from(a: DivergenceArg) -> Self {
        match a {
            DivergenceArg::Kl => Divergence::Kl,
            DivergenceArg::ReverseKl => Divergence::ReverseKl,
            DivergenceArg::SymmetricKl => Divergence::SymmetricKl,
            DivergenceArg::Js => Divergence::JensenShannon,
            DivergenceArg::CrossEntropy => Divergence::CrossEntropy,
            DivergenceArg::Entropy => Divergence::Entropy,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
}

/// A failure with its exit code.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl From<kldiv::Error> for Failure {
    fn from(e: kldiv::Error) -> Self {
        Failure {
            code: if e.is_input_error() { 2 } else { 1 },
            message: e.to_string(),
        }
    }
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Compare(a) => compare::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Info => info(),
    };
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("kldiv: {}", f.message);
            f.code
        }
    }
}

fn info() -> Result<(), Failure> {
    let cpu = kldiv::CpuEngine::new();
    println!("cpu: {} SIMD, {} threads", cpu.simd_name(), cpu.threads());
    println!("gpu: {}", gpu_line());
    Ok(())
}

fn gpu_line() -> String {
    "not built into this version".to_string()
}
