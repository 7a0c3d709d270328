#!/bin/sh
# /init of the power-cut guest (tests/common/vm.rs bakes it into an initramfs with
# busybox, lxc-idshift and the modules listed in /modules.load). The kernel command
# line says what to do: pc_fs, pc_mnt (the image's mount point, the same absolute
# path as on the host: the journal records the tree's path), pc_tree, pc_journal,
# pc_map, pc_steps (fwd,rev). The host reads the PC-* markers off the serial line
# and may SIGKILL QEMU at any moment: that is the power cut.
export PATH=/bin
echo PC-INIT
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for arg in $(cat /proc/cmdline); do
    case $arg in
    pc_fs=*) fs=${arg#pc_fs=} ;;
    pc_mnt=*) mnt=${arg#pc_mnt=} ;;
    pc_tree=*) tree=${arg#pc_tree=} ;;
    pc_journal=*) journal=${arg#pc_journal=} ;;
    pc_map=*) map=${arg#pc_map=} ;;
    pc_steps=*) steps=${arg#pc_steps=} ;;
    esac
done

# Only the modules of the disk and of the file system mounted: each costs boot time.
while read -r group module; do
    [ "$group" = base ] || [ "$group" = "$fs" ] || continue
    insmod "/modules/$module" || echo "PC-NOTE insmod $module failed"
done </modules.load

if [ -n "$fs" ]; then
    # virtio_blk may register the disk a moment after insmod returns.
    tries=0
    while [ ! -b /dev/vda ] && [ $tries -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
    mkdir -p "$mnt"
    mount -t "$fs" /dev/vda "$mnt" || echo PC-MOUNT-FAILED
fi
echo "PC-READY kernel=$(uname -r)"

shift_step() {
    echo "PC-$1-START"
    lxc-idshift shift "$tree" --map "$map" --journal "$journal" $2
    echo "PC-$1-END rc=$?"
}

for step in $(echo "$steps" | tr , ' '); do
    case $step in
    fwd) shift_step FWD ;;
    rev) shift_step REV --reverse ;;
    esac
done
[ -n "$fs" ] && umount "$mnt"
echo PC-DONE
reboot -f
