//! lxc-idshift: the thin front end over the library.

/// `println!` and `print!` for what the binary prints on standard output: a reader
/// that went away (`| head`) ends nothing in a panic, since the work is done (or
/// not started) either way.
macro_rules! out {
    () => { $crate::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! out_raw {
    ($($arg:tt)*) => { $crate::write_out(format_args!($($arg)*)) };
}

/// Writes to standard output; a closed pipe is not worth a word.
fn write_out(text: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(text) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("lxc-idshift: cannot write to standard output: {e}");
        }
    }
}

mod cli;
mod demo;
mod generate;
mod output;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use lxc_idshift::engine::{run, status, verify};
use lxc_idshift::lxc::effects::RealHost;
use lxc_idshift::{Direction, IdMap};
use output::say;
use std::process::ExitCode;

/// Finished, but some inodes could not be shifted (or verify found problems).
const EXIT_INCOMPLETE: u8 = 1;
/// Refused or failed before finishing: see the message.
const EXIT_REFUSED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse_from(with_convert_shorthand(std::env::args_os().collect()));
    output::set_quiet(cli.quiet);
    let json = cli.command.json();
    match execute(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let text = error_text(&e);
            eprintln!("lxc-idshift: {text}");
            if json {
                let _ = output::print_json(&output::ErrorReport::new(text, &e));
            }
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// The error and its causes, each said once: a cause whose text the message
/// already holds (`{path}: {source}; ...`) is not repeated.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// `lxc-idshift NAME --to ...` and `lxc-idshift -n NAME --to ...` mean
/// `lxc-idshift convert ...`: anything but a subcommand, help or version (after
/// `-q`) starts a conversion.
fn with_convert_shorthand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let command = Cli::command();
    let subcommands: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
    let at = args
        .iter()
        .skip(1)
        .position(|a| a != "-q" && a != "--quiet")
        .map(|i| i + 1);
    let Some(at) = at else {
        return args;
    };
    let first = args[at].to_str().unwrap_or("");
    let keep = ["help", "-h", "--help", "-V", "--version"];
    if !keep.contains(&first) && !subcommands.contains(&first) {
        args.insert(at, "convert".into());
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
            output::shift_report(&report, args.json)?;
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
        Command::List(args) => list(args),
        Command::Check(args) => check(args),
        Command::Demo(args) => demo::run(args.keep),
        Command::Generate(args) => generate::run(args.what),
    }
}

fn list(args: cli::ListArgs) -> anyhow::Result<u8> {
    use lxc_idshift::lxc::{container, list};
    if args.names {
        let lxcpath = args
            .lxcpath
            .unwrap_or_else(|| container::default_lxcpath(&RealHost));
        for name in list::names(&lxcpath)? {
            out!("{name}");
        }
        return Ok(0);
    }
    let (lxcpath, entries) = list::list(
        args.lxcpath.as_deref(),
        &lxc_idshift::lxc::host::Host::under(args.host_root),
    )?;
    output::list_report(&lxcpath, &entries, args.json)?;
    Ok(0)
}

fn convert(args: cli::ConvertArgs) -> anyhow::Result<u8> {
    use lxc_idshift::lxc::convert::{self, ConvertOptions};
    let to = match &args.to {
        Some(to) => to.parse().map_err(anyhow::Error::msg)?,
        None => {
            let pieces = lxc_idshift::engine::idmap::IdMap::parse(&args.map)?;
            convert::Target::Map(lxc_idshift::lxc::hostmap::HostMap::new(
                pieces.entries().to_vec(),
            )?)
        }
    };
    let share_ids = lxc_idshift::lxc::hostmap::parse_shared(&args.share_ids.join(","));
    let options = ConvertOptions {
        to,
        share_ids: match args.share_ids.is_empty() {
            true => Vec::new(),
            false => share_ids?,
        },
        name: args.container.get(),
        snapshot: args.snapshot,
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
        method: args
            .method
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    if !options.dry_run && !lxc_idshift::is_root() {
        anyhow::bail!(
            "converting a container needs root: run it as root (sudo lxc-idshift ...), or see the plan with --dry-run"
        );
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
    // Refused here, before any write, unless lxc-info says the container is stopped.
    let plan = convert::plan(&options, &RealHost)?;
    if !args.json && !output::quiet() {
        out_raw!("{}", convert::describe(&plan));
    }
    if options.dry_run {
        let report = dry_run_counts(&plan, options.threads)?;
        if args.json {
            output::print_json(&output::ConvertReport::new(&plan, true, report.as_ref()))?;
        } else if let Some(report) = &report {
            output::shift_report(report, false)?;
        }
        return Ok(0);
    }
    let bar = output::Bar::new(!args.json);
    let outcome = convert::execute(plan, &RealHost, options.threads, &bar)?;
    let unfinished = outcome.shift.as_ref().is_some_and(|r| r.summary.errors > 0);
    let again = again_command(&outcome.plan);
    if args.json {
        let mut report = output::ConvertReport::new(&outcome.plan, false, outcome.shift.as_ref());
        report.udev_reloaded = outcome.udev_reloaded;
        if unfinished {
            report.result = output::ConvertResult::Unfinished;
            report.next = Some(again.clone());
        }
        output::print_json(&report)?;
    } else if let Some(report) = &outcome.shift {
        output::shift_report(report, false)?;
    }
    if unfinished {
        let report = outcome.shift.as_ref().expect("unfinished means a shift");
        if args.json {
            // The human report lists them; the JSON one carries them.
            let listed = report.error_paths.iter().take(5);
            for e in listed {
                eprintln!("  error: {}: {}", e.path.display(), e.message);
            }
        }
        eprintln!("The rootfs shift is unfinished, so the config was left as it was: fix the errors above and run `{again}` again.");
        return Ok(EXIT_INCOMPLETE);
    }
    for report in &outcome.mount_shifts {
        output::shift_report(report, false)?;
        if report.summary.errors > 0 {
            eprintln!("The shift of bind mount source {} is unfinished, so the config was left as it was: fix the errors above and run the same command again.", report.root.display());
            return Ok(EXIT_INCOMPLETE);
        }
    }
    if outcome.udev_reloaded == Some(false) {
        eprintln!("warning: no udevd runs here (or udevadm is missing): the udev rule takes effect when udevd starts, at the next replug or boot; the device nodes were given their owners now");
    }
    if !args.json {
        say!(
            "Done: container {} is now {}.",
            outcome.plan.container.name,
            outcome.plan.after
        );
    }
    Ok(0)
}

/// The command that continues this conversion.
fn again_command(plan: &lxc_idshift::lxc::convert::Plan) -> String {
    format!(
        "lxc-idshift -n {} -P {} {}",
        plan.container.name,
        plan.container.lxcpath.display(),
        plan.after.args()
    )
}

/// `check NAME`: 0 when the container should start and work, 1 with problems (each
/// printed with its fix), 2 (an error) when it cannot be checked.
fn check(args: cli::CheckArgs) -> anyhow::Result<u8> {
    use lxc_idshift::lxc::check::{self, CheckOptions};
    let report = check::check(&CheckOptions {
        name: args.container.get(),
        lxcpath: args.lxcpath,
        threads: args.threads,
        host: lxc_idshift::lxc::host::Host::under(args.host_root),
    })?;
    output::check_report(&report, args.json)?;
    Ok(if report.ok() { 0 } else { EXIT_INCOMPLETE })
}

/// `--dry-run`: how many inodes the rootfs shift would touch.
fn dry_run_counts(
    plan: &lxc_idshift::lxc::convert::Plan,
    threads: Option<usize>,
) -> anyhow::Result<Option<run::ShiftReport>> {
    let Some((map, direction)) = &plan.shift else {
        return Ok(None);
    };
    let options = run::ShiftOptions {
        root: plan.rootfs.clone(),
        map: map.clone(),
        direction: *direction,
        dry_run: true,
        threads,
        journal: Some(plan.container.journal_for(map)),
    };
    Ok(Some(run::shift(&options, &run::Quiet)?))
}
