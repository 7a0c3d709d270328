//! The installed Debian package (scripts/build-deb.sh, then `dpkg -i`; .ci/run does
//! both): the binary in /usr/bin, `man lxc-idshift` with a section per subcommand of
//! the installed binary, and bash, zsh and fish completions where each shell looks
//! for them, completing container names from the lxcpath.

mod common;

use common::{require_root, skip, text};
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = "/usr/bin/lxc-idshift";
const BASH: &str = "/usr/share/bash-completion/completions/lxc-idshift";
const ZSH: &str = "/usr/share/zsh/vendor-completions/_lxc-idshift";
const FISH: &str = "/usr/share/fish/vendor_completions.d/lxc-idshift.fish";

/// True when the package is installed; otherwise says so loudly (a failure in CI).
fn installed(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    let status = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "lxc-idshift"])
        .output();
    if status.is_ok_and(|o| text(&o.stdout) == "install ok installed") {
        return true;
    }
    skip(&format!(
        "{test} needs the package installed (scripts/build-deb.sh, then dpkg -i target/debian/lxc-idshift_*.deb)"
    ));
    false
}

fn has(program: &str) -> bool {
    Command::new("which")
        .arg(program)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ok(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A temporary lxcpath holding fake containers (a directory with a `config`), and a
/// directory without one, which is no container.
fn lxcpath(names: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::create_dir(tmp.path().join(name)).unwrap();
        let config = format!("lxc.rootfs.path = dir:/var/lib/lxc/{name}/rootfs\n");
        std::fs::write(tmp.path().join(name).join("config"), config).unwrap();
    }
    std::fs::create_dir(tmp.path().join("not-a-container")).unwrap();
    tmp
}

/// The subcommands the installed binary's --help lists (but `help`).
fn subcommands() -> Vec<String> {
    let help = text(&ok(Command::new(BIN).arg("--help")).stdout);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

#[test]
fn the_package_installs_the_binary_man_page_and_completions() {
    if !installed("the_package_installs_the_binary_man_page_and_completions") {
        return;
    }
    let files = text(&ok(Command::new("dpkg").args(["-L", "lxc-idshift"])).stdout);
    for path in [BIN, BASH, ZSH, FISH, "/usr/share/man/man1/lxc-idshift.1.gz"] {
        assert!(
            files.lines().any(|l| l == path),
            "dpkg -L lxc-idshift lacks {path}:\n{files}"
        );
        assert!(Path::new(path).is_file(), "{path} is not installed");
    }
    let version = text(&ok(Command::new(BIN).arg("--version")).stdout);
    assert_eq!(
        version.trim(),
        format!("lxc-idshift {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `man lxc-idshift`: found by man-db, and a section for every subcommand the
/// installed binary has, with the exit status and the guarantees.
#[test]
fn man_lxc_idshift_follows_the_command_line() {
    if !installed("man_lxc_idshift_follows_the_command_line") {
        return;
    }
    let found = text(&ok(Command::new("man").args(["-w", "lxc-idshift"])).stdout);
    assert_eq!(found.trim(), "/usr/share/man/man1/lxc-idshift.1.gz");
    let page = ok(Command::new("man")
        .args(["-P", "cat", "lxc-idshift"])
        .env("MANWIDTH", "100"));
    let page = plain(&text(&page.stdout));
    let subcommands = subcommands();
    assert!(subcommands.len() >= 6, "{subcommands:?}");
    for sub in &subcommands {
        let heading = format!("\nlxc-idshift {sub}\n");
        assert!(
            page.contains(&heading),
            "no section {heading:?} in:\n{page}"
        );
    }
    for wanted in [
        "EXIT STATUS",
        "GUARANTEES",
        "-n, --name <NAME>",
        "-P, --lxcpath <DIR>",
        "--dry-run",
    ] {
        assert!(page.contains(wanted), "no {wanted:?} in:\n{page}");
    }
}

/// Text without the overstrikes (`X\bX` bold, `_\bX` underlined) of a man page.
fn plain(page: &str) -> String {
    let mut out = String::new();
    for c in page.chars() {
        match c {
            '\u{8}' => drop(out.pop()),
            c => out.push(c),
        }
    }
    out
}

/// Bash, through bash-completion's loader as an interactive shell would: `-n <TAB>`,
/// the shorthand's first word and `convert`'s NAME complete the containers of the
/// lxcpath given with -P.
#[test]
fn bash_completes_container_names() {
    if !installed("bash_completes_container_names") {
        return;
    }
    let tmp = lxcpath(&["jeedom1", "jeedom2", "web"]);
    let dir = tmp.path().to_str().unwrap();
    let loader = "/usr/share/bash-completion/bash_completion";
    let load = match Path::new(loader).exists() {
        true => format!("source {loader}; _completion_loader lxc-idshift"),
        false => {
            skip("bash-completion is not installed (.ci/run installs it); sourcing the file directly");
            format!("source {BASH}")
        }
    };
    let cases = [
        (format!("lxc-idshift -P {dir} -n j"), "jeedom1 jeedom2"),
        (
            format!("lxc-idshift -n jeedom1 --lxcpath {dir} --to 0 -P {dir} -n "),
            "jeedom1 jeedom2 web",
        ),
        (format!("lxc-idshift -P {dir} w"), "web"),
        (
            format!("lxc-idshift convert -P {dir} "),
            "jeedom1 jeedom2 web",
        ),
        ("lxc-idshift li".to_string(), "list"),
        ("lxc-idshift shift /tmp --dry".to_string(), "--dry-run"),
    ];
    for (line, expected) in cases {
        let script = format!(
            r#"{load}
complete -p lxc-idshift >&2
read -ra COMP_WORDS <<< "$LINE"
[[ $LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE=$LINE; COMP_POINT=${{#LINE}}
func=$(complete -p lxc-idshift | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
"$func" lxc-idshift "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}" | sort | tr '\n' ' '"#
        );
        let out = ok(Command::new("bash")
            .args(["-c", &script])
            .env("LINE", &line)
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin"));
        assert_eq!(
            text(&out.stdout).trim(),
            expected,
            "bash completion of {line:?} (stderr: {})",
            text(&out.stderr)
        );
    }
}

/// Fish completes container names; zsh's script is valid and completes NAME with
/// container names. Both from where the package puts them.
#[test]
fn fish_and_zsh_complete_container_names() {
    if !installed("fish_and_zsh_complete_container_names") {
        return;
    }
    let tmp = lxcpath(&["jeedom1", "web"]);
    let dir = tmp.path().to_str().unwrap();
    if has("fish") {
        for (line, expected) in [
            (format!("lxc-idshift -P {dir} -n "), "jeedom1 web"),
            (format!("lxc-idshift -P {dir} "), "jeedom1 web"),
            (format!("lxc-idshift convert --lxcpath {dir} j"), "jeedom1"),
        ] {
            // fish loads vendor completions by itself: nothing is sourced here.
            let out = ok(Command::new("fish").args(["-c", &format!("complete -C '{line}'")]));
            let mut got: Vec<String> = text(&out.stdout)
                .lines()
                .filter(|l| l.ends_with("\tcontainer"))
                .map(|l| l.split('\t').next().unwrap().to_string())
                .collect();
            got.sort();
            assert_eq!(got.join(" "), expected, "fish completion of {line:?}");
        }
    } else {
        skip("fish is not installed (.ci/run installs it)");
    }
    if has("zsh") {
        ok(Command::new("zsh").args(["-n", ZSH]));
        let script = std::fs::read_to_string(ZSH).unwrap();
        assert!(script.starts_with("#compdef lxc-idshift"), "{script}");
        assert!(
            script.contains(":NAME:_lxc_idshift_containers'"),
            "-n NAME does not complete containers:\n{script}"
        );
    } else {
        skip("zsh is not installed (.ci/run installs it)");
    }
}

/// `lxc-idshift list` from the package, on a fresh lxcpath.
#[test]
fn the_installed_binary_lists_containers() {
    if !installed("the_installed_binary_lists_containers") {
        return;
    }
    let tmp = lxcpath(&["jeedom1", "web"]);
    let out = ok(Command::new(BIN).args(["list", "-P"]).arg(tmp.path()));
    let table = text(&out.stdout);
    let names: Vec<&str> = table
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["NAME", "jeedom1", "web"], "{table}");
    assert!(table.lines().nth(1).unwrap().contains(" false "), "{table}");
}
