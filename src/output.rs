//! What the binary prints: progress on a terminal, and human or JSON reports.

use indicatif::{ProgressBar, ProgressStyle};
use lxc_idshift::engine::status::JournalState;
use lxc_idshift::engine::verify::Finding;
use lxc_idshift::lxc::hostmap::HostMap;
use lxc_idshift::lxc::mounts::Scan;
use lxc_idshift::VerifyReport;
use lxc_idshift::{CheckReport, Direction, IdMap, Progress, ShiftReport, StatusReport};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static QUIET: AtomicBool = AtomicBool::new(false);

/// `-q`: human reports and progress are not printed; errors and `--json` are.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// `out!` (println) unless `-q`.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::output::quiet() {
            out!($($arg)*);
        }
    };
}
pub(crate) use say;

/// A progress bar on stderr, drawn only on a terminal; updated once per batch.
pub struct Bar {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    pub fn new(wanted: bool) -> Bar {
        Bar {
            enabled: wanted && !quiet() && std::io::stderr().is_terminal(),
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

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `--json` when a command fails: the message as on stderr, and for a failed
/// operation on a path that path, the operation and the errno's name (EACCES,
/// EROFS...), as a shift report's `error_paths` entries carry them.
#[derive(serde::Serialize)]
pub struct ErrorReport<'a> {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a std::path::Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<&'static str>,
}

impl<'a> ErrorReport<'a> {
    pub fn new(error: String, cause: &'a anyhow::Error) -> ErrorReport<'a> {
        let file = cause
            .chain()
            .find_map(|e| e.downcast_ref::<lxc_idshift::FileError>());
        let errno = cause
            .chain()
            .filter_map(|e| e.downcast_ref::<std::io::Error>())
            .find_map(|e| e.raw_os_error())
            .and_then(lxc_idshift::engine::report::errno_name);
        ErrorReport {
            error,
            path: file.map(|f| f.path.as_path()),
            operation: file.map(|f| f.operation.as_ref()),
            errno,
        }
    }
}

/// How many failed paths a human report lists.
const LISTED_ERRORS: usize = 20;

pub fn shift_report(report: &ShiftReport, json: bool) -> anyhow::Result<()> {
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
    say!(
        "{verb} {} ({way}, {}) in {:.2} s",
        report.root.display(),
        report.map,
        s.seconds
    );
    if let Some(note) = &report.note {
        say!("  {note}");
    }
    if report.resumed {
        say!("  (continued an interrupted run)");
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
        say!("  {label:<24}{value:>10}{note}");
    }
    for mount in &report.mount_points {
        say!(
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
        say!("  journal {}{aside}", journal.display());
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
    say!(
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
        say!("  {kind:<20}{:>10} outside", finding.count);
        for path in &finding.first_paths {
            say!("      {}", path.display());
        }
    }
    print_errors(&report.error_paths, report.errors);
    say!(
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
    say!("{}: {}", report.root.display(), report.state);
    say!("  journal {}", report.journal.display());
    if report.running {
        say!("  a run is in progress right now");
    }
    if let Some(maps) = &report.maps {
        say!("  maps {maps}; {} inodes recorded", report.records);
    }
    for (i, run) in report.runs.iter().enumerate() {
        let state = match (&run.done, run.writing) {
            (Some(s), _) => format!(
                "finished: {} inodes, {} changed, {} errors",
                s.inodes_seen, s.changed, s.errors
            ),
            (None, true) => format!(
                "unfinished: at least {} inodes walked at last note",
                run.progress
            ),
            (None, false) => "unfinished: interrupted before its first change".into(),
        };
        say!("  run {}: {}, {state}", i + 1, run.direction);
    }
    if report.state == JournalState::Unfinished {
        say!("  Run the same shift command again to finish it, or with the other direction to undo it.");
    }
    Ok(())
}

/// `list`: the table of `lxc-ls -f` style, then a line per container that needs
/// attention, naming the command to run (on stderr: problems).
pub fn list_report(
    lxcpath: &std::path::Path,
    entries: &[lxc_idshift::lxc::list::Entry],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        #[derive(serde::Serialize)]
        struct Listing<'a> {
            lxcpath: &'a std::path::Path,
            containers: &'a [lxc_idshift::lxc::list::Entry],
        }
        return print_json(&Listing {
            lxcpath,
            containers: entries,
        });
    }
    if !entries.is_empty() {
        say!("{}", lxc_idshift::lxc::list::table(entries).trim_end());
    }
    for entry in entries {
        if let Some(unfinished) = &entry.unfinished {
            eprintln!(
                "{}: a conversion is unfinished: run {}",
                entry.name, unfinished.next
            );
        }
        if let Some(problem) = &entry.problem {
            eprintln!("{}: {problem}", entry.name);
        }
        if let Some(manager) = &entry.managed_by {
            eprintln!("{}: {manager}", entry.name);
        }
    }
    Ok(())
}

/// `convert --json`: the plan, and what was done.
#[derive(serde::Serialize)]
pub struct ConvertReport<'a> {
    pub container: &'a str,
    pub lxcpath: &'a std::path::Path,
    pub rootfs: &'a std::path::Path,
    pub dry_run: bool,
    /// "planned" (--dry-run), "done", or "unfinished" (see `next`).
    pub result: ConvertResult,
    /// Host id of container root before and after; null: privileged.
    pub from: Option<u32>,
    pub to: Option<u32>,
    /// The container's map before and after, as lxc.idmap values; null: privileged.
    pub map_before: Option<Vec<String>>,
    pub map_after: Option<Vec<String>>,
    /// The rootfs method after: "shift" or "idmap"; null when privileged.
    pub method: Option<&'static str>,
    /// Whether an idmapped rootfs works on this host (probed for --method idmap
    /// and --dry-run; null when not probed), and why not.
    pub idmap_works: Option<bool>,
    pub idmap_unsupported: Option<String>,
    pub range: u32,
    /// The rootfs shift: its map and direction; null when nothing shifts.
    pub map: Option<String>,
    pub direction: Option<String>,
    /// Each file written (or that --dry-run would write), with its diff.
    pub edits: Vec<EditReport>,
    pub permissions: Vec<String>,
    pub devices: &'a [lxc_idshift::lxc::convert::DeviceOwner],
    /// systemd units masked in the rootfs (they cannot work unprivileged) and
    /// unmasked (going privileged).
    pub units_masked: &'a [String],
    pub units_unmasked: &'a [String],
    /// Rootfs owners and groups beyond the range: id -> inodes.
    pub unmapped: &'a lxc_idshift::lxc::unmapped::UnmappedIds,
    pub shift: Option<&'a ShiftReport>,
    pub udev_reloaded: Option<bool>,
    /// The command to run next, when one is needed.
    pub next: Option<String>,
    /// "lxc", or "proxmox" (a Proxmox VE container, converted through its `.conf`).
    pub flavour: &'static str,
    /// Trees shifted beside the rootfs, each with its own journal: bind mount
    /// sources (`--mounts shift`), a Proxmox container's volumes.
    pub trees: &'a [std::path::PathBuf],
    /// `--snapshot`: the Proxmox snapshot taken before the first change.
    pub snapshot: Option<&'a str>,
    /// What the plan says besides: bind mounts and devices left as they are,
    /// what works only privileged, ranges shared.
    pub notes: Vec<&'a str>,
}

/// How far a conversion got, as `convert --json` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvertResult {
    /// `--dry-run`: nothing was changed.
    Planned,
    Done,
    /// The rootfs shift left errors: `next` says what to run.
    Unfinished,
}

#[derive(serde::Serialize)]
pub struct EditReport {
    pub path: std::path::PathBuf,
    pub diff: String,
}

impl<'a> ConvertReport<'a> {
    pub fn new(
        plan: &'a lxc_idshift::lxc::convert::Plan,
        dry_run: bool,
        shift: Option<&'a ShiftReport>,
    ) -> ConvertReport<'a> {
        use lxc_idshift::diff::render_diff;
        use lxc_idshift::lxc::convert::Flavour;
        use lxc_idshift::lxc::perms;
        let edits = plan
            .edits
            .iter()
            .chain(plan.udev_rules.iter())
            .map(|e| EditReport {
                path: e.path.clone(),
                diff: render_diff(
                    &e.path,
                    e.old.as_deref().unwrap_or(""),
                    e.new.as_deref().unwrap_or(""),
                ),
            })
            .collect();
        ConvertReport {
            container: &plan.container.name,
            lxcpath: &plan.container.lxcpath,
            rootfs: &plan.rootfs,
            dry_run,
            result: match dry_run {
                true => ConvertResult::Planned,
                false => ConvertResult::Done,
            },
            from: plan.before.root(),
            to: plan.after.root(),
            map_before: plan.before.map.as_ref().map(HostMap::lxc_lines),
            map_after: plan.after.map.as_ref().map(HostMap::lxc_lines),
            method: plan.after.map.as_ref().map(|_| plan.after.method.name()),
            idmap_works: plan.idmap_probe.as_ref().map(Result::is_ok),
            idmap_unsupported: plan.idmap_probe.clone().and_then(Result::err),
            range: plan.range,
            map: plan.shift.as_ref().map(|(map, _)| map.to_string()),
            direction: plan.shift.as_ref().map(|(_, d)| d.to_string()),
            edits,
            permissions: plan.perms.iter().map(perms::describe).collect(),
            devices: &plan.device_owners,
            units_masked: &plan.units.mask,
            units_unmasked: &plan.units.unmask,
            unmapped: &plan.unmapped,
            shift,
            udev_reloaded: None,
            next: None,
            flavour: match plan.flavour {
                Flavour::Lxc => "lxc",
                Flavour::Proxmox { .. } => "proxmox",
            },
            trees: &plan.mount_shifts,
            snapshot: match &plan.flavour {
                Flavour::Proxmox { snapshot, .. } => snapshot.as_deref(),
                Flavour::Lxc => None,
            },
            notes: (plan.mount_notes.iter().chain(&plan.notes))
                .map(String::as_str)
                .collect(),
        }
    }
}

pub fn check_report(report: &CheckReport, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    out!(
        "Container {} ({})",
        report.container,
        report.config.display()
    );
    match &report.range {
        Some(range) => out!(
            "  mode        unprivileged: root is host uid {}, gid {} ({})",
            range.uid_first,
            range.gid_first,
            report.maps.join(", ")
        ),
        None => out!("  mode        privileged: the container's root is the host's root"),
    }
    let method = match report.method {
        "idmap" => "idmap (the rootfs keeps container ids and is mounted idmapped)",
        _ => "shift (the rootfs holds the ids the container runs with)",
    };
    out!("  method      {method}");
    if let Some(range) = &report.range {
        let owned = |yes: bool| {
            if yes {
                "owned by root"
            } else {
                "NOT owned by root"
            }
        };
        out!(
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
        Some(scan) => out!(
            "  rootfs      {}: {}",
            report.rootfs.display(),
            scanned(scan)
        ),
        None => out!("  rootfs      {}", report.rootfs.display()),
    }
    for mount in &report.mounts {
        let state = match &mount.scan {
            Some(scan) => scanned(scan),
            None => "source missing".into(),
        };
        out!(
            "  bind mount  {} -> {}{} ({}:{}): {state}",
            mount.source.display(),
            mount.target,
            if mount.idmapped { " (idmapped)" } else { "" },
            mount.file.display(),
            mount.line
        );
    }
    for device in &report.devices {
        out!(
            "  device      {} {}:{}{}, udev rule: {}",
            device.node.display(),
            device.uid,
            device.gid,
            if device.seen { "" } else { " (nobody inside)" },
            device.udev_rule.as_deref().unwrap_or("none")
        );
    }
    for note in &report.notes {
        out!("  note: {note}");
    }
    if report.ok() {
        out!("OK: no problem found; the container should start and work.");
        return Ok(());
    }
    out!("{} problem(s):", report.problems.len());
    for (i, problem) in report.problems.iter().enumerate() {
        out!("  {}. [{}] {}", i + 1, problem.kind.name(), problem.message);
        out!("     fix: {}", problem.fix);
    }
    Ok(())
}
