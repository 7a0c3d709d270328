//! Runs a command as on a kernel before 6.6 (Debian 12, Ubuntu 22.04, RHEL 9):
//! `fchmodat2` and the `*xattrat` calls fail with ENOSYS, so lxc-idshift takes its
//! fallbacks. The same seccomp filter as the tests' `LXC_IDSHIFT_TEST_KERNEL=old`;
//! for benchmarks: `OLD_KERNEL=1 scripts/bench-compare.sh`.
//! `as_old_kernel PROGRAM [ARGS...]`

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: as_old_kernel PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    if let Err(e) = lxc_idshift::engine::emulate_old_kernel() {
        eprintln!("as_old_kernel: cannot install the seccomp filter: {e}");
        return ExitCode::FAILURE;
    }
    let e = Command::new(&program).args(args).exec();
    eprintln!(
        "as_old_kernel: cannot run {}: {e}",
        program.to_string_lossy()
    );
    ExitCode::from(127)
}
