#!/usr/bin/env bash
# Builds Warren in release mode with the Swift standard library linked statically (so the
# installed binary needs only librabbitmq4 and libc, not the toolchain) and installs:
#
#   $PREFIX/bin/warren                            the daemon
#   $UNITDIR/warren.service                       the systemd unit, ExecStart pointing at the above
#   /etc/warren/warren.toml                       the example configuration, only if absent
#   $PREFIX/include/warren_plugin.h               the C ABI for in-process handler plugins
#   $PREFIX/lib/warren/plugins/                   a place for plugin libraries
#   $PREFIX/share/doc/warren/                     README, docs/, example and reference configurations
#   $PREFIX/share/man/man5/warren.toml.5.gz       the configuration file's manual page
#   $PREFIX/share/man/man1/warren.1.gz            with MANUAL=1: the command's manual page
#   $PREFIX/share/bash-completion/completions/warren, zsh and fish completions (see below)
#
# Environment: PREFIX (default /usr/local); DESTDIR (default empty: the live system) stages
# everything under another root, as packagers and CI do; UNITDIR (default: the systemd unit
# directory for PREFIX); SKIP_BUILD=1 installs an existing release build; SWIFT_BUILD_FLAGS adds
# flags to `swift build`; KEEP_DEBUG=1 keeps the DWARF debug information; MANUAL=1 also
# generates warren(1) (swift-argument-parser's GenerateManual plugin, which needs a debug build
# of the package: seconds after `swift build` or the tests, minutes on a fresh checkout, so off
# by default). Idempotent: run it again to upgrade. An existing /etc/warren/warren.toml is never
# overwritten. Builds as the calling user; installing into the live system as non-root uses
# sudo for the copy steps only.
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

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

read -r -a extra_flags <<<"${SWIFT_BUILD_FLAGS:-}"
# -z now: full RELRO, every symbol bound at start and the GOT then read-only (Debian's default
# hardening for binaries; a link option only).
build_flags=(-c release --static-swift-stdlib -Xlinker -z -Xlinker now --product warren "${extra_flags[@]}")
# The commit `warren version` prints. Package.swift reads WARREN_GIT_COMMIT; it also asks git
# itself, but SwiftPM caches the manifest's result across commits (not across environments), so
# the installed binary gets it from here.
if [ -z "${WARREN_GIT_COMMIT:-}" ] && commit="$(git rev-parse --short=12 HEAD 2>/dev/null)"; then
  [ -z "$(git status --porcelain 2>/dev/null)" ] || commit="$commit-dirty"
  export WARREN_GIT_COMMIT="$commit"
fi
if [ "${MANUAL:-0}" = "1" ]; then
  # warren(1) from the command-line definition, by swift-argument-parser's GenerateManual plugin.
  # The page's date: SOURCE_DATE_EPOCH, else the commit's, else today (a checkout without git,
  # as in the Docker build context), so that a rebuild of one commit gives the same bytes.
  epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
  # The plugin builds every product first. In debug mode: that build is the one `swift build`
  # and the tests already made (CI runs the tests first), and the release binary is left alone
  # (a release build through the plugin would relink it without --static-swift-stdlib).
  echo "install: generating warren(1) (swift package generate-manual)"
  swift package generate-manual --configuration debug --date "$(date -u -d "@$epoch" +%Y-%m-%d)" >"$scratch/manual.log" 2>&1 ||
    { cat "$scratch/manual.log" >&2; echo "install: generate-manual failed" >&2; exit 1; }
  page=.build/plugins/GenerateManual/outputs/warren/warren.1
  [ -s "$page" ] || { echo "install: generate-manual did not write $page" >&2; exit 1; }
  # generate-manual copies a help text's blank lines (paragraph breaks in `warren --help`) as
  # they are, which mdoc warns about; .Pp is mdoc's paragraph break.
  sed 's/^$/.Pp/' "$page" | gzip -9 -n > "$scratch/warren.1.gz"
fi
if [ "${SKIP_BUILD:-0}" != "1" ]; then
  echo "install: building (swift build ${build_flags[*]})"
  swift build "${build_flags[@]}"
fi
binary="$(swift build "${build_flags[@]}" --show-bin-path)/warren"
[ -x "$binary" ] || { echo "install: no release build at $binary (run without SKIP_BUILD=1)" >&2; exit 1; }
# The point of this build: the installed binary needs librabbitmq and libc, not a toolchain.
if ldd "$binary" | grep -q 'libswift'; then
  echo "install: $binary links the Swift runtime dynamically (another build replaced the static one); run without SKIP_BUILD=1" >&2
  exit 1
fi

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

# The unit names /usr/local/bin/warren and the /usr/local doc path; point them at this prefix,
# and name the manual pages installed below (`systemctl help warren` opens them).
manuals="man:warren.toml(5)"
if [ -s "$scratch/warren.1.gz" ]; then manuals="man:warren(1) $manuals"; fi
sed -e "s|/usr/local/bin/warren|$bindir/warren|g" \
    -e "s|/usr/local/share/doc/warren|$docdir|g" \
    -e "s|^Documentation=|Documentation=$manuals |" systemd/warren.service > "$scratch/warren.service"
stage -m 0644 "$scratch/warren.service" "$destdir$UNITDIR/warren.service"

stage -m 0644 Sources/WarrenPlugin/include/warren_plugin.h "$destdir$prefix/include/warren_plugin.h"
stage -m 0644 README.md config/warren.example.toml config/warren.reference.toml "$destdir$docdir/"
# The reference documents, where README's relative links (docs/delivery.md ...) expect them.
stage -d -m 0755 "$destdir$docdir/docs"
stage -m 0644 docs/*.md "$destdir$docdir/docs/"

# Shell completions, written by the installed binary itself (swift-argument-parser), so they
# always match its options. Debian's zsh reads vendor-completions under /usr, and site-functions
# under /usr/local (its default fpath); bash-completion and fish search $PREFIX/share through
# XDG_DATA_DIRS.
case "$prefix" in
  /usr) zshdir="$prefix/share/zsh/vendor-completions" ;;
  *) zshdir="$prefix/share/zsh/site-functions" ;;
esac
completions=(
  "bash:$prefix/share/bash-completion/completions/warren"
  "zsh:$zshdir/_warren"
  "fish:$prefix/share/fish/vendor_completions.d/warren.fish"
)
for entry in "${completions[@]}"; do
  shell="${entry%%:*}"
  target="${entry#*:}"
  # A completion file is sourced, never run: no #! line (the bash script starts with one).
  "$destdir$bindir/warren" --generate-completion-script "$shell" | sed '1{/^#!/d}' > "$scratch/completion"
  [ -s "$scratch/completion" ] || { echo "install: warren wrote no $shell completion script" >&2; exit 1; }
  stage -d -m 0755 "$destdir$(dirname "$target")"
  stage -m 0644 "$scratch/completion" "$destdir$target"
done

# Manual pages, compressed as man-db and Debian expect. warren.toml(5) is written by hand
# (docs/man/); warren(1) is generated from the command-line definition, so it cannot drift.
mandir="$prefix/share/man"
stage -d -m 0755 "$destdir$mandir/man5"
gzip -9 -n -c docs/man/warren.toml.5 > "$scratch/warren.toml.5.gz"
stage -m 0644 "$scratch/warren.toml.5.gz" "$destdir$mandir/man5/warren.toml.5.gz"
if [ -s "$scratch/warren.1.gz" ]; then
  stage -d -m 0755 "$destdir$mandir/man1"
  stage -m 0644 "$scratch/warren.1.gz" "$destdir$mandir/man1/warren.1.gz"
fi

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
