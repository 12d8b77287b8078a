#!/usr/bin/env bash
# Create .venv with every dependency (idempotent: a complete .venv is left alone).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
STAMP=.venv/.requirements.sha1
want=$(sha1sum requirements.txt | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
    exit 0
fi
PY=${PYTHON:-python3}
"$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
echo "$want" > "$STAMP"
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
