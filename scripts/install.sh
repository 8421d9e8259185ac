#!/usr/bin/env bash
# Builds Warren in release mode with the Swift standard library linked statically (so the
# installed binary needs only librabbitmq4 and libc, not the toolchain) and installs:
#
#   $PREFIX/bin/warren                            the daemon
#   $UNITDIR/warren.service                       the systemd unit, ExecStart pointing at the above
#   /etc/warren/warren.toml                       the example configuration, only if absent
#   $PREFIX/include/warren_plugin.h               the C ABI for in-process handler plugins
#   $PREFIX/lib/warren/plugins/                   a place for plugin libraries
#   $PREFIX/share/doc/warren/                     README, example and reference configurations
#
# Environment: PREFIX (default /usr/local); DESTDIR (default empty: the live system) stages
# everything under another root, as packagers and CI do; UNITDIR (default: the systemd unit
# directory for PREFIX); SKIP_BUILD=1 installs an existing release build; SWIFT_BUILD_FLAGS adds
# flags to `swift build`; KEEP_DEBUG=1 keeps the DWARF debug information. Idempotent: run it
# again to upgrade. An existing /etc/warren/warren.toml is never overwritten. Builds as the
# calling user; installing into the live system as non-root uses sudo for the copy steps only.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="${PREFIX:-/usr/local}"
prefix="${prefix%/}"
destdir="${DESTDIR:-}"
destdir="${destdir%/}"
if [ -z "${UNITDIR:-}" ]; then
  # systemd reads units from /usr/lib/systemd/system and /usr/local/lib/systemd/system; for any
  # other prefix the unit goes where administrators put their own.
  case "$prefix" in
    /usr | /usr/local) UNITDIR="$prefix/lib/systemd/system" ;;
    *) UNITDIR=/etc/systemd/system ;;
  esac
fi
bindir="$prefix/bin"
docdir="$prefix/share/doc/warren"
confdir=/etc/warren  # fixed: ConfigurationDirectory=warren and warren's default --config path

as_root=()
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi

read -r -a extra_flags <<<"${SWIFT_BUILD_FLAGS:-}"
build_flags=(-c release --static-swift-stdlib --product warren "${extra_flags[@]}")
if [ "${SKIP_BUILD:-0}" != "1" ]; then
  echo "install: building (swift build ${build_flags[*]})"
  swift build "${build_flags[@]}"
fi
binary="$(swift build "${build_flags[@]}" --show-bin-path)/warren"
[ -x "$binary" ] || { echo "install: no release build at $binary (run without SKIP_BUILD=1)" >&2; exit 1; }

stage() { "${as_root[@]}" install "$@"; }

stage -d -m 0755 "$destdir$bindir" "$destdir$UNITDIR" "$destdir$prefix/include" \
  "$destdir$prefix/lib/warren/plugins" "$destdir$docdir"
# Created only when missing: an administrator may have tightened it (secrets, TLS keys).
[ -d "$destdir$confdir" ] || stage -d -m 0755 "$destdir$confdir"
# A temporary name, then rename: a running warren keeps its (unlinked) old binary intact.
stage -m 0755 "$binary" "$destdir$bindir/.warren.new"
# DWARF is about a third of the binary (150 MB -> 100 MB); the symbol table stays, so crash
# backtraces still name functions. KEEP_DEBUG=1 installs the binary as built.
if [ "${KEEP_DEBUG:-0}" != "1" ] && command -v strip >/dev/null 2>&1; then
  "${as_root[@]}" strip --strip-debug "$destdir$bindir/.warren.new"
fi
"${as_root[@]}" mv -f "$destdir$bindir/.warren.new" "$destdir$bindir/warren"

# The unit names /usr/local/bin/warren and the /usr/local doc path; point them at this prefix.
unit="$(mktemp)"
trap 'rm -f "$unit"' EXIT
sed -e "s|/usr/local/bin/warren|$bindir/warren|g" \
    -e "s|/usr/local/share/doc/warren|$docdir|g" systemd/warren.service > "$unit"
stage -m 0644 "$unit" "$destdir$UNITDIR/warren.service"

stage -m 0644 Sources/WarrenPlugin/include/warren_plugin.h "$destdir$prefix/include/warren_plugin.h"
stage -m 0644 README.md config/warren.example.toml config/warren.reference.toml "$destdir$docdir/"

if [ -e "$destdir$confdir/warren.toml" ]; then
  echo "install: keeping the existing $destdir$confdir/warren.toml"
else
  stage -m 0644 config/warren.example.toml "$destdir$confdir/warren.toml"
  echo "install: wrote the example configuration to $destdir$confdir/warren.toml"
fi

echo "install: installed warren $("$destdir$bindir/warren" version | head -n 1 | cut -d' ' -f2) to ${destdir:-}$bindir"
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
  "${as_root[@]}" systemctl daemon-reload
  echo "install: start it with: systemctl enable --now warren"
fi
