//! Benchmark baseline: the floor of a shift that keeps lxc-idshift's promises
//! (`lxc_idshift::engine::floor`): per inode only the system calls a safe shift
//! cannot do without, in parallel, then one syncfs. Moves ids 0..65536 by +1000000
//! (or back with `--reverse`), like `bare_lchown`.
//! `safe_floor DIR [--reverse] [--threads N]`

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reverse = args.iter().any(|a| a == "--reverse");
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let Some(dir) = args.first().filter(|a| !a.starts_with("--")) else {
        eprintln!("usage: safe_floor DIR [--reverse] [--threads N]");
        return ExitCode::from(2);
    };
    match lxc_idshift::engine::floor::shift_floor(Path::new(dir), reverse, threads) {
        Ok(count) => {
            eprintln!("safe_floor: {count} inodes");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("safe_floor: {e}");
            ExitCode::FAILURE
        }
    }
}
