#!/usr/bin/env bash
# Prepares the VM suites (tests/powercut.rs; tests/kernels.rs, the kernel matrix,
# with 6.1 5.10 6.12) on a Debian 12 machine, as root:
# QEMU 10 from bookworm-backports (the image's qemu-utils is a backport, so
# bookworm's qemu-system-x86 refuses to install beside it), the guest's tools, and
# Debian kernels unpacked into a cache, never installed: nothing in /boot changes.
#
# usage: setup.sh [SERIES...]   SERIES: 6.1 (default, bookworm), 6.12
#                               (bookworm-backports), 5.10 (bullseye)
# Each kernel lands in /var/cache/lxc-idshift-vm/SERIES/ (vmlinuz, lib/modules/V).
# Idempotent: a second run with everything in place only checks and returns.
set -euo pipefail

cache=${LXC_IDSHIFT_VM_CACHE:-/var/cache/lxc-idshift-vm}
series_list=("${@:-6.1}")
tools=(qemu-system-x86_64 busybox mkfs.ext4 mkfs.xfs mkfs.btrfs cpio e2fsck xfs_repair depmod xz zstd)
packages=(busybox-static e2fsprogs xfsprogs btrfs-progs cpio kmod xz-utils zstd)
export DEBIAN_FRONTEND=noninteractive

have_tools() {
    local tool
    for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || return 1; done
}

have_kernel() { [[ -s $cache/$1/vmlinux && -s $cache/$1/version && -s $cache/$1/modules.dep ]]; }

all_done() {
    local series
    have_tools || return 1
    for series in "${series_list[@]}"; do have_kernel "$series" || return 1; done
}

# Adds an apt source (deb822) unless one already names the suite.
add_suite() {
    local suite=$1 file=/etc/apt/sources.list.d/lxc-idshift-$1.sources
    grep -rqs "Suites:.*\b$suite\b\|^deb .* $suite " /etc/apt/sources.list /etc/apt/sources.list.d/ &&
        return 0
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$suite" >"$file"
    updated=
}

# bullseye only serves its 5.10 kernel: pinned below everything installed, so no
# package of the host ever upgrades or downgrades from it.
pin_low() {
    printf 'Package: *\nPin: release n=%s\nPin-Priority: 1\n' "$1" \
        >/etc/apt/preferences.d/lxc-idshift-"$1"
}

apt_update() {
    [[ -n ${updated-} ]] && return 0
    apt-get update -qq
    updated=1
}

install_tools() {
    have_tools && return 0
    apt_update
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    apt-get install -y -qq --no-install-recommends -t bookworm-backports \
        qemu-system-x86 >/dev/null
}

suite_of() {
    case $1 in
    6.1) echo bookworm ;;
    6.12) echo bookworm-backports ;;
    5.10) echo bullseye ;;
    *) echo "setup.sh: unknown kernel series $1 (6.1, 6.12, 5.10)" >&2; return 1 ;;
    esac
}

# The versioned image package (linux-image-6.1.0-NN-amd64) that the newest
# linux-image-amd64 of this series depends on.
image_package() {
    local series=$1 version
    version=$(apt-cache madison linux-image-amd64 | awk -v s="$series" \
        '{ v = $3; if (index(v, s ".") == 1) print v }' | sort -V | tail -n1)
    [[ -n $version ]] || { echo "setup.sh: no linux-image-amd64 $series.* in apt" >&2; return 1; }
    apt-cache show "linux-image-amd64=$version" | sed -n 's/^Depends: //p' | head -n1 |
        tr ',' '\n' | grep -o 'linux-image-[0-9][^ ]*-amd64' | head -n1
}

# The ELF kernel inside the compressed bzImage (xz for 6.1, zstd for 6.12): QEMU
# starts it directly through its PVH entry, which saves the decompression (about
# 8 s under TCG) at every boot.
first_offset() {
    { LC_ALL=C grep -obUa "$1" "$2" || true; } | awk -F: 'NR == 1 { print $1 }'
}

extract_vmlinux() {
    local offset unpack
    offset=$(first_offset $'\xfd7zXZ' "$1") unpack=(xz -dc --single-stream)
    [[ -n $offset ]] || offset=$(first_offset $'\x28\xb5\x2f\xfd' "$1") unpack=(zstd -dcq)
    [[ -n $offset ]] || { echo "setup.sh: $1 is neither xz- nor zstd-compressed" >&2; return 1; }
    # The decompressor stops at the end of its frame and may complain about what
    # follows: the ELF check below tells whether the kernel came out whole.
    tail -c +$((offset + 1)) "$1" | "${unpack[@]}" >"$2" 2>/dev/null || true
    [[ $(head -c4 "$2" | od -An -c | tr -d ' ') == 177ELF ]] ||
        { echo "setup.sh: no ELF kernel in $1" >&2; return 1; }
}

fetch_kernel() {
    local series=$1 package work dir version
    have_kernel "$series" && return 0
    apt_update
    package=$(image_package "$series")
    work=$(mktemp -d)
    chown _apt "$work" 2>/dev/null || true # apt downloads as _apt where it can
    (cd "$work" && apt-get download -qq "$package" >/dev/null)
    dir=$cache/$series
    rm -rf "$dir.new" && mkdir -p "$dir.new"
    dpkg-deb -x "$work"/*.deb "$dir.new"
    rm -rf "$work"
    version=$(ls "$dir.new/lib/modules")
    ln -sf "boot/vmlinuz-$version" "$dir.new/vmlinuz"
    # The package leaves modules.dep to its postinst: made here, inside the cache.
    depmod -b "$dir.new" "$version"
    ln -sf "lib/modules/$version/modules.dep" "$dir.new/modules.dep"
    extract_vmlinux "$dir.new/vmlinuz" "$dir.new/vmlinux"
    echo "$version" >"$dir.new/version"
    rm -rf "$dir" && mv "$dir.new" "$dir"
    echo "setup.sh: kernel $version ($package) in $dir"
}

all_done && exit 0
updated=
add_suite bookworm-backports
for series in "${series_list[@]}"; do
    if [[ $series == 5.10 ]]; then
        add_suite bullseye
        pin_low bullseye
    fi
done
install_tools
for series in "${series_list[@]}"; do
    suite_of "$series" >/dev/null
    fetch_kernel "$series"
done
