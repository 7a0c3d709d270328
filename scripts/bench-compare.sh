#!/usr/bin/env bash
# Times a forward + reverse round trip of a ~300,000-inode tree with lxc-idshift,
# the safe_floor baseline (only the system calls a safe shift cannot do without),
# fuidshift (LXD, Debian's lxd-tools), systemd-nspawn (systemd-container), the
# bare_lchown baseline (with and without a sync) and chown -hR; prints a markdown
# table. Tools that are not installed are skipped.
# Run as root from anywhere:  scripts/bench-compare.sh [INODES] [RUNS]
# DROP_CACHES=1 drops the page cache before every run (affects the whole machine).
# OLD_KERNEL=1 runs lxc-idshift as on a kernel before 6.6 (its fallbacks).
# SHAPE=hardlinks builds INODES files with two names each, in two flat directories,
# instead of the rootfs-like tree.
set -euo pipefail

INODES=${1:-300000}
RUNS=${2:-3}
MAP=b:0:1000000:65536
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-compare: must run as root (chown of every inode)" >&2
    exit 2
fi

echo "== building release binaries" >&2
cargo build --release --bin lxc-idshift --example mktree --example bare_lchown \
    --example safe_floor --example as_old_kernel >&2
TARGET=${CARGO_TARGET_DIR:-target}/release
IDSHIFT=$(realpath "$TARGET/lxc-idshift")
FLOOR=$(realpath "$TARGET/examples/safe_floor")
# OLD_KERNEL=1 runs lxc-idshift as on Debian 12, Ubuntu 22.04 or RHEL 9: without
# fchmodat2 and the *xattrat calls (a seccomp filter), so it takes its fallbacks.
if [ "${OLD_KERNEL:-0}" = 1 ]; then
    IDSHIFT="$(realpath "$TARGET/examples/as_old_kernel") $IDSHIFT"
    FLOOR="$(realpath "$TARGET/examples/as_old_kernel") $FLOOR"
    echo "lxc-idshift: as on a kernel before 6.6 (OLD_KERNEL=1)" >&2
fi
MKTREE=$(realpath "$TARGET/examples/mktree")
BARE=$(realpath "$TARGET/examples/bare_lchown")

# The tree lives on the same filesystem as /var/tmp, built once for all tools.
WORK=$(mktemp -d /var/tmp/lxc-idshift-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/tree
JOURNAL=$WORK/journal
if [ "${SHAPE:-rootfs}" = hardlinks ]; then
    echo "== building $INODES files with two names each in $TREE/a and $TREE/b" >&2
    mkdir -p "$TREE/a"
    (cd "$TREE/a" && seq -f "f%.0f" 1 "$INODES" | xargs touch)
    cp -al "$TREE/a" "$TREE/b"
else
    echo "== building a $INODES-inode tree in $TREE" >&2
    "$MKTREE" "$TREE" "$INODES" >&2
fi
# Enough of an OS for systemd-nspawn to accept the tree (it shifts it before it
# starts anything; the start itself may fail on a machine without systemd).
mkdir -p "$TREE/usr/bin" "$TREE/etc"
cp /bin/true "$TREE/usr/bin/true"
touch "$TREE/etc/os-release"

PREPARE=true
if [ "${DROP_CACHES:-0}" = 1 ]; then
    PREPARE='sync; echo 3 > /proc/sys/vm/drop_caches'
    echo "page cache: dropped before every run" >&2
else
    echo "page cache: NOT dropped (warm cache; set DROP_CACHES=1 to drop it)" >&2
fi

# lxc-idshift makes every run durable (syncfs before its journal says done); the
# others leave their changes in the page cache. DURABLE=1 (the default) syncs the
# tree's file system after each of their runs too, for a like-for-like comparison;
# DURABLE=0 times them as they are.
SYNC=""
if [ "${DURABLE:-1}" = 1 ]; then
    SYNC=" && sync -f $TREE"
    echo "others: followed by sync -f after each direction (DURABLE=0 to skip)" >&2
fi
# chown -hR is no shift (one owner for every inode), only coreutils' fd-relative,
# single-threaded walk doing one fchownat per inode: the floor for one thread.
# systemd-nspawn only shifts to multiples of 65536 (1048576 here) and exits
# non-zero when it cannot boot the tree afterwards: its exit status is ignored.
NSPAWN="systemd-nspawn -q -D $TREE --private-users-ownership=chown"
# safe_floor syncs, as lxc-idshift does; "bare_lchown, no sync" is the issue's
# baseline as it states it.
NAMES=(lxc-idshift safe_floor fuidshift "systemd-nspawn" bare_lchown "bare_lchown, no sync" "chown -hR")
CMDS=(
    "$IDSHIFT shift $TREE --map $MAP --journal $JOURNAL && $IDSHIFT shift $TREE --map $MAP --journal $JOURNAL --reverse"
    "$FLOOR $TREE && $FLOOR $TREE --reverse"
    "fuidshift $TREE $MAP$SYNC && fuidshift $TREE -r $MAP$SYNC"
    "($NSPAWN --private-users=1048576:65536 /usr/bin/true; true)$SYNC && ($NSPAWN --private-users=0:65536 /usr/bin/true; true)$SYNC"
    "$BARE $TREE$SYNC && $BARE $TREE --reverse$SYNC"
    "$BARE $TREE && $BARE $TREE --reverse"
    "chown -hR 1000000:1000000 $TREE$SYNC && chown -hR 0:0 $TREE$SYNC"
)

# Prints the mean seconds of one round trip of command $1.
time_cmd() {
    local cmd=$1
    if command -v hyperfine > /dev/null; then
        hyperfine --style basic --runs "$RUNS" --warmup 1 --prepare "$PREPARE" \
            --export-json "$WORK/h.json" "$cmd" >&2
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["mean"])' "$WORK/h.json"
    else
        bash -c "$PREPARE"
        local start end
        start=$(date +%s.%N)
        bash -c "$cmd" >&2
        end=$(date +%s.%N)
        echo "$end - $start" | bc
    fi
}

declare -a TIMES
for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]}
    tool=${name%% *}
    case $tool in lxc-idshift | safe_floor | bare_lchown*) built=1 ;; *) built=0 ;; esac
    if [ $built = 0 ] && ! command -v "$tool" > /dev/null; then
        TIMES[$i]=""
        echo "== $name: not installed, skipped" >&2
        continue
    fi
    echo "== $name" >&2
    TIMES[$i]=$(time_cmd "${CMDS[$i]}")
done

echo
echo "Round trip (forward + reverse) of $INODES inodes (${SHAPE:-rootfs}), $(nproc) cores, mean of $RUNS runs, DURABLE=${DURABLE:-1}, DROP_CACHES=${DROP_CACHES:-0}"
echo
echo "| tool | seconds | ratio to lxc-idshift |"
echo "|---|---:|---:|"
for i in "${!NAMES[@]}"; do
    t=${TIMES[$i]}
    if [ -z "$t" ]; then
        echo "| ${NAMES[$i]} | - | - |"
    else
        awk -v n="${NAMES[$i]}" -v t="$t" -v base="${TIMES[0]}" \
            'BEGIN { printf "| %s | %.3f | %.2f |\n", n, t, t / base }'
    fi
done
