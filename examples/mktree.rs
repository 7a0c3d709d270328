//! Builds a deterministic rootfs-like bulk tree for benchmarks (root only):
//! `cargo run --release --example mktree -- DIR N [H]`, H inodes of them already
//! holding host-range ids (under DIR/rec).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, count, host) = match &args[..] {
        [dir, count] => (dir, count, "0"),
        [dir, count, host] => (dir, count, host.as_str()),
        _ => {
            eprintln!("usage: mktree DIR N [H]   (DIR is created if missing and must be empty)");
            return ExitCode::from(2);
        }
    };
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("mktree: N must be a number, not {count:?}");
        return ExitCode::from(2);
    };
    let Ok(host) = host.parse::<usize>() else {
        eprintln!("mktree: H must be a number, not {host:?}");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let start = Instant::now();
    let made = std::fs::create_dir_all(&dir)
        .and_then(|()| lxc_idshift::sample::build_bulk_tree(&dir, count))
        .and_then(|n| match host {
            0 => Ok(n),
            _ => lxc_idshift::sample::build_host_range_inodes(&dir, host).map(|h| n + h),
        });
    match made {
        Ok(n) => {
            println!("{n} inodes in {} ({:.1?})", dir.display(), start.elapsed());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mktree: {e}");
            ExitCode::FAILURE
        }
    }
}
