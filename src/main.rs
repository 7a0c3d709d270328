//! lxc-idshift: the thin front end over the library.

mod cli;
mod demo;
mod output;

use clap::Parser;
use cli::{Cli, Command};
use lxc_idshift::engine::idmap::{Direction, IdMap};
use lxc_idshift::engine::{run, status, verify};
use std::process::ExitCode;

/// Finished, but some inodes could not be shifted (or verify found problems).
const EXIT_INCOMPLETE: u8 = 1;
/// Refused or failed before finishing: see the message.
const EXIT_REFUSED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lxc-idshift: {e:#}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

fn execute(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Shift(args) => {
            let options = run::ShiftOptions {
                map: IdMap::parse(&args.map.maps)?,
                root: args.dir,
                direction: if args.reverse {
                    Direction::Reverse
                } else {
                    Direction::Forward
                },
                dry_run: args.dry_run,
                threads: args.threads,
                journal: args.journal,
            };
            let bar = output::Bar::new(!args.json);
            let report = run::shift(&options, &bar)?;
            output::shift_report(&report, &options.map, args.json)?;
            Ok(if report.summary.errors == 0 {
                0
            } else {
                EXIT_INCOMPLETE
            })
        }
        Command::Verify(args) => {
            let map = IdMap::parse(&args.map.maps)?;
            let report = verify::verify(&args.dir, &map, args.threads)?;
            output::verify_report(&report, &map, args.json)?;
            Ok(if report.clean() { 0 } else { EXIT_INCOMPLETE })
        }
        Command::Status(args) => {
            let report = status::status(&args.dir, args.journal.as_deref())?;
            output::status_report(&report, args.json)?;
            Ok(0)
        }
        Command::Demo(args) => demo::run(args.keep),
    }
}
