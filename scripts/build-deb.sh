#!/usr/bin/env bash
# Builds the Debian package ${CARGO_TARGET_DIR:-target}/debian/lxc-idshift_VERSION_ARCH.deb with dpkg-deb
# (no build dependency beyond cargo and dpkg): the release binary in /usr/bin, the
# man page and the bash/zsh/fish completions generated from the clap definitions by
# the binary itself (`lxc-idshift generate`), so they always follow the command line.
#
#   scripts/build-deb.sh            # then: dpkg -i target/debian/lxc-idshift_*.deb
#
# Prints the path of the package on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin lxc-idshift >&2
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/lxc-idshift
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
out=$target/debian
root=$out/root
rm -rf "$root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" \
    "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" \
    "$root/usr/share/doc/lxc-idshift"

install -m 0755 "$bin" "$root/usr/bin/lxc-idshift"
strip --strip-debug "$root/usr/bin/lxc-idshift"

gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$bin" generate man "$gen" >/dev/null
"$bin" generate completions "$gen" >/dev/null
gzip -9n <"$gen/lxc-idshift.1" >"$root/usr/share/man/man1/lxc-idshift.1.gz"
install -m 0644 "$gen/lxc-idshift" "$root/usr/share/bash-completion/completions/lxc-idshift"
install -m 0644 "$gen/_lxc-idshift" "$root/usr/share/zsh/vendor-completions/_lxc-idshift"
install -m 0644 "$gen/lxc-idshift.fish" "$root/usr/share/fish/vendor_completions.d/lxc-idshift.fish"
gzip -9n <README.md >"$root/usr/share/doc/lxc-idshift/README.md.gz"
cat >"$root/usr/share/doc/lxc-idshift/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lxc-idshift

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

# Shared libraries the binary links, as Debian dependencies (dpkg-shlibdeps when
# dpkg-dev is there; libc6 and libgcc-s1 otherwise, which is what it finds).
depends="libc6 (>= 2.34), libgcc-s1 (>= 4.2)"
if command -v dpkg-shlibdeps >/dev/null; then
    mkdir -p "$gen/debian"
    touch "$gen/debian/control"
    found=$(cd "$gen" && dpkg-shlibdeps -O "$OLDPWD/$root/usr/bin/lxc-idshift" 2>/dev/null |
        sed -n 's/^shlibs:Depends=//p') || true
    [ -n "$found" ] && depends=$found
fi
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: lxc-idshift
Version: $version
Architecture: $arch
Maintainer: lxc-idshift developers <root@localhost>
Installed-Size: $size
Depends: $depends
Recommends: lxc
Section: admin
Priority: optional
Description: convert privileged LXC containers to unprivileged ones, and back
 Shifts the owner, group, POSIX ACL entries and file-capability rootid of every
 inode of a container's root filesystem between container ids and host
 (subordinate) ids, journaled so that any interruption is harmless, and edits
 the container's config, /etc/subuid and /etc/subgid, permissions and udev
 rules: lxc-idshift -n NAME --to 1000000. Also lists the containers of a host
 with their state and id ranges (lxc-idshift list).
EOF
find "$root" -type d -exec chmod 0755 {} +
deb=$out/lxc-idshift_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$root" "$deb" >&2
echo "$deb"
