//! The command line.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "lxc-idshift",
    version,
    about = "Shift the uid/gid of every inode of a container's root filesystem, fast and losslessly",
    long_about = "Shift the uid/gid of every inode of a container's root filesystem between \
container ids and host (subordinate) ids: owners, groups, POSIX ACL entries and file \
capability rootids, keeping setuid/setgid bits and hardlinks. Every run is journaled: \
after an interruption, run the same command again to finish, or with --reverse to undo."
)]
pub struct Cli {
    /// Print nothing but errors (and what --json asks for): no plan, report or progress.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Shift every inode of DIR from container ids to host ids (or back with --reverse).
    Shift(ShiftArgs),
    /// Report inodes whose ids lie outside the host side of the map (read-only).
    Verify(VerifyArgs),
    /// Show what the journal of DIR records: unfinished or finished runs, maps, progress.
    Status(StatusArgs),
    /// Convert container NAME: `--to 1000000` makes it unprivileged with that host id
    /// range, `--to 0` privileged again (`lxc-idshift NAME --to ...` and
    /// `lxc-idshift -n NAME --to ...` are the same).
    #[command(after_long_help = CONVERT_NOTES)]
    Convert(ConvertArgs),
    /// List the containers under the lxcpath: state, privileged or not, id range,
    /// rootfs method, and whether a conversion is unfinished (like `lxc-ls -f`).
    #[command(after_long_help = LIST_NOTES)]
    List(ListArgs),
    /// Check container NAME, privileged or not (read-only): its mode, range and
    /// method, and every problem that would keep it from starting or working, each
    /// with the command that fixes it. Exit 0: fine; 1: problems; 2: cannot check.
    Check(CheckArgs),
    /// Build a sample rootfs in a temporary directory, shift it to 1000000 and back,
    /// and show that nothing was lost.
    Demo(DemoArgs),
    /// Write the man page or the shell completions (used to build the package).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

impl Command {
    /// Whether `--json` was asked for: a failure then prints a JSON error too.
    pub fn json(&self) -> bool {
        match self {
            Command::Shift(args) => args.json,
            Command::Verify(args) => args.json,
            Command::Status(args) => args.json,
            Command::Convert(args) => args.json,
            Command::List(args) => args.json,
            Command::Check(args) => args.json,
            Command::Demo(_) | Command::Generate(_) => false,
        }
    }
}

const CONVERT_NOTES: &str = "The container must be stopped (lxc-stop -n NAME). Checked first, \
changing nothing if a check fails: the container, its rootfs backend (dir, or mounted btrfs/zfs), \
the range (free of other users' subordinate ids, other containers' maps and host accounts). \
Then: /etc/subuid and /etc/subgid, the rootfs shift (journaled; none with --method idmap, \
whose idmapped mount is tried first), the config, permissions, udev rules for passed-through \
devices. Interrupted, the same command finishes it and \
--to the old value undoes it; `lxc-idshift list` shows unfinished conversions.";

const LIST_NOTES: &str = "Columns: NAME; STATE as lxc-info says it (RUNNING, STOPPED...); \
UNPRIVILEGED true or false; RANGE the host id of container root and the count (1000000:65536); \
METHOD the rootfs method (shift: ids shifted on disk; idmap: mounted with \
idmap=container), --json adds the backing store (dir, btrfs, zfs convert in place; overlay, \
lvm, loop... are refused, with the way out); UNFINISHED FROM->TO of a conversion left unfinished (0: privileged), \
with the command that finishes it on stderr.";

#[derive(Debug, Args)]
pub struct MapArgs {
    /// An id map: `b:0:1000000:65536` (u, g or b : container id : host id : count)
    /// or `"u 0 1000000 65536"`. Repeat for several ranges.
    #[arg(long = "map", short = 'm', required = true, value_name = "MAP")]
    pub maps: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShiftArgs {
    /// The root directory of the container's file system.
    pub dir: PathBuf,
    #[command(flatten)]
    pub map: MapArgs,
    /// Shift host ids back to container ids.
    #[arg(long, short = 'r')]
    pub reverse: bool,
    /// Walk and report what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Worker threads (default: eight per core, 16 to 64: a cold-cache walk waits on the disk).
    #[arg(long, short = 'j', value_name = "N")]
    pub threads: Option<usize>,
    /// The journal file (default: under /var/lib/lxc-idshift/).
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The root directory of the container's file system.
    pub dir: PathBuf,
    #[command(flatten)]
    pub map: MapArgs,
    /// Worker threads (default: eight per core, 16 to 64: a cold-cache walk waits on the disk).
    #[arg(long, short = 'j', value_name = "N")]
    pub threads: Option<usize>,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The directory tree whose journal to read.
    pub dir: PathBuf,
    /// The journal file (default: under /var/lib/lxc-idshift/).
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub container: ContainerName,
    /// Host id of the container's root: 0 (privileged), a host id such as 1000000,
    /// or auto (the lowest free range).
    #[arg(
        long,
        value_name = "HOSTID|0|auto",
        required_unless_present = "map",
        conflicts_with = "map"
    )]
    pub to: Option<String>,
    /// How many ids the container maps.
    #[arg(long, default_value_t = 65536, value_name = "COUNT")]
    pub range: u32,
    /// Host ids the container gets as themselves, with --to HOSTID or auto:
    /// `u:1000,g:1000` makes container user and group 1000 the host's 1000 (for a
    /// bind mount of that user's files where idmapped mounts do not work). The
    /// container's root then has full power over that host user's files.
    #[arg(
        long,
        value_name = "u:ID,g:ID",
        value_delimiter = ',',
        conflicts_with = "map"
    )]
    pub share_ids: Vec<String>,
    /// Instead of --to: the whole map, in LXC's or fuidshift's form, one piece per
    /// --map (`u:0:1000000:65536 --map g:0:2000000:65536` for user and group ranges
    /// apart). Pieces mapping an id onto itself share that host id.
    #[arg(long = "map", short = 'm', value_name = "MAP")]
    pub map: Vec<String>,
    /// Proxmox VE: take `pct snapshot VMID NAME` before the first change (where
    /// the container's storage can snapshot); rolling back to it gives the
    /// container as it was before the conversion, config included.
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,
    /// Where the containers live (default: `lxc-config lxc.lxcpath`, else /var/lib/lxc).
    #[arg(long, short = 'P', value_name = "DIR")]
    pub lxcpath: Option<PathBuf>,
    /// Print the whole plan (file diffs, permission changes, inode counts); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// A device node passed into the container, besides its lxc.mount.entry lines.
    #[arg(long = "device", value_name = "/dev/X")]
    pub devices: Vec<PathBuf>,
    /// Bind mounts of host paths, going unprivileged: `idmap` adds idmap=container to
    /// their entries (nothing on disk changes), `shift` shifts their directories with
    /// the rootfs (undone by --to 0), `keep` leaves them (their owners may show as
    /// nobody). Default: idmap where an idmapped mount works, else keep.
    #[arg(long, value_name = "idmap|shift|keep", value_parser = ["idmap", "shift", "keep"])]
    pub mounts: Option<String>,
    /// How the rootfs becomes unprivileged: `shift` shifts every inode to host ids
    /// once (any kernel; the rootfs stays self-contained), `idmap` leaves it as it is
    /// and has LXC mount it idmapped (lxc.rootfs.options = idmap=container; Linux
    /// 5.12+, LXC 5.0+, probed first). Default: the container's own method when it is
    /// unprivileged already, else shift. Not with --to 0.
    #[arg(long, value_name = "shift|idmap", value_parser = ["shift", "idmap"])]
    pub method: Option<String>,
    /// With --to 0: also remove root's subordinate id range from /etc/subuid and /etc/subgid.
    #[arg(long)]
    pub release_range: bool,
    /// Worker threads (default: eight per core, 16 to 64: a cold-cache walk waits on the disk).
    #[arg(long, short = 'j', value_name = "N")]
    pub threads: Option<usize>,
    /// Print the plan and the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the host's /etc, /sys and /dev are found (tests use a temporary root).
    #[arg(long, hide = true, default_value = "/", value_name = "DIR")]
    pub host_root: PathBuf,
}

/// A container named as `NAME` or as every lxc-* tool takes it, `-n NAME`.
#[derive(Debug, Args)]
pub struct ContainerName {
    /// The container's name (the same as -n NAME).
    #[arg(
        value_name = "NAME",
        required_unless_present = "name_opt",
        conflicts_with = "name_opt"
    )]
    pub name: Option<String>,
    /// The container's name, as every lxc-* tool takes it.
    #[arg(long = "name", short = 'n', value_name = "NAME", id = "name_opt")]
    pub name_opt: Option<String>,
}

impl ContainerName {
    /// The name, however given (clap requires exactly one form).
    pub fn get(&self) -> String {
        self.name_opt
            .clone()
            .or_else(|| self.name.clone())
            .expect("clap requires NAME or -n NAME")
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Where the containers live (default: `lxc-config lxc.lxcpath`, else /var/lib/lxc).
    #[arg(long, short = 'P', value_name = "DIR")]
    pub lxcpath: Option<PathBuf>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print only the names, one a line (for shell completion; fast, runs nothing).
    #[arg(long, conflicts_with = "json")]
    pub names: bool,
    /// Where the host's /etc is found (tests use a temporary root).
    #[arg(long, hide = true, default_value = "/", value_name = "DIR")]
    pub host_root: PathBuf,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: Generate,
}

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// lxc-idshift.1 in DIR.
    Man { dir: PathBuf },
    /// lxc-idshift (bash), _lxc-idshift (zsh) and lxc-idshift.fish in DIR.
    Completions { dir: PathBuf },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the sample rootfs instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub container: ContainerName,
    /// Where the containers live (default: `lxc-config lxc.lxcpath`, else /var/lib/lxc).
    #[arg(long, short = 'P', value_name = "DIR")]
    pub lxcpath: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Worker threads for the scans (default: eight per core, 16 to 64).
    #[arg(long, short = 'j', value_name = "N")]
    pub threads: Option<usize>,
    /// Where the host's /etc, /sys and /dev are found (tests use a temporary root).
    #[arg(long, hide = true, default_value = "/", value_name = "DIR")]
    pub host_root: PathBuf,
}
