#!/bin/sh
# /init of the power-cut guest (tests/common/vm.rs bakes it into an initramfs with
# busybox, lxc-idshift and the modules listed in /modules.load). The kernel command
# line says what to do: pc_fs, pc_mnt (the image's mount point, the same absolute
# path as on the host: the journal records the tree's path), pc_tree, pc_journal,
# pc_map, pc_steps (fwd,rev: `shift` forward and back), or for a whole container
# conversion pc_host (the host root holding etc/sub{u,g}id and lxc/NAME, on the
# image) and pc_name with pc_steps (conv,back: `--to 1000000`, then `--to 0
# --release-range`; their markers are FWD and REV too). The host reads the PC-* markers off the serial line
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
    pc_host=*) host=${arg#pc_host=} ;;
    pc_name=*) name=${arg#pc_name=} ;;
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

# No LXC in the guest: the container is stopped, as lxc-info would say.
printf '#!/bin/sh\necho STOPPED\n' >/bin/lxc-info
chmod 755 /bin/lxc-info

# A conversion, then when each file it writes last changed, in the guest's clock
# from the start (stat's %y has nanoseconds, busybox date has not): the host learns
# where the subordinate id writes, the shift and the config write fall.
convert_step() {
    touch /tmp/pc-start
    echo "PC-$1-START"
    lxc-idshift "$name" --to "$2" --lxcpath "$host/lxc" --host-root "$host" -q $3 </dev/null
    echo "PC-$1-END rc=$?"
    echo "PC-$1-TIMES $(stat -c '%n=%y' /tmp/pc-start "$host"/etc/subuid "$host"/etc/subgid \
        "$host/lxc/$name"/* 2>/dev/null | tr ' ' _ | tr '\n' ' ')"
}

for step in $(echo "$steps" | tr , ' '); do
    case $step in
    fwd) shift_step FWD ;;
    rev) shift_step REV --reverse ;;
    conv) convert_step FWD 1000000 ;;
    back) convert_step REV 0 --release-range ;;
    esac
done
[ -n "$fs" ] && umount "$mnt"
echo PC-DONE
reboot -f
