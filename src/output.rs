//! What the binary prints: progress on a terminal, and human or JSON reports.

use indicatif::{ProgressBar, ProgressStyle};
use lxc_idshift::engine::idmap::{Direction, IdMap};
use lxc_idshift::engine::run::{Progress, ShiftReport};
use lxc_idshift::engine::status::StatusReport;
use lxc_idshift::engine::verify::{Finding, VerifyReport};
use lxc_idshift::lxc::check::CheckReport;
use lxc_idshift::lxc::mounts::Scan;
use std::io::IsTerminal;
use std::sync::Mutex;

/// A progress bar on stderr, drawn only on a terminal; updated once per batch.
pub struct Bar {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    pub fn new(wanted: bool) -> Bar {
        Bar {
            enabled: wanted && std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: Option<u64>) {
        if !self.enabled {
            return;
        }
        let (bar, template) = match total {
            Some(total) => (
                ProgressBar::new(total),
                "{msg:>9} [{bar:40}] {human_pos}/{human_len} inodes, {elapsed} (eta {eta})",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{msg:>9} {spinner} {human_pos} inodes, {elapsed}",
            ),
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(name.to_string());
        *self.bar.lock().expect("bar lock") = Some(bar);
    }

    fn advance(&self, inodes: u64) {
        if let Some(bar) = self.bar.lock().expect("bar lock").as_ref() {
            bar.inc(inodes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("bar lock").take() {
            bar.finish_and_clear();
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// How many failed paths a human report lists.
const LISTED_ERRORS: usize = 20;

pub fn shift_report(report: &ShiftReport, map: &IdMap, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    let s = &report.summary;
    let way = match report.direction {
        Direction::Forward => "container ids -> host ids",
        Direction::Reverse => "host ids -> container ids",
    };
    let verb = if report.dry_run {
        "Would shift"
    } else {
        "Shifted"
    };
    println!(
        "{verb} {} ({way}, {map}) in {:.2} s",
        report.root.display(),
        s.seconds
    );
    if let Some(note) = &report.note {
        println!("  {note}");
    }
    if report.resumed {
        println!("  (continued an interrupted run)");
    }
    let rows = [
        (
            "inodes seen",
            s.inodes_seen,
            format!("{:.0} inodes/s", s.inodes_per_second),
        ),
        ("changed", s.changed, String::new()),
        (
            "hardlinks",
            s.hardlinks,
            "extra names; each inode shifted once".into(),
        ),
        ("ACLs", s.acls, String::new()),
        ("capabilities", s.capabilities, String::new()),
        ("setuid/setgid restored", s.setid_restored, String::new()),
        (
            "unmapped",
            s.unmapped,
            "inodes with ids outside the map, left alone: nobody in the container".into(),
        ),
        (
            "mount points skipped",
            s.mount_points_skipped,
            String::new(),
        ),
        ("errors", s.errors, String::new()),
    ];
    for (label, value, note) in rows {
        let note = if note.is_empty() {
            note
        } else {
            format!("  ({note})")
        };
        println!("  {label:<24}{value:>10}{note}");
    }
    for mount in &report.mount_points {
        println!(
            "  skipped mount point {} (another file system: shift it separately)",
            mount.display()
        );
    }
    if let Some(journal) = &report.journal {
        let aside = if report.journal_archived {
            " (back where it started; put aside)"
        } else {
            ""
        };
        println!("  journal {}{aside}", journal.display());
    }
    print_errors(&report.error_paths, s.errors);
    if s.errors > 0 && !report.dry_run {
        eprintln!("Fix the causes above and run the same command again: it finishes the remaining inodes (or add --reverse to undo).");
    }
    Ok(())
}

fn print_errors(errors: &[lxc_idshift::engine::report::PathError], total: u64) {
    for e in errors.iter().take(LISTED_ERRORS) {
        eprintln!("  error: {}: {}", e.path.display(), e.message);
    }
    if total as usize > LISTED_ERRORS {
        eprintln!("  ... and {} more errors", total as usize - LISTED_ERRORS);
    }
}

pub fn verify_report(report: &VerifyReport, map: &IdMap, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    println!(
        "Verified {} inodes of {} against the host side of {map}",
        report.inodes_seen,
        report.root.display()
    );
    let kinds: [(&str, &Finding); 4] = [
        ("owner", &report.owner),
        ("group", &report.group),
        ("ACL entry", &report.acl),
        ("capability rootid", &report.capability),
    ];
    for (kind, finding) in kinds {
        println!("  {kind:<20}{:>10} outside", finding.count);
        for path in &finding.first_paths {
            println!("      {}", path.display());
        }
    }
    print_errors(&report.error_paths, report.errors);
    println!(
        "{}",
        if report.clean() {
            "OK: every id lies on the host side."
        } else {
            "NOT OK: see above."
        }
    );
    Ok(())
}

pub fn status_report(report: &StatusReport, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    println!("{}: {}", report.root.display(), report.state);
    println!("  journal {}", report.journal.display());
    if report.running {
        println!("  a run is in progress right now");
    }
    if let Some(maps) = &report.maps {
        println!("  maps {maps}; {} inodes recorded", report.records);
    }
    for (i, run) in report.runs.iter().enumerate() {
        let state = match (&run.done, run.scanned) {
            (Some(s), _) => format!(
                "finished: {} inodes, {} changed, {} errors",
                s.inodes_seen, s.changed, s.errors
            ),
            (None, Some(total)) => format!(
                "unfinished: {} of {total} inodes shifted at last note",
                run.progress
            ),
            (None, None) => "unfinished: interrupted while scanning (nothing changed yet)".into(),
        };
        println!("  run {}: {}, {state}", i + 1, run.direction);
    }
    if report.state == "unfinished" {
        println!("  Run the same shift command again to finish it, or with the other direction to undo it.");
    }
    Ok(())
}

pub fn check_report(report: &CheckReport, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    println!(
        "Container {} ({})",
        report.container,
        report.config.display()
    );
    match &report.range {
        Some(range) => println!(
            "  mode        unprivileged: root is host uid {}, gid {} ({})",
            range.uid_first,
            range.gid_first,
            report.maps.join(", ")
        ),
        None => println!("  mode        privileged: the container's root is the host's root"),
    }
    let method = match report.method {
        "idmap" => "idmap (the rootfs keeps container ids and is mounted idmapped)",
        _ => "shift (the rootfs holds the ids the container runs with)",
    };
    println!("  method      {method}");
    if let Some(range) = &report.range {
        let owned = |yes: bool| {
            if yes {
                "owned by root"
            } else {
                "NOT owned by root"
            }
        };
        println!(
            "  range       {} ids: /etc/subuid {}, /etc/subgid {}",
            range.count,
            owned(range.subuid_owned),
            owned(range.subgid_owned)
        );
    }
    let scanned = |scan: &Scan| {
        let mut text = format!("{} inodes, {} seen as nobody", scan.inodes, scan.nobody);
        if scan.errors > 0 {
            text += &format!(", {} unreadable", scan.errors);
        }
        text
    };
    match &report.rootfs_scan {
        Some(scan) => println!(
            "  rootfs      {}: {}",
            report.rootfs.display(),
            scanned(scan)
        ),
        None => println!("  rootfs      {}", report.rootfs.display()),
    }
    for mount in &report.mounts {
        let state = match &mount.scan {
            Some(scan) => scanned(scan),
            None => "source missing".into(),
        };
        println!(
            "  bind mount  {} -> {}{} ({}:{}): {state}",
            mount.source.display(),
            mount.target,
            if mount.idmapped { " (idmapped)" } else { "" },
            mount.file.display(),
            mount.line
        );
    }
    for device in &report.devices {
        println!(
            "  device      {} {}:{}{}, udev rule: {}",
            device.node.display(),
            device.uid,
            device.gid,
            if device.seen { "" } else { " (nobody inside)" },
            device.udev_rule.as_deref().unwrap_or("none")
        );
    }
    for note in &report.notes {
        println!("  note: {note}");
    }
    if report.ok() {
        println!("OK: no problem found; the container should start and work.");
        return Ok(());
    }
    println!("{} problem(s):", report.problems.len());
    for (i, problem) in report.problems.iter().enumerate() {
        println!("  {}. [{}] {}", i + 1, problem.kind.name(), problem.message);
        println!("     fix: {}", problem.fix);
    }
    Ok(())
}
