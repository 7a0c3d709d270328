//! A unified diff of two texts, for the plans `--dry-run` shows (config files, udev
//! rules): the lines of each change with three lines of context around it.

use std::path::Path;

/// Lines of context around each change in `render_diff`.
const CONTEXT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Keep,
    Delete,
    Add,
}

/// A unified diff of `old` and `new` (for `--dry-run` plans), headed by `path`;
/// empty when the texts are equal.
pub fn render_diff(path: &Path, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = diff_ops(&a, &b);
    let mut out = format!("--- {0}\n+++ {0}\n", path.display());
    for (start, end) in hunks(&ops) {
        render_hunk(&mut out, &ops[start..end], &a, &b, position(&ops[..start]));
    }
    out
}

/// The edit script turning `a` into `b`, from a longest common subsequence
/// (quadratic, fine for config-sized files).
fn diff_ops(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: length of the LCS of a[i..] and b[j..]
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut ops) = (0, 0, Vec::with_capacity(n + m));
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Keep);
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(Op::Delete);
            i += 1;
        } else {
            ops.push(Op::Add);
            j += 1;
        }
    }
    ops
}

/// Lines of old and new text consumed by `ops`.
fn position(ops: &[Op]) -> (usize, usize) {
    let old = ops.iter().filter(|&&o| o != Op::Add).count();
    let new = ops.iter().filter(|&&o| o != Op::Delete).count();
    (old, new)
}

/// `[start, end)` op ranges of the hunks: changes with CONTEXT kept lines around
/// them, merged when their contexts touch.
fn hunks(ops: &[Op]) -> Vec<(usize, usize)> {
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for (i, _) in ops.iter().enumerate().filter(|(_, &o)| o != Op::Keep) {
        let start = i.saturating_sub(CONTEXT);
        let end = (i + 1 + CONTEXT).min(ops.len());
        match hunks.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => hunks.push((start, end)),
        }
    }
    hunks
}

fn render_hunk(out: &mut String, ops: &[Op], a: &[&str], b: &[&str], at: (usize, usize)) {
    let (old_len, new_len) = position(ops);
    // Unified diff numbers lines from 1; an empty side names the line before it.
    let first = |at: usize, len: usize| if len == 0 { at } else { at + 1 };
    out.push_str(&format!(
        "@@ -{},{old_len} +{},{new_len} @@\n",
        first(at.0, old_len),
        first(at.1, new_len)
    ));
    let (mut i, mut j) = at;
    for op in ops {
        let (mark, line) = match op {
            Op::Keep => (' ', a[i]),
            Op::Delete => ('-', a[i]),
            Op::Add => ('+', b[j]),
        };
        if *op != Op::Add {
            i += 1;
        }
        if *op != Op::Delete {
            j += 1;
        }
        out.push(mark);
        match line.strip_suffix('\n') {
            Some(text) => out.push_str(text),
            None => out.push_str(&format!("{line}\n\\ No newline at end of file")),
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_diff_edge_cases() {
        let diff = render_diff(Path::new("c"), "a\nb\nc\n", "a\nB\nc");
        assert_eq!(
            diff,
            "--- c\n+++ c\n@@ -1,3 +1,3 @@\n a\n-b\n-c\n+B\n+c\n\\ No newline at end of file\n"
        );
        assert_eq!(
            render_diff(Path::new("c"), "", "x\n"),
            "--- c\n+++ c\n@@ -0,0 +1,1 @@\n+x\n"
        );
        let old: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let new: String = (1..=20)
            .map(|i| match i {
                2 => "two\n".to_string(),
                19 => "nineteen\n".to_string(),
                _ => format!("{i}\n"),
            })
            .collect();
        let diff = render_diff(Path::new("c"), &old, &new);
        assert_eq!(diff.matches("@@ -").count(), 2, "{diff}");
        assert!(
            diff.contains("@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n"),
            "{diff}"
        );
        assert!(
            diff.contains("@@ -16,5 +16,5 @@\n 16\n 17\n 18\n-19\n+nineteen\n 20\n"),
            "{diff}"
        );
    }
}
