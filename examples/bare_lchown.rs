//! Benchmark baseline: the least a shifter must do. A single-threaded, path-based
//! recursive walk that lstats every inode and lchowns it by +1000000 (ids in
//! 0..65536) or -1000000 with `--reverse` (ids in 1000000..1065536). Nothing else:
//! no hardlink dedupe, no mode/ACL/capability care, no journal.
//! `bare_lchown DIR [--reverse]`

use std::io;
use std::os::unix::fs::{lchown, MetadataExt};
use std::path::Path;
use std::process::ExitCode;

const SHIFT: u32 = 1_000_000;
const COUNT: u32 = 65_536;

fn shifted(id: u32, reverse: bool) -> u32 {
    match reverse {
        false if id < COUNT => id + SHIFT,
        true if (SHIFT..SHIFT + COUNT).contains(&id) => id - SHIFT,
        _ => id,
    }
}

fn walk(path: &Path, reverse: bool, count: &mut u64) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let (uid, gid) = (shifted(meta.uid(), reverse), shifted(meta.gid(), reverse));
    lchown(path, Some(uid), Some(gid))?;
    *count += 1;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            walk(&entry?.path(), reverse, count)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reverse = args.iter().any(|a| a == "--reverse");
    let dirs: Vec<&String> = args.iter().filter(|a| *a != "--reverse").collect();
    let [dir] = dirs[..] else {
        eprintln!("usage: bare_lchown DIR [--reverse]");
        return ExitCode::from(2);
    };
    let mut count = 0;
    match walk(Path::new(dir), reverse, &mut count) {
        Ok(()) => {
            eprintln!("bare_lchown: {count} inodes");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bare_lchown: {e}");
            ExitCode::FAILURE
        }
    }
}
