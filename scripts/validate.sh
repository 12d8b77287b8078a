#!/usr/bin/env bash
# Score weights on the held-out real cases (ensam_train/splits.json, "validation": real/ and
# real_more/) with the challenge's protocol, next to the box-fill and Otsu baselines: the
# figures of weights/MODEL_CARD.md. Two variants: the cases as given (a box step, then 5
# clicks) in OUT_DIR/boxed, and the same cases without their boxes (5 click steps only, as
# the challenge gives most MR cases) in OUT_DIR/click_only.
#   bash scripts/validate.sh [OUT_DIR] [extra `python -m ensam_infer evaluate` args]
# VARIANTS="boxed click_only" and METHODS="ensam,boxfill,otsu" choose what runs.
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
# One flat folder of links to the split's cases (case names are unique across folders).
CASES_DIR=$OUT/cases
rm -rf "$CASES_DIR"
mkdir -p "$CASES_DIR/imgs" "$CASES_DIR/gts"
ENSAM_DATA=$DATA .venv/bin/python - "$CASES_DIR" <<'PY'
import sys
from pathlib import Path

from ensam_train.splits import case_files, load_split, shared_data_root

out = Path(sys.argv[1])
for entry in load_split("validation"):
    img, gts = case_files(shared_data_root(), entry)
    if img.is_file() and gts.is_file():
        (out / "imgs" / img.name).symlink_to(img.resolve())
        (out / "gts" / gts.name).symlink_to(gts.resolve())
    else:
        print(f"warning: validation case {entry} not found", file=sys.stderr)
PY
for variant in ${VARIANTS:-boxed click_only}; do
    flag=()
    [[ $variant == click_only ]] && flag=(--click-only)
    .venv/bin/python -m ensam_infer evaluate --images "$CASES_DIR/imgs" --labels "$CASES_DIR/gts" \
        --out "$OUT/$variant" --methods "${METHODS:-ensam,boxfill,otsu}" "${flag[@]}" "$@" \
        > "$OUT/$variant.log"
    echo "## $variant"
    cat "$OUT/$variant/summary.md"
done
