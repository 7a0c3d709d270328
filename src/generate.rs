//! `lxc-idshift generate man|completions DIR`: the man page and the shell completions,
//! generated from the clap definitions, so a new subcommand or option appears in
//! both without anyone writing it down. The package build (scripts/build-deb.sh)
//! runs it.

use crate::cli::{Cli, Generate};
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

const NAME: &str = "lxc-idshift";

pub fn run(what: Generate) -> anyhow::Result<u8> {
    let written = match what {
        Generate::Man { dir } => vec![write(&dir, "lxc-idshift.1", &man()?)?],
        Generate::Completions { dir } => [Shell::Bash, Shell::Zsh, Shell::Fish]
            .into_iter()
            .map(|shell| write(&dir, &completion_file(shell), &completion(shell)))
            .collect::<anyhow::Result<_>>()?,
    };
    for path in written {
        crate::output::say!("{}", path.display());
    }
    Ok(0)
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| anyhow::anyhow!("{}: {e}; name a writable directory", path.display()))?;
    Ok(path)
}

/// The command line as users see it: hidden subcommands (this one) left out.
fn command() -> clap::Command {
    command_named(NAME)
}

fn command_named(name: &'static str) -> clap::Command {
    let full = Cli::command();
    let mut command = clap::Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .long_about(full.get_long_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned())
        .subcommand_required(true)
        .disable_help_subcommand(true);
    command.build();
    command
}

fn visible_subcommands(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command.get_subcommands().filter(|c| !c.is_hide_set())
}

/// The file name each shell looks for.
pub fn completion_file(shell: Shell) -> String {
    match shell {
        Shell::Zsh => format!("_{NAME}"),
        Shell::Fish => format!("{NAME}.fish"),
        _ => NAME.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The man page: lxc-idshift(1).
// ---------------------------------------------------------------------------

/// Renders one section of `man` and drops its `.SH` heading line.
fn body(
    man: &clap_mangen::Man,
    section: fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>,
) -> anyhow::Result<String> {
    let mut out = Vec::new();
    section(man, &mut out)?;
    let text = String::from_utf8(out)?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with(".SH"))
        .map(|line| format!("{line}\n"))
        .collect())
}

/// lxc-idshift(1): name, synopsis, description, the global options, one section per
/// subcommand (its synopsis, description, options and notes), then the exit status,
/// the guarantees, files and related pages.
pub fn man() -> anyhow::Result<String> {
    let command = command();
    let man = clap_mangen::Man::new(command.clone()).manual("LXC");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    let mut text = String::from_utf8(out)?;
    text += ".SH SYNOPSIS\n";
    text += &format!(
        ".B {NAME}\n[\\fB\\-n\\fR] \\fINAME\\fR \\fB\\-\\-to\\fR \\fIHOSTID\\fR|\\fB0\\fR|\\fBauto\\fR [\\fIOPTIONS\\fR]\n.br\n"
    );
    for sub in visible_subcommands(&command) {
        text += &format!(
            ".B {NAME} {}\n[\\fIOPTIONS\\fR]{}\n.br\n",
            sub.get_name(),
            positionals(sub)
        );
    }
    text += ".SH DESCRIPTION\n";
    text += &body(&man, clap_mangen::Man::render_description_section)?;
    text += DESCRIPTION;
    text += ".SH OPTIONS\n";
    text += &body(&man, clap_mangen::Man::render_options_section)?;
    for sub in visible_subcommands(&command) {
        // The global options are described once, above.
        let sub = sub.clone().mut_arg("quiet", |a| a.hide(true));
        let sub_man = clap_mangen::Man::new(sub.clone());
        text += &format!(".SH \"{NAME} {}\"\n", sub.get_name());
        text += &body(&sub_man, clap_mangen::Man::render_synopsis_section)?;
        text += ".PP\n";
        text += &body(&sub_man, clap_mangen::Man::render_description_section)?;
        text += &body(&sub_man, clap_mangen::Man::render_options_section)?;
        if sub.get_after_long_help().is_some() {
            text += ".PP\n";
            text += &body(&sub_man, clap_mangen::Man::render_extra_section)?;
        }
    }
    text += TRAILER;
    text += &format!(".SH VERSION\n{}\n", env!("CARGO_PKG_VERSION"));
    Ok(text)
}

/// ` DIR`, ` NAME`...: the positionals of a subcommand, for the synopsis.
fn positionals(sub: &clap::Command) -> String {
    sub.get_positionals()
        .filter(|a| !a.is_hide_set())
        .map(|a| {
            let name = a
                .get_value_names()
                .and_then(|v| v.first())
                .map_or_else(|| a.get_id().to_string().to_uppercase(), |v| v.to_string());
            format!(" \\fI{name}\\fR")
        })
        .collect()
}

const DESCRIPTION: &str = r#".PP
\fBlxc\-idshift\fR \fINAME\fR \fB\-\-to\fR \fIHOSTID\fR (or \fB\-n\fR \fINAME\fR, as every
\fBlxc\-*\fR tool names a container) is \fBlxc\-idshift convert\fR: it turns a privileged
LXC container into an unprivileged one whose root is host uid \fIHOSTID\fR, or back
with \fB\-\-to 0\fR. Everything is checked first and nothing is changed if a check
fails; then /etc/subuid and /etc/subgid give root the range, the root filesystem is
shifted (journaled in the container's directory), the config gains the userns include
and the \fBlxc.idmap\fR lines, the container's directory gets the permissions an
unprivileged container needs, and passed\-through devices get a udev rule.
\fB\-\-dry\-run\fR prints all of it, changing nothing.
"#;

const TRAILER: &str = r#".SH "EXIT STATUS"
.TP
.B 0
Done (or, for \fBverify\fR, every id lies on the host side).
.TP
.B 1
Finished, but some inodes could not be shifted: they are listed with their paths;
fix the cause and run the same command again. For \fBverify\fR: ids outside the map.
.TP
.B 2
Refused or stopped before finishing: the message says why and names the command to
run next.
.SH GUARANTEES
.IP \(bu 2
Forward moves ids inside the container range to the matching host ids; \fB\-\-reverse\fR
(and \fB\-\-to 0\fR) is its exact inverse. Owners, groups, POSIX ACL entries and the
rootid of file capabilities are shifted; setuid and setgid bits, hardlinks and every
other extended attribute are kept.
.IP \(bu 2
Nothing outside the tree is ever changed: every inode is reached through an
O_PATH|O_NOFOLLOW handle relative to its parent, never by following a symlink, even
while the tree is renamed under the run. Other mounts inside the tree are left alone.
.IP \(bu 2
Refusals come before any change: overlapping or invalid maps, the host's own root or
/etc or /usr, a journal inside the tree, a second run on the same tree, a running
container, a range holding another container's map, another user's subordinate ids
or a host account.
.IP \(bu 2
Crash safety: after SIGKILL or a power cut, the same command finishes with exactly the
result of an uninterrupted run, and the other direction restores exactly the original
metadata. \fBlxc\-idshift list\fR shows unfinished conversions with the command that
finishes them.
.IP \(bu 2
One odd inode (immutable, read\-only, unreadable ACL) never stops the walk and is never
half\-shifted: it is reported with its path and the exit status is 1.
.SH FILES
.TP
.I /etc/subuid\fR, \fI/etc/subgid
Root's subordinate id ranges, edited under shadow's locks.
.TP
.I LXCPATH/NAME/lxc\-idshift.state.json
Where a conversion comes from and where it heads, written before its first change.
.TP
.I LXCPATH/NAME/lxc\-idshift.*.journal
The journal of a container's rootfs shift.
.TP
.I /var/lib/lxc\-idshift/
The journals of \fBshift\fR runs on other trees.
.TP
.I /run/lock/lxc\-idshift.lock
Serializes conversions host\-wide.
.TP
.I /etc/udev/rules.d/99\-lxc\-idshift\-NAME.rules
Ownership of devices passed into container NAME.
.SH "SEE ALSO"
.BR lxc\-ls (1),
.BR lxc\-start (1),
.BR lxc\-stop (1),
.BR lxc\-info (1),
.BR lxc.container.conf (5),
.BR subuid (5),
.BR subgid (5)
"#;

// ---------------------------------------------------------------------------
// Shell completions: clap_complete's, plus container names from the lxcpath.
// ---------------------------------------------------------------------------

/// The completion script for `shell`: clap_complete's from the clap definitions, then
/// a small hand-written part that completes container names (after `-n`/`--name`,
/// as the first word and as `convert`'s NAME) with `lxc-idshift list --names`,
/// honouring a `-P DIR` / `--lxcpath DIR` given on the line.
pub fn completion(shell: Shell) -> String {
    let mut out = Vec::new();
    // clap_complete's bash script mangles a hyphenated name inconsistently (its
    // subcommand cases never match), so bash gets one without the hyphen; the
    // `complete` line is ours.
    let name = match shell {
        Shell::Bash => "lxcidshift",
        _ => NAME,
    };
    clap_complete::generate(shell, &mut command_named(name), name, &mut out);
    let generated = String::from_utf8(out).expect("completions are UTF-8");
    match shell {
        Shell::Bash => {
            let tail = "\nif [[ \"${BASH_VERSINFO[0]}\" -eq 4";
            let generated = generated.split(tail).next().unwrap_or_default();
            // clap_complete's function (`_lxcidshift`), which ours calls for the rest.
            let function = generated
                .lines()
                .find_map(|l| l.strip_suffix("() {"))
                .expect("clap_complete's bash function");
            let names = BASH_NAMES.replace("CLAP_FUNCTION", function);
            // Hidden options stay out of sight (clap_complete offers them).
            let generated: String = generated
                .lines()
                .map(|line| match line.trim_start().starts_with("opts=") {
                    true => format!("{}\n", line.replace(" --host-root", "")),
                    false => format!("{line}\n"),
                })
                .collect();
            format!("{generated}{names}")
        }
        Shell::Zsh => zsh(&generated),
        Shell::Fish => generated + FISH_NAMES,
        _ => generated,
    }
}

const BASH_NAMES: &str = r#"
# Container names, from `lxc-idshift list --names` (honouring -P/--lxcpath).
_lxc_idshift_containers() {
    local i lxcpath=()
    for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
        case "${COMP_WORDS[i]}" in
            -P|--lxcpath) lxcpath=(-P "${COMP_WORDS[i+1]}") ;;
            --lxcpath=*) lxcpath=(-P "${COMP_WORDS[i]#--lxcpath=}") ;;
        esac
    done
    lxc-idshift list --names "${lxcpath[@]}" 2>/dev/null
}

_lxc_idshift() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local i words=0 convert=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -P|--lxcpath|-n|--name|--to|--range|--device|-j|--threads) ((i++)) ;;
            -*) ;;
            *) ((words++)); [[ $words == 1 && ${COMP_WORDS[i]} == convert ]] && convert=1 ;;
        esac
    done
    if [[ $prev == -n || $prev == --name ]] ||
        [[ $cur != -* && ( $words == 0 || ( $convert == 1 && $words == 1 ) ) ]]; then
        local names
        names=$(_lxc_idshift_containers)
        if [[ $prev == -n || $prev == --name || $convert == 1 ]]; then
            COMPREPLY=($(compgen -W "$names" -- "$cur"))
            return 0
        fi
        # The first word: a subcommand or a container name (the convert shorthand).
        CLAP_FUNCTION "$@"
        COMPREPLY+=($(compgen -W "$names" -- "$cur"))
        return 0
    fi
    CLAP_FUNCTION "$@"
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _lxc_idshift -o nosort -o bashdefault -o default lxc-idshift
else
    complete -F _lxc_idshift -o bashdefault -o default lxc-idshift
fi
"#;

const FISH_NAMES: &str = r#"
# Container names, from `lxc-idshift list --names` (honouring -P/--lxcpath).
function __lxc_idshift_containers
    set -l tokens (commandline -opc)
    set -l lxcpath
    for i in (seq (count $tokens))
        switch $tokens[$i]
            case -P --lxcpath
                set -l next (math $i + 1)
                if test $next -le (count $tokens)
                    set lxcpath -P $tokens[$next]
                end
            case '--lxcpath=*'
                set lxcpath -P (string replace -- --lxcpath= '' $tokens[$i])
        end
    end
    lxc-idshift list --names $lxcpath 2>/dev/null
end
# No word yet but options and their values: `lxc-idshift [-P DIR] NAME --to ...`.
function __lxc_idshift_no_word
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l skip 0
    for token in $tokens
        if test $skip = 1
            set skip 0
        else if contains -- $token -P --lxcpath -n --name --to --range --device -j --threads
            set skip 1
        else if not string match -q -- '-*' $token
            return 1
        end
    end
    return 0
end
complete -c lxc-idshift -n "__lxc_idshift_no_word" -f -a "(__lxc_idshift_containers)" -d container
complete -c lxc-idshift -n "__lxc_idshift_no_word" -s P -l lxcpath -r -F -d 'Where the containers live'
complete -c lxc-idshift -n "__fish_seen_subcommand_from convert" -f -a "(__lxc_idshift_containers)" -d container
complete -c lxc-idshift -s n -l name -x -a "(__lxc_idshift_containers)" -d container
"#;

/// clap_complete's zsh function, with container names where a NAME is asked for.
fn zsh(generated: &str) -> String {
    const FUNCTION: &str = r#"
# Container names, from `lxc-idshift list --names` (honouring -P/--lxcpath).
(( $+functions[_lxc_idshift_containers] )) ||
_lxc_idshift_containers() {
    local -a lxcpath names
    local i
    for ((i = 1; i < ${#words[@]}; i++)); do
        case "${words[i]}" in
            -P|--lxcpath) lxcpath=(-P "${words[i+1]}") ;;
            --lxcpath=*) lxcpath=(-P "${words[i]#--lxcpath=}") ;;
        esac
    done
    names=(${(f)"$(lxc-idshift list --names "${lxcpath[@]}" 2>/dev/null)"})
    _describe -t containers 'container' names
}
"#;
    let text = generated
        .lines()
        .map(|line| {
            // `-n+[...]:NAME:_default` and `::name -- ...:_default` become container names.
            let names_a_container = line.contains(":NAME:_default")
                || line.contains("'::name -- ")
                || line.contains("':name -- ");
            match names_a_container {
                true => line.replace(":_default'", ":_lxc_idshift_containers'"),
                false => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    // Functions go before the `compdef`/autoload tail of the generated script.
    match text.find("\nif [ \"$funcstack[1]\" = \"_lxc-idshift\" ]") {
        Some(at) => format!("{}\n{FUNCTION}{}\n", &text[..at], &text[at..]),
        None => format!("{text}\n{FUNCTION}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_has_a_section_per_subcommand() {
        let page = man().unwrap();
        for sub in visible_subcommands(&command()) {
            let heading = format!(".SH \"lxc-idshift {}\"", sub.get_name());
            assert!(page.contains(&heading), "no {heading} in:\n{page}");
        }
        assert!(
            !page.contains("generate"),
            "hidden subcommand shown:\n{page}"
        );
        for section in ["EXIT STATUS", "GUARANTEES", "SEE ALSO"] {
            assert!(page.contains(section), "no {section}");
        }
        assert!(page.contains("\\-\\-lxcpath"), "{page}");
    }

    #[test]
    fn completions_complete_container_names() {
        let bash = completion(Shell::Bash);
        assert!(bash.contains("complete -F _lxc_idshift "), "{bash}");
        let zsh = completion(Shell::Zsh);
        assert!(zsh.contains(":NAME:_lxc_idshift_containers'"), "{zsh}");
        assert!(zsh.contains(":_lxc_idshift_containers'"), "{zsh}");
        let fish = completion(Shell::Fish);
        assert!(
            fish.contains("-l name -x -a \"(__lxc_idshift_containers)\""),
            "{fish}"
        );
        for text in [&bash, &zsh, &fish] {
            assert!(!text.contains("generate"), "hidden subcommand completed");
        }
    }
}
