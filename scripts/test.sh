#!/usr/bin/env bash
# The whole test suite: system packages, Python environment, lint, types, tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/system-packages.sh
bash scripts/bootstrap.sh dev
. .venv/bin/activate
ruff check gateway adapters schemas tests bench
mypy
python -m pytest "$@"
