#!/usr/bin/env bash
# Builds the Debian packages of mhc-node from a release build:
#   mhc-node_<version>_<arch>.deb         the stripped binary, the systemd unit, configs, docs
#   mhc-node-dbgsym_<version>_<arch>.deb  the binary's debug info, by build id (for gdb, perf)
#
# Usage: packaging/deb/build.sh [OUT_DIR]            (default: target/debian)
#   MHC_NODE_BIN=PATH packages that binary instead of building target/release/mhc-node.
# Needs: dpkg-deb, objcopy (binutils), gzip; cargo unless MHC_NODE_BIN is given.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/target/debian}

bin=${MHC_NODE_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked -p mhc-node >&2)
  bin=$root/target/release/mhc-node
fi
for tool in dpkg-deb objcopy gzip; do
  command -v "$tool" >/dev/null || { echo "packaging needs $tool (apt-get install dpkg-dev binutils gzip)" >&2; exit 1; }
done

version=$("$bin" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
maintainer="mhc developers <mhc@example.invalid>"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=$work/mhc-node
dbg=$work/mhc-node-dbgsym
mkdir -p "$out"

# --- The binary, stripped; its debug info goes to the dbgsym package, found by build id.
install -d "$pkg/usr/bin"
install -m 0755 "$bin" "$pkg/usr/bin/mhc-node"
build_id=$(readelf -n "$bin" | awk '/Build ID:/ {print $3}')
[ -n "$build_id" ] || { echo "$bin has no build id: cannot place its debug info" >&2; exit 1; }
debug_file=$dbg/usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug
install -d "$(dirname "$debug_file")"
objcopy --only-keep-debug --compress-debug-sections "$bin" "$debug_file"
chmod 0644 "$debug_file"
objcopy --strip-debug --strip-unneeded --remove-section=.comment --remove-section=.note \
  "$pkg/usr/bin/mhc-node"

# --- The systemd unit: the source tree's, for a packaged install (binary in /usr/bin, a
# system user instead of a dynamic one, so /etc/mhc can be group-readable by it only).
install -d "$pkg/usr/lib/systemd/system"
sed -e 's|/usr/local/bin/mhc-node|/usr/bin/mhc-node|g' \
    -e 's|^DynamicUser=yes|User=mhc\nGroup=mhc|' \
    -e 's|^Documentation=.*|Documentation=file:/usr/share/doc/mhc-node/README.md.gz|' \
    -e 's|^# /etc/mhc/edge.toml.*|# /etc/mhc/edge.toml, with its state in /var/lib/mhc/edge (installed by the mhc-node package).|' \
    -e '/^# examples in systemd\/examples\/ do). Install the binary/d' \
    "$root/systemd/mhc-node@.service" > "$pkg/usr/lib/systemd/system/mhc-node@.service"
chmod 0644 "$pkg/usr/lib/systemd/system/mhc-node@.service"
grep -q '^User=mhc$' "$pkg/usr/lib/systemd/system/mhc-node@.service" ||
  { echo "the unit's DynamicUser line moved: update packaging/deb/build.sh" >&2; exit 1; }

# --- Configuration: one conffile per role (the unit's instance name picks it), and the same
# files as examples. postinst makes the conffiles root:mhc 0640 (they may come to hold tokens).
install -d "$pkg/etc/mhc" "$pkg/usr/share/doc/mhc-node/examples"
for role in origin edge mesh satellite-uplink; do
  install -m 0644 "$root/systemd/examples/$role.toml" "$pkg/etc/mhc/$role.toml"
  install -m 0644 "$root/systemd/examples/$role.toml" "$pkg/usr/share/doc/mhc-node/examples/$role.toml"
done

# --- Documentation.
install -d "$pkg/usr/share/man/man1"
gzip -9n < "$here/mhc-node.1" > "$pkg/usr/share/man/man1/mhc-node.1.gz"
chmod 0644 "$pkg/usr/share/man/man1/mhc-node.1.gz"
doc=$pkg/usr/share/doc/mhc-node
gzip -9n < "$root/README.md" > "$doc/README.md.gz"
install -m 0644 "$here/copyright" "$doc/copyright"
{
  printf 'mhc-node (%s) unstable; urgency=medium\n\n' "$version"
  printf '  * Built from the mhc source tree (%s).\n\n' \
    "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf ' -- %s  %s\n' "$maintainer" "$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n > "$doc/changelog.gz"
chmod 0644 "$doc"/*.gz

# --- Maintainer scripts and control files.
install -d "$pkg/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$pkg/DEBIAN/$script"
done
(cd "$pkg" && find etc -type f -printf '/%p\n' | sort) > "$pkg/DEBIAN/conffiles"
glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
installed_kb=$(du -sk --exclude=DEBIAN "$pkg" | awk '{print $1}')
cat > "$pkg/DEBIAN/control" <<EOF
Package: mhc-node
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_kb
Depends: libc6 (>= $glibc), libgcc-s1, adduser
Section: net
Priority: optional
Homepage: https://example.invalid/mhc
Description: distribution daemon of the MHC streaming platform
 One binary for the origin, edge, mesh and satellite-uplink roles of an
 independent music and video streaming network: signed Merkle-verified HLS
 segments over QUIC and HTTP, libp2p gossip, geo-routing, mesh replication
 over iroh-blobs, a RaptorQ satellite carousel and verifiable play reports.
 .
 Each role runs as an instance of mhc-node@.service, configured in
 /etc/mhc/ROLE.toml, its state in /var/lib/mhc/ROLE.
EOF
(cd "$pkg" && find usr -type f -print0 | sort -z | xargs -0 md5sum) > "$pkg/DEBIAN/md5sums"

install -d "$dbg/DEBIAN" "$dbg/usr/share/doc"
ln -s mhc-node "$dbg/usr/share/doc/mhc-node-dbgsym"
cat > "$dbg/DEBIAN/control" <<EOF
Package: mhc-node-dbgsym
Source: mhc-node
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$dbg" | awk '{print $1}')
Depends: mhc-node (= $version)
Section: debug
Priority: optional
Auto-Built-Package: debug-symbols
Build-Ids: $build_id
Description: debug symbols for mhc-node
EOF
(cd "$dbg" && find usr -type f -print0 | sort -z | xargs -0 md5sum) > "$dbg/DEBIAN/md5sums"

deb=$out/mhc-node_${version}_${arch}.deb
deb_dbg=$out/mhc-node-dbgsym_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >&2
dpkg-deb --root-owner-group -Zxz --build "$dbg" "$deb_dbg" >&2
echo "$deb"
echo "$deb_dbg"
