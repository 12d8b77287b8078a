#!/usr/bin/env bash
# Score weights on the held-out real cases (ensam_train/splits.json, "validation") with the
# challenge's 6-step protocol, next to the box-fill and Otsu baselines: the figures of
# weights/MODEL_CARD.md.
#   bash scripts/validate.sh [OUT_DIR] [extra `python -m ensam_infer evaluate` args]
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
OUT=${1:-$HOME/.cache/ensam/validation}
shift || true
DATA=${ENSAM_DATA:-$REPO/../shared/data}
if [[ ! -d "$DATA/real/imgs" ]]; then
    echo "no real cases at $DATA/real (set ENSAM_DATA)" >&2
    exit 2
fi
bash scripts/setup.sh
CASES=$(.venv/bin/python -c "import json; print(','.join(json.load(open('ensam_train/splits.json'))['validation']))")
.venv/bin/python -m ensam_infer evaluate --images "$DATA/real/imgs" --labels "$DATA/real/gts" \
    --out "$OUT" --cases "$CASES" --methods ensam,boxfill,otsu "$@"
cat "$OUT/summary.md"
