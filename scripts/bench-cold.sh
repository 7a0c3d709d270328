#!/usr/bin/env bash
# Cold-cache timing: the page cache is dropped before EACH direction (forward and
# reverse) of lxc-idshift at several --threads settings and of the bare_lchown
# baseline, on one ~300,000-inode rootfs-like tree; prints a markdown table.
# Run as root from anywhere:  scripts/bench-cold.sh [INODES] [RUNS] [THREADS...]
# Dropping caches affects the whole machine. OLD_KERNEL=1 runs lxc-idshift as on a
# kernel before 6.6 (without fchmodat2 and the *xattrat calls).
set -euo pipefail

INODES=${1:-300000}
RUNS=${2:-3}
shift $(( $# < 2 ? $# : 2 ))
THREADS=("$@")
[ ${#THREADS[@]} -gt 0 ] || THREADS=("$(nproc)" default 16 32)
MAP=b:0:1000000:65536
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-cold: must run as root" >&2; exit 2; }

cargo build --release --bin lxc-idshift --example mktree --example bare_lchown \
    --example as_old_kernel >&2
TARGET=${CARGO_TARGET_DIR:-target}/release
IDSHIFT=$(realpath "$TARGET/lxc-idshift")
# OLD_KERNEL=1: lxc-idshift as on Debian 12, Ubuntu 22.04 or RHEL 9 (its fallbacks).
if [ "${OLD_KERNEL:-0}" = 1 ]; then
    IDSHIFT="$(realpath "$TARGET/examples/as_old_kernel") $IDSHIFT"
fi
BARE=$(realpath "$TARGET/examples/bare_lchown")
WORK=$(mktemp -d /var/tmp/lxc-idshift-cold.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$(realpath "$TARGET/examples/mktree")" "$WORK/tree" "$INODES" >&2

# Seconds of command $1 run on a cold cache.
cold() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
    local start end
    start=$(date +%s.%N)
    bash -c "$1" >&2
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

# Median of the arguments (the mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{a[NR]=$1} END {m=int((NR+1)/2); printf "%.2f\n", (NR%2 ? a[m] : (a[m]+a[m+1])/2)}'
}

echo "Cold cache (dropped before each direction), $INODES inodes, $(nproc) cores, median of $RUNS"
echo
echo "| tool | forward s | reverse s |"
echo "|---|---:|---:|"
for t in "${THREADS[@]}"; do
    opt=""
    [ "$t" = default ] || opt="--threads $t"
    fw=(); rv=()
    for _ in $(seq "$RUNS"); do
        fw+=("$(cold "$IDSHIFT shift $WORK/tree --map $MAP --journal $WORK/j -q $opt")")
        rv+=("$(cold "$IDSHIFT shift $WORK/tree --map $MAP --journal $WORK/j -q --reverse $opt")")
    done
    echo "| lxc-idshift --threads $t | $(median "${fw[@]}") | $(median "${rv[@]}") |"
done
fw=(); rv=()
for _ in $(seq "$RUNS"); do
    fw+=("$(cold "$BARE $WORK/tree")")
    rv+=("$(cold "$BARE $WORK/tree --reverse")")
done
echo "| bare_lchown (1 thread, no sync) | $(median "${fw[@]}") | $(median "${rv[@]}") |"
