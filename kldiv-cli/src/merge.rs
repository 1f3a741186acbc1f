//! `kldiv merge SHARD.json…`: the report of a run split into shards, from the summaries each
//! shard wrote with `compare --summary-out` (counts exact, moments to rounding, percentiles
//! within the quantile sketch's bound).

use crate::output::{self, OutputFile};
use crate::Failure;
use kldiv::summary::{report, Summary};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Summaries written by `kldiv compare --summary-out` (or the Python package), of
    /// disjoint rows of one comparison.
    #[arg(required = true)]
    summaries: Vec<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write the merged summary here (to merge further).
    #[arg(long, value_name = "FILE")]
    summary_out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let inputs: Vec<&std::path::Path> = a.summaries.iter().map(|p| p.as_path()).collect();
    let out = match &a.summary_out {
        Some(path) => Some(OutputFile::prepare(path, &inputs)?),
        None => None,
    };
    let mut merged: Option<Summary> = None;
    for path in &a.summaries {
        let at = |message: String| Failure {
            code: 2,
            message: format!("{}: {message}", path.display()),
        };
        let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
        let s = Summary::from_json(&text).map_err(|e| at(e.to_string()))?;
        match &mut merged {
            None => merged = Some(s),
            Some(m) => m.merge(&s).map_err(|e| at(e.to_string()))?,
        }
    }
    let Some(s) = merged else {
        return Err(Failure {
            code: 2,
            message: "no summaries given".into(),
        });
    };
    if let Some(f) = out {
        f.commit(|w| w.write_all(s.to_json().as_bytes()))?;
    }
    output::print(&if a.json {
        format!("{}\n", report::json(&s))
    } else {
        report::text(&s)
    })
}
