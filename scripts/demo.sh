#!/usr/bin/env bash
# The main job on bundled sample cases: set up .venv, write the synthetic sample cases,
# run the challenge predictor on them, then the 6-step protocol with scores against the
# baselines. Results land in ./samples/ (git-ignored).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
bash scripts/setup.sh
PY=.venv/bin/python
$PY -m ensam_infer samples --out samples
$PY -m ensam_infer predict --input samples/imgs --output samples/predictions
$PY -m ensam_infer evaluate --images samples/imgs --labels samples/gts --out samples/evaluation \
    --methods ensam,boxfill,otsu
echo "masks: samples/predictions/  scores: samples/evaluation/summary.md"
cat samples/evaluation/summary.md
