#!/usr/bin/env bash
# Checks the Debian packages packaging/deb/build.sh made, then installs, upgrades and purges
# them in a throwaway Debian root (debootstrap, cached) with no network:
#   - contents: the stripped binary, the unit, one conffile per role, examples, man page,
#     copyright; the debug info in the dbgsym package under the binary's build id;
#   - maintainer scripts parse; lintian (when installed) finds no error or warning;
#   - after install: the mhc user, /var/lib/mhc (mhc, 0750), conffiles root:mhc 0640,
#     `mhc-node check-config` passes for every role's config, `systemd-analyze verify` passes
#     (no warning) for every role's unit instance;
#   - a reinstall keeps an operator's edit of a conffile; a purge leaves no file behind but the
#     user.
#
# Usage: packaging/deb/test.sh DEB DBGSYM_DEB
# Needs: root, dpkg-deb, readelf, debootstrap (first run; apt-get install debootstrap), unshare,
# systemd-analyze; lintian is optional (apt-get install lintian).
set -euo pipefail
deb=$(realpath "$1") dbg=$(realpath "$2")
cache=${MHC_DEB_ROOT_CACHE:-/var/cache/mhc-test/deb-root-bookworm.tar}
fail() { echo "package test: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg in a chroot)"
for tool in dpkg-deb readelf unshare systemd-analyze; do
  command -v "$tool" >/dev/null || fail "needs $tool"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- Contents.
dpkg-deb --contents "$deb" | awk '{print $1, $6}' > "$work/contents"
for want in ./usr/bin/mhc-node ./usr/lib/systemd/system/mhc-node@.service \
    ./usr/share/man/man1/mhc-node.1.gz ./usr/share/doc/mhc-node/copyright \
    ./usr/share/doc/mhc-node/changelog.gz ./usr/share/doc/mhc-node/README.md.gz; do
  grep -q " $want\$" "$work/contents" || fail "$want is not in $(basename "$deb")"
done
dpkg-deb -e "$deb" "$work/control"
roles="origin edge mesh satellite-uplink"
for role in $roles; do
  grep -qx "/etc/mhc/$role.toml" "$work/control/conffiles" || fail "/etc/mhc/$role.toml is not a conffile"
  grep -q " ./usr/share/doc/mhc-node/examples/$role.toml\$" "$work/contents" || fail "no example for $role"
done
[ "$(wc -l < "$work/control/conffiles")" = 4 ] || fail "conffiles: $(cat "$work/control/conffiles")"
for script in postinst prerm postrm; do
  sh -n "$work/control/$script" || fail "$script does not parse"
done
dpkg-deb -x "$deb" "$work/unpacked"
bin=$work/unpacked/usr/bin/mhc-node
if readelf -S "$bin" | grep -Eq '\.debug_(info|line|str|abbrev)'; then fail "the shipped binary still has debug sections"; fi
build_id=$(readelf -n "$bin" | awk '/Build ID:/ {print $3}')
dpkg-deb --contents "$dbg" > "$work/dbg-contents"
grep -q "usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug" "$work/dbg-contents" ||
  fail "the dbgsym package has no debug file for build id $build_id"
"$bin" --help | awk '/^Commands:/ {on=1; next} /^$/ {on=0} on {print $1}' | grep -v '^help$' |
  while read -r command; do
    zcat "$work/unpacked/usr/share/man/man1/mhc-node.1.gz" > "$work/man"
    grep -q -- "$command" "$work/man" ||
      fail "the man page does not mention the command $command"
  done

# --- Lintian, when installed: errors and warnings fail; the info tags left are explained in
# packaging/deb/README.md.
if command -v lintian >/dev/null; then
  lintian --allow-root "$deb" "$dbg" > "$work/lintian" 2>&1 || true
  if grep -E '^[EW]:' "$work/lintian"; then fail "lintian reports the lines above"; fi
else
  echo "package test: lintian not installed, not run (apt-get install lintian)" >&2
fi

# --- A throwaway Debian root with systemd (for systemd-analyze --root), made once and cached.
if [ ! -f "$cache" ]; then
  command -v debootstrap >/dev/null || fail "needs debootstrap to make $cache (apt-get install debootstrap)"
  mkdir -p "$(dirname "$cache")"
  debootstrap --variant=minbase --include=adduser,systemd bookworm "$work/seed" \
    "${MHC_DEBIAN_MIRROR:-http://deb.debian.org/debian}" > "$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap failed"; }
  tar -C "$work/seed" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
  rm -rf "$work/seed"
fi
root=$work/root
mkdir "$root"
tar -C "$root" -xf "$cache"
cp "$deb" "$dbg" "$root/tmp/"
in_root() { unshare --net --fork chroot "$root" "$@"; }

in_root dpkg -i "/tmp/$(basename "$deb")" "/tmp/$(basename "$dbg")" > "$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "dpkg -i failed"; }
grep -q '^mhc:' "$root/etc/passwd" || fail "no mhc user"
mhc_uid=$(awk -F: '$1 == "mhc" {print $3}' "$root/etc/passwd")
mhc_gid=$(awk -F: '$1 == "mhc" {print $3}' "$root/etc/group")
[ "$(stat -c '%u %a' "$root/var/lib/mhc")" = "$mhc_uid 750" ] || fail "/var/lib/mhc: $(stat -c '%U %a' "$root/var/lib/mhc")"
for role in $roles; do
  [ "$(stat -c '%u %g %a' "$root/etc/mhc/$role.toml")" = "0 $mhc_gid 640" ] ||
    fail "/etc/mhc/$role.toml: $(stat -c '%u %g %a' "$root/etc/mhc/$role.toml")"
  in_root mhc-node check-config "/etc/mhc/$role.toml" || fail "check-config of the $role config"
  systemd-analyze verify --root="$root" "/usr/lib/systemd/system/mhc-node@$role.service" \
    > "$work/verify" 2>&1 || { cat "$work/verify" >&2; fail "systemd-analyze verify mhc-node@$role"; }
  [ ! -s "$work/verify" ] || { cat "$work/verify" >&2; fail "systemd-analyze verify warns about mhc-node@$role"; }
done

# --- Upgrade (reinstall) keeps an operator's edit; purge removes what the package made.
echo '# edited by the operator' >> "$root/etc/mhc/edge.toml"
in_root dpkg -i "/tmp/$(basename "$deb")" > "$work/reinstall.log" 2>&1 ||
  { cat "$work/reinstall.log" >&2; fail "reinstall failed"; }
grep -q '^# edited by the operator$' "$root/etc/mhc/edge.toml" || fail "a reinstall lost the conffile edit"
in_root dpkg --purge mhc-node-dbgsym mhc-node > "$work/purge.log" 2>&1 ||
  { cat "$work/purge.log" >&2; fail "purge failed"; }
for gone in /usr/bin/mhc-node /etc/mhc /var/lib/mhc /usr/lib/systemd/system/mhc-node@.service \
    /usr/share/doc/mhc-node "/usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug"; do
  [ ! -e "$root$gone" ] || fail "$gone is left after purge"
done
echo "package test: $(basename "$deb") and $(basename "$dbg") ok"
