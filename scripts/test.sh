#!/usr/bin/env bash
# The test command: set up .venv, lint, then run the whole suite (the container smoke test
# included; it builds a Docker image and needs root). `--quick` skips tests marked slow.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [[ "${1:-}" == "--quick" ]]; then
    shift
    exec .venv/bin/python -m pytest -q -m "not slow" "$@"
fi
exec .venv/bin/python -m pytest -q "$@"
