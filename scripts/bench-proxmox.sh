#!/usr/bin/env bash
# Backup/restore against in place, on the same Proxmox VE container (as root):
#
#   (a) Proxmox's way to make a privileged container unprivileged: a vzdump
#       archive (tar with vzdump's flags, pve-container src/PVE/VZDump/LXC.pm:
#       `tar cpf - --totals` + PVE::Storage::Plugin's COMMON_TAR_FLAGS +
#       `--one-file-system --warning=no-file-ignored`, vzdump's default
#       exclusions), then `pct restore --unprivileged 1`'s extraction into a new
#       volume (PVE::LXC::Create::restore_tar_archive: `lxc-usernsexec -m
#       u:0:100000:65536 -m g:0:100000:65536 -- tar xpf - --totals
#       COMMON_TAR_FLAGS -C ROOTDIR --skip-old-files --anchored --exclude
#       './dev/*'`): wall time, and the extra disk space (the archive and the
#       second copy);
#   (b) `lxc-idshift VMID --to 100000` in place: wall time, and the extra disk
#       space (what it leaves in the container's directory: journal and state;
#       the peak is sampled while it runs).
#
# The container: a Debian 12 rootfs from lxc-create's debian template, grown with
# BENCH_INODES inodes of `examples/mktree` and BENCH_DATA_MB MiB of incompressible
# files, laid out as Proxmox lays out a container on `dir` storage
# (images/VMID/subvol-VMID-disk-0.subvol) under a host prefix (`--host-root`).
# Page caches are dropped before each timed step (cold, as a real conversion).
#
#   scripts/bench-proxmox.sh            # VMID 9102, 200000 inodes, 1024 MiB
#   BENCH_INODES=500000 BENCH_DATA_MB=4096 LXC_IDSHIFT_BIN=target/release/lxc-idshift scripts/bench-proxmox.sh
#
# Touches /var/lib/lxc/VMID (removed at the end) and gives root Proxmox's
# 100000:65536 in /etc/subuid and /etc/subgid while it runs (lxc-usernsexec's
# newuidmap needs it, as on a Proxmox host), then restores both files.
set -euo pipefail
cd "$(dirname "$0")/.."

VMID=${VMID:-9102}
INODES=${BENCH_INODES:-200000}
DATA_MB=${BENCH_DATA_MB:-1024}
BIN=${LXC_IDSHIFT_BIN:-/usr/bin/lxc-idshift}
TARGET=${CARGO_TARGET_DIR:-target}
MAP=(-m u:0:100000:65536 -m g:0:100000:65536)
TAR_FLAGS=(--one-file-system -p --sparse --numeric-owner --acls --xattrs
    '--xattrs-include=user.*' --xattrs-include=security.capability
    --warning=no-file-ignored --warning=no-xattr-write)

[[ $(id -u) == 0 ]] || { echo "bench-proxmox: run as root" >&2; exit 2; }
[[ -x $BIN ]] || { echo "bench-proxmox: no $BIN (LXC_IDSHIFT_BIN)" >&2; exit 2; }
[[ ! -e /var/lib/lxc/$VMID ]] || { echo "bench-proxmox: /var/lib/lxc/$VMID exists" >&2; exit 2; }
MKTREE=$TARGET/release/examples/mktree
[[ -x $MKTREE ]] || cargo build --release --example mktree -j 2 >&2

WORK=$(mktemp -d /var/tmp/bench-proxmox.XXXXXX)
chmod 0755 "$WORK"
saved_subuid=$(mktemp)
saved_subgid=$(mktemp)
cp -a /etc/subuid "$saved_subuid"
cp -a /etc/subgid "$saved_subgid"
cleanup() {
    cat "$saved_subuid" >/etc/subuid
    cat "$saved_subgid" >/etc/subgid
    rm -f "$saved_subuid" "$saved_subgid"
    if ! grep -q " /var/lib/lxc/$VMID" /proc/self/mountinfo; then rm -rf "/var/lib/lxc/$VMID"; fi
    if ! grep -q " $WORK" /proc/self/mountinfo; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
for f in /etc/subuid /etc/subgid; do
    grep -qx 'root:100000:65536' "$f" || echo 'root:100000:65536' >>"$f"
done

ROOT=$WORK/host
IMAGES=$ROOT/var/lib/vz/images/$VMID
ROOTFS=$IMAGES/subvol-$VMID-disk-0.subvol
mkdir -p "$ROOT/etc/pve/lxc" "$IMAGES" "$WORK/scratch"
printf 'dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup,rootdir,images\n' >"$ROOT/etc/pve/storage.cfg"
echo 'root:100000:65536' >"$ROOT/etc/subuid"
echo 'root:100000:65536' >"$ROOT/etc/subgid"
cp /etc/passwd /etc/group "$ROOT/etc/"
[[ -f /etc/login.defs ]] && cp /etc/login.defs "$ROOT/etc/"

echo "== the container: Debian 12 + $INODES mktree inodes + $DATA_MB MiB of data" >&2
lxc-create -P "$WORK/scratch" -n "$VMID" -t debian -- -r bookworm >/dev/null 2>&1
mv "$WORK/scratch/$VMID/rootfs" "$ROOTFS"
rm -rf "$WORK/scratch"
"$MKTREE" "$ROOTFS/srv/bulk" "$INODES" >&2
# mktree plants a few ids beyond a container's 65536 (1000000+): a container's own
# files have none, and pct restore fails on them (tar cannot map them).
find "$ROOTFS/srv/bulk" \( -uid +65535 -o -gid +65535 \) -exec chown -h 1000:1000 {} +
mkdir -p "$ROOTFS/srv/data"
for ((i = 0; i < DATA_MB / 4; i++)); do
    head -c 4194304 /dev/urandom >"$ROOTFS/srv/data/blob.$i"
done
cat >"$ROOT/etc/pve/lxc/$VMID.conf" <<EOF
arch: amd64
hostname: bench
memory: 1024
ostype: debian
rootfs: local:$VMID/subvol-$VMID-disk-0.subvol,size=8G
swap: 0
EOF
# What Proxmox's first start leaves: /var/lib/lxc/VMID/config (by which the tool finds it).
mkdir -p "/var/lib/lxc/$VMID/rootfs"
printf 'lxc.arch = amd64\nlxc.include = /usr/share/lxc/config/debian.common.conf\nlxc.uts.name = bench\nlxc.rootfs.path = /var/lib/lxc/%s/rootfs\n' "$VMID" >"/var/lib/lxc/$VMID/config"

inodes=$(find "$ROOTFS" -xdev | wc -l)
bytes=$(du -sxb "$ROOTFS" | cut -f1)
echo "container: $inodes inodes, $bytes bytes ($(du -sxh "$ROOTFS" | cut -f1) on disk)"

cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
seconds() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# (a) vzdump (stop mode: the rootfs as it is), then pct restore --unprivileged 1.
mkdir -p "$WORK/dump/etc/vzdump" "$WORK/backup"
cp "$ROOT/etc/pve/lxc/$VMID.conf" "$WORK/dump/etc/vzdump/pct.conf"
ARCHIVE=$WORK/backup/vzdump-lxc-$VMID.tar
cold
t0=$(seconds)
tar cpf - --totals "${TAR_FLAGS[@]}" --one-file-system --warning=no-file-ignored \
    --directory="$WORK/dump" ./etc/vzdump/pct.conf --directory="$ROOTFS" \
    --no-anchored --anchored '--exclude=./tmp/?*' '--exclude=./var/tmp/?*' '--exclude=./var/run/?*pid' \
    . >"$ARCHIVE" 2>"$WORK/backup.log" || { tail "$WORK/backup.log" >&2; exit 1; }
t1=$(seconds)
NEWVOL=$IMAGES/subvol-$VMID-disk-1.subvol
mkdir "$NEWVOL"
chown 100000:100000 "$NEWVOL"
cold
t2=$(seconds)
lxc-usernsexec "${MAP[@]}" -- tar xpf - --totals "${TAR_FLAGS[@]}" -C "$NEWVOL" \
    --skip-old-files --anchored --exclude './dev/*' <"$ARCHIVE" 2>"$WORK/restore.log" ||
    { tail "$WORK/restore.log" >&2; exit 1; }
t3=$(seconds)
archive_bytes=$(du -sb "$ARCHIVE" | cut -f1)
copy_bytes=$(du -sxb "$NEWVOL" | cut -f1)
backup_s=$(elapsed "$t0" "$t1")
restore_s=$(elapsed "$t2" "$t3")

# (b) in place.
before=$(du -sb "/var/lib/lxc/$VMID" | cut -f1)
peak=$before
cold
t4=$(seconds)
"$BIN" "$VMID" --to 100000 --host-root "$ROOT" >"$WORK/idshift.log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
    now=$(du -sb "/var/lib/lxc/$VMID" 2>/dev/null | cut -f1 || echo 0)
    ((now > peak)) && peak=$now
    sleep 0.05
done
wait "$pid" || { cat "$WORK/idshift.log" >&2; exit 1; }
t5=$(seconds)
after=$(du -sb "/var/lib/lxc/$VMID" | cut -f1)
inplace_s=$(elapsed "$t4" "$t5")

# Both give the same tree (owner, group, mode of every path), bar what the restore
# leaves out (./dev/*, the excluded temporary files) and the units the conversion masks.
view() {
    (cd "$1" && find . -xdev -printf '%p %U %G %m\n') |
        grep -v -e '^\./dev/' -e '^\./etc/vzdump' -e '^\./tmp/.' -e '^\./var/tmp/.' -e '^\./etc/systemd/system/[^ ]*\.\(mount\|socket\|service\) ' |
        LC_ALL=C sort
}
diff <(view "$ROOTFS") <(view "$NEWVOL") | grep '^[<>]' >"$WORK/differ" || true
differ=$(wc -l <"$WORK/differ")

cold
t6=$(seconds)
"$BIN" "$VMID" --to 0 --host-root "$ROOT" >>"$WORK/idshift.log" 2>&1
t7=$(seconds)

cat <<EOF

container                      $inodes inodes, $bytes bytes
(a) backup + restore           $(awk -v a="$backup_s" -v b="$restore_s" 'BEGIN { printf "%.1f", a + b }') s   (vzdump tar $backup_s s, restore through the user namespace $restore_s s)
    extra disk space           $((archive_bytes + copy_bytes)) bytes   (archive $archive_bytes + second copy $copy_bytes)
(b) lxc-idshift --to 100000    $inplace_s s
    extra disk space           $((after - before)) bytes left in /var/lib/lxc/$VMID (largest seen while it ran: $(((peak > after ? peak : after) - before)))
    back with --to 0           $(elapsed "$t6" "$t7") s
paths that differ between (a) and (b) (owner, group, mode): $differ
EOF
head -n 10 "$WORK/differ"
