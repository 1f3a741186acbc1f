//! The `kldiv` command line: `compare`, `bench`, `info`.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
