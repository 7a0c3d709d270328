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
    let cli = Cli::parse_from(with_convert_shorthand(std::env::args_os().collect()));
    match execute(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lxc-idshift: {e:#}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// `lxc-idshift NAME --to ...` means `lxc-idshift convert NAME --to ...`.
fn with_convert_shorthand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const COMMANDS: [&str; 8] = [
        "shift", "verify", "status", "convert", "check", "demo", "help", "-h",
    ];
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("-");
    if !first.starts_with('-') && !COMMANDS.contains(&first) {
        args.insert(1, "convert".into());
    }
    args
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
        Command::Convert(args) => convert(args),
        Command::Check(args) => check(args),
        Command::Demo(args) => demo::run(args.keep),
    }
}

fn convert(args: cli::ConvertArgs) -> anyhow::Result<u8> {
    use lxc_idshift::lxc::convert::{self, ConvertOptions};
    let options = ConvertOptions {
        to: args.to.parse().map_err(anyhow::Error::msg)?,
        name: args.name,
        range: args.range,
        lxcpath: args.lxcpath,
        dry_run: args.dry_run,
        devices: args.devices,
        release_range: args.release_range,
        threads: args.threads,
        host: lxc_idshift::lxc::host::Host::under(args.host_root),
        mounts: match args.mounts.as_deref() {
            Some(choice) => choice.parse().map_err(anyhow::Error::msg)?,
            None => convert::MountsChoice::Auto,
        },
    };
    if !options.dry_run && !lxc_idshift::engine::sys::is_root() {
        anyhow::bail!("converting a container needs root: run as root (or use --dry-run)");
    }
    // Held from choosing the range to the last write (dropped on return).
    let _lock = match options.dry_run {
        true => None,
        false => Some(lxc_idshift::lxc::lock::ConversionLock::acquire(
            &options.host,
            |holder| {
                let pid = holder.map_or("unknown pid".into(), |pid| format!("pid {pid}"));
                eprintln!("waiting for another lxc-idshift conversion ({pid}) to finish...");
            },
        )?),
    };
    let plan = convert::plan(&options)?;
    if !options.dry_run {
        plan.container.ensure_stopped()?;
    }
    print!("{}", convert::describe(&plan));
    if options.dry_run {
        return dry_run_counts(&plan, options.threads);
    }
    let bar = output::Bar::new(true);
    let outcome = convert::execute(plan, options.threads, &bar)?;
    if let Some(report) = &outcome.shift {
        output::shift_report(report, &report_map(&outcome.plan), false)?;
        if report.summary.errors > 0 {
            eprintln!("The rootfs shift is unfinished, so the config was left as it was: fix the errors above and run the same command again.");
            return Ok(EXIT_INCOMPLETE);
        }
    }
    for report in &outcome.mount_shifts {
        output::shift_report(report, &report_map(&outcome.plan), false)?;
        if report.summary.errors > 0 {
            eprintln!("The shift of bind mount source {} is unfinished, so the config was left as it was: fix the errors above and run the same command again.", report.root.display());
            return Ok(EXIT_INCOMPLETE);
        }
    }
    if outcome.udev_reloaded == Some(false) {
        eprintln!("warning: udevadm not found: the udev rule takes effect at the next boot or udev reload");
    }
    println!(
        "Done: container {} is now {}.",
        outcome.plan.container.name,
        match outcome.plan.to {
            Some(id) => format!("unprivileged (root = host uid {id})"),
            None => "privileged".into(),
        }
    );
    Ok(0)
}

/// `check NAME`: 0 when the container should start and work, 1 with problems (each
/// printed with its fix), 2 (an error) when it cannot be checked.
fn check(args: cli::CheckArgs) -> anyhow::Result<u8> {
    use lxc_idshift::lxc::check::{self, CheckOptions};
    let report = check::check(&CheckOptions {
        name: args.name,
        lxcpath: args.lxcpath,
        threads: args.threads,
        host: lxc_idshift::lxc::host::Host::under(args.host_root),
    })?;
    output::check_report(&report, args.json)?;
    Ok(if report.ok() { 0 } else { EXIT_INCOMPLETE })
}

fn report_map(plan: &lxc_idshift::lxc::convert::Plan) -> IdMap {
    plan.shift
        .as_ref()
        .map(|(map, _)| map.clone())
        .expect("a shift report comes with its map")
}

/// `--dry-run`: how many inodes the rootfs shift would touch.
fn dry_run_counts(
    plan: &lxc_idshift::lxc::convert::Plan,
    threads: Option<usize>,
) -> anyhow::Result<u8> {
    let Some((map, direction)) = &plan.shift else {
        return Ok(0);
    };
    let options = run::ShiftOptions {
        root: plan.rootfs.clone(),
        map: map.clone(),
        direction: *direction,
        dry_run: true,
        threads,
        journal: Some(plan.container.journal_for(map)),
    };
    let report = run::shift(&options, &run::Quiet)?;
    output::shift_report(&report, map, false)?;
    Ok(0)
}
