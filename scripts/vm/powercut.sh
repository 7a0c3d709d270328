#!/usr/bin/env bash
# Runs the power-cut test (tests/powercut.rs) with N cuts per file system, as root.
# usage: scripts/vm/powercut.sh N [SEED] [TEST-NAME-FILTER|shift|conversion]
#   SEED: base seed (0x... or decimal; cut i uses SEED+i), default from the clock.
#   shift: only the tree shifts (ext4 256 and 128, xfs, btrfs); conversion: only
#   the whole container conversions (powercut_conversion_*); default: both.
#   LXC_IDSHIFT_VM_KERNEL=6.12 (or 5.10) picks another kernel (fetched by setup.sh).
#   LXC_IDSHIFT_POWERCUT_FOCUS=undo puts every cut in the forward run and recovers
#   it by going back at once (the undo path).
# Every cut prints its seed on stderr; a failed cut keeps its image and says where.
set -euo pipefail
cd "$(dirname "$0")/../.."

cuts=${1:?usage: $0 N [SEED] [TEST-NAME-FILTER|shift|conversion]}
seed=${2:-$(printf '%#x' "$(date +%s%N)")}
filter=${3:-}
case $filter in
shift) filter="--skip powercut_conversion" ;;
conversion) filter=powercut_conversion ;;
esac
echo "powercut.sh: $cuts cuts per file system, base seed $seed, kernel ${LXC_IDSHIFT_VM_KERNEL:-6.1}" >&2
bash scripts/vm/setup.sh "${LXC_IDSHIFT_VM_KERNEL:-6.1}"
LXC_IDSHIFT_POWERCUTS=$cuts LXC_IDSHIFT_POWERCUT_SEED=$seed \
    cargo test --release --test powercut -- --nocapture $filter
