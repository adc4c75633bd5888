#!/usr/bin/env bash
# Creates .venv (once) and installs the project into it with the extras given as arguments.
# Sourced by demo.sh and test.sh so a fresh machine needs nothing but Python >= 3.11.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      py="$cand"; break
    fi
  done
fi
[ -n "$py" ] || { echo "bootstrap: need Python >= 3.11 on PATH" >&2; exit 2; }
if [ ! -x "$root/.venv/bin/python" ]; then
  "$py" -m venv "$root/.venv"
  "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
fi
extras="${1:-}"
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
# A stamp keyed on pyproject.toml and the extras keeps repeated runs fast.
stamp="$root/.venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  log="$root/.venv/pip-install.log"
  if ! "$root/.venv/bin/python" -m pip install --quiet -e "$spec" >"$log" 2>&1; then
    cat "$log" >&2
    echo "bootstrap: pip install failed (log above, also in $log)" >&2
    exit 2
  fi
  touch "$stamp"
fi
