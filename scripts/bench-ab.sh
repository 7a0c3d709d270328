#!/usr/bin/env bash
# A/B: interleaved round trips (forward + reverse) of two lxc-idshift builds on the
# same tree, alternating which goes first; prints each one's median and its times.
# Run as root:  scripts/bench-ab.sh BINARY_A BINARY_B [PAIRS] [INODES]
# SHAPE=hardlinks builds INODES files with two names each in two flat directories.
# OLD_KERNEL=1 runs both as on a kernel before 6.6 (examples/as_old_kernel).
set -euo pipefail

A=$(realpath "$1")
B=$(realpath "$2")
PAIRS=${3:-6}
INODES=${4:-300000}
MAP=b:0:1000000:65536
cd "$(dirname "$0")/.."
cargo build --release --example mktree --example as_old_kernel >&2
WRAP=""
if [ "${OLD_KERNEL:-0}" = 1 ]; then
    WRAP="$(realpath target/release/examples/as_old_kernel) "
fi

WORK=$(mktemp -d /var/tmp/lxc-idshift-ab.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/tree
if [ "${SHAPE:-rootfs}" = hardlinks ]; then
    mkdir -p "$TREE/a"
    (cd "$TREE/a" && seq -f "f%.0f" 1 "$INODES" | xargs touch)
    cp -al "$TREE/a" "$TREE/b"
else
    target/release/examples/mktree "$TREE" "$INODES" >&2
fi

round_trip() {
    local start end
    start=$(date +%s.%N)
    $WRAP$1 shift "$TREE" --map $MAP --journal "$WORK/j" > /dev/null
    $WRAP$1 shift "$TREE" --map $MAP --journal "$WORK/j" --reverse > /dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

median() {
    printf '%s\n' "$@" | sort -n |
        awk '{ t[NR] = $1 } END { print (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2 }'
}

round_trip "$A" > /dev/null # warm-up
times_a=()
times_b=()
for i in $(seq "$PAIRS"); do
    if [ $((i % 2)) = 1 ]; then
        times_a+=("$(round_trip "$A")")
        times_b+=("$(round_trip "$B")")
    else
        times_b+=("$(round_trip "$B")")
        times_a+=("$(round_trip "$A")")
    fi
done
echo "A $A: median $(median "${times_a[@]}") s (${times_a[*]})"
echo "B $B: median $(median "${times_b[@]}") s (${times_b[*]})"
