#!/usr/bin/env bash
# Builds Keyward's release packages from the lock file, into $CARGO_TARGET_DIR/packages (or
# target/packages):
#   keywardd_<version>_<arch>.deb        the service: dpkg-deb over packaging/keywardd/
#   Keyward_<version>_<arch>.deb, .rpm   the desktop app: Tauri's bundler (ui/node_modules)
#
#   packaging/build.sh            both (one release cargo invocation builds both binaries)
#   packaging/build.sh keywardd   keywardd's .deb alone (what `./dev repro` builds twice)
#
# Reproducible: the build is --locked, SOURCE_DATE_EPOCH is the last commit's time, the source
# and Cargo home paths are remapped out of the binaries (Rust and the C the crates compile), and
# the .deb's files get fixed owners, modes and times. `./dev repro` checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
what=${1:-all}
case "$what" in all | keywardd) ;; *)
  echo "usage: packaging/build.sh [all|keywardd]" >&2
  exit 2
  ;;
esac

target=${CARGO_TARGET_DIR:-$root/target}
out=$target/packages
cargo_home=${CARGO_HOME:-$HOME/.cargo}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
# Where the source and the crates were read from appears nowhere in the output: panic
# locations and debug paths read /keyward and /cargo whatever the checkout's folder.
export RUSTFLAGS="--remap-path-prefix=$root=/keyward --remap-path-prefix=$cargo_home=/cargo"
export CFLAGS="-ffile-prefix-map=$root=/keyward -ffile-prefix-map=$cargo_home=/cargo"
export CARGO_INCREMENTAL=0

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)

if [ "$what" = all ]; then
  [ -f ui/dist/index.html ] || { echo "build the UI first: (cd ui && npm ci && npm run build)" >&2; exit 1; }
  # One invocation: the two binaries share one dependency build (the desktop links
  # keyward-server as a library), and `./dev repro` builds keywardd the same way.
  cargo build --release --locked -p keyward-server -p keyward-desktop \
    --features keyward-desktop/custom-protocol --bin keywardd --bin keyward-desktop
else
  cargo build --release --locked -p keyward-server --bin keywardd
fi
bin=$target/release/keywardd
mkdir -p "$out"
# Only this build's packages in it (packaging/test.sh installs what it finds).
rm -f "$out"/keywardd_*.deb
[ "$what" = keywardd ] || rm -f "$out"/*.deb "$out"/*.rpm

# ---- keywardd's .deb -------------------------------------------------------------------------
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/keywardd
src=packaging/keywardd
install -D -m 0755 "$bin" "$pkg/usr/bin/keywardd"
strip --strip-unneeded "$pkg/usr/bin/keywardd"
install -D -m 0644 "$src/keywardd.toml" "$pkg/etc/keyward/keywardd.toml"
install -D -m 0644 "$src/keywardd.service" "$pkg/lib/systemd/system/keywardd.service"
doc=$pkg/usr/share/doc/keywardd
install -d -m 0755 "$doc"
packaging/copyright.py >"$doc/copyright"
chmod 0644 "$doc/copyright"
# The web dashboard, served at the origin (web_ui in the default config).
if [ -f ui/dist/index.html ]; then
  install -d -m 0755 "$pkg/usr/share/keyward"
  cp -r ui/dist "$pkg/usr/share/keyward/web-ui"
else
  echo "ui/dist is not built: the package's web_ui would be empty; build the UI first" >&2
  exit 1
fi
# The lowest glibc symbol versions the binary needs, so the package says which libc it runs on.
glibc=$(objdump -T "$pkg/usr/bin/keywardd" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
needed=$(objdump -p "$pkg/usr/bin/keywardd" | awk '/NEEDED/ {print $2}' | sort | tr '\n' ' ')
case " $needed " in *" libgcc_s.so.1 "*) gcc_dep=", libgcc-s1" ;; *) gcc_dep="" ;; esac
for lib in $needed; do
  case "$lib" in libc.so.6 | libm.so.6 | libgcc_s.so.1 | ld-linux-*) ;; *)
    echo "keywardd links $lib, which the package does not depend on: add it to Depends" >&2
    exit 1
    ;;
  esac
done
install -d -m 0755 "$pkg/DEBIAN"
size=$(du -sk --apparent-size --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: keywardd
Version: $version
Architecture: $arch
Maintainer: Keyward developers <security@keyward.app>
Installed-Size: $size
Depends: libc6 (>= $glibc)$gcc_dep, adduser
Section: net
Priority: optional
Description: passwordless account-security service (WebAuthn relying party)
 keywardd signs people in with security keys and passkeys only: no passwords, no email or
 SMS recovery. Sessions are short, every new sign-in raises a live alert, and the security
 log is hash-chained and signed. It is also an OpenID Connect provider for your apps.
 .
 This package runs it as a hardened systemd service (keywardd.service) under its own user,
 with its state in /var/lib/keyward and its configuration in /etc/keyward/keywardd.toml.
EOF
echo /etc/keyward/keywardd.toml >"$pkg/DEBIAN/conffiles"
for script in postinst prerm postrm; do install -m 0755 "$src/$script" "$pkg/DEBIAN/$script"; done
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/conffiles"
find "$pkg" -type d -exec chmod 0755 {} +
find "$pkg/usr/share" -type f -exec chmod 0644 {} +
find "$pkg" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$out/keywardd_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"

# ---- the desktop app's .deb and .rpm ---------------------------------------------------------
if [ "$what" = all ]; then
  tauri=ui/node_modules/.bin/tauri
  [ -x "$tauri" ] || { echo "the Tauri CLI is not installed: (cd ui && npm ci)" >&2; exit 1; }
  # The bundler packs the binary cargo built above (same features), into
  # target/release/bundle/{deb,rpm}; --no-sign: nothing to sign on Linux.
  rm -rf "$target/release/bundle"
  "$tauri" bundle --ci --no-sign --bundles deb,rpm --features custom-protocol >"$stage/tauri.log" 2>&1 ||
    { cat "$stage/tauri.log" >&2; exit 1; }
  for f in "$target"/release/bundle/deb/*.deb "$target"/release/bundle/rpm/*.rpm; do
    cp "$f" "$out/"
    echo "$out/$(basename "$f")"
  done
fi
