#!/bin/sh
# /init of the kernel-matrix guest (tests/kernels.rs bakes it into an initramfs
# with busybox and the modules of /modules.load). The host's / comes read-only
# over virtio-9p (tag hostroot), so the guest runs the host's test binaries and
# tools at their own paths; a fresh ext4 disk (/dev/vda) is its /tmp and holds
# the plan the host wrote, /tmp/plan.sh, run once the host's root is the root.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

# Every group: the tests use loop images of ext4, xfs and btrfs.
while read -r group module; do
    insmod "/modules/$module" || echo "KM-NOTE insmod $module ($group) failed"
done </modules.load
# The same "kernel up" marker as the power-cut guest: the KVM probe waits for it.
echo "PC-READY kernel=$(uname -r)"

mkdir -p /host
# cache=loose: nothing changes the host's files during a run, and every binary
# and library is read once instead of at each page fault.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /host ||
    echo KM-FATAL cannot mount the host root over 9p
# A checkout under a directory covered below (a CI clone in /tmp: km_keep=DIR on
# the command line) is bound aside first and brought back at its own path after:
# a virtio-9p channel takes one mount only.
keeps=""
for arg in $(cat /proc/cmdline); do
    case $arg in
    km_keep=*)
        keep=${arg#km_keep=}
        mkdir -p "/keep$keep"
        mount --bind "/host$keep" "/keep$keep" && keeps="$keeps $keep"
        ;;
    esac
done
# virtio_blk may register the disk a moment after insmod returns.
tries=0
while [ ! -b /dev/vda ] && [ $tries -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
mount -t ext4 /dev/vda /host/tmp || echo KM-FATAL cannot mount the scratch disk on /tmp
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs tmpfs /host/run
mount -t tmpfs tmpfs /host/var/tmp
# A conversion looks at every container of the lxcpath for shared ranges: the
# host's own (which come and go with whatever else runs there) are not the guest's.
[ -d /host/var/lib/lxc ] && mount -t tmpfs tmpfs /host/var/lib/lxc
for keep in $keeps; do
    mkdir -p "/host$keep"
    mount --bind "/keep$keep" "/host$keep" || echo "KM-FATAL cannot keep $keep"
done
# switch_root, not chroot: a chrooted process may not create user namespaces,
# which the idmapped-mount probe and the container-root checks need.
exec switch_root /host /bin/sh /tmp/plan.sh
