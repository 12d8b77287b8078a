#!/usr/bin/env bash
# A short training burst on a lent GPU machine, ready to fire: it trains from the shipped
# weights (or INIT) for at most MINUTES and brings the weights back through $OUT.
#
#   bash scripts/gpu_burst.sh prepare          here: packs the training data (label maps and
#                                              training-split real cases, downsampled as the
#                                              sampler does, ~12 MiB) and the cc3d wheel for the
#                                              device's Python into .carry/ (git-ignored)
#   bash scripts/gpu_burst.sh device [MINUTES] there, through the device tool's run with
#                                              carry [".carry"] (default 8 minutes)
#
# What comes back in $OUT: model.pt (the weights, inference format), metrics.jsonl, plot.png
# and train.log. Validate model.pt here (scripts/validate.sh with ENSAM_WEIGHTS) before
# exporting it. The device has torch, numpy and scipy; cc3d travels as a wheel; SimpleITK is
# not needed (packed label maps are npz).
#
# Environment: PYTHON (default: .venv/bin/python here, python3 there), INIT (starting
# weights, default weights/ensam.pt), CONFIG (default ensam_train/configs/gpu_burst.json),
# RUN_DIR (default /tmp/ensam_burst: checkpoints stay on the device, they are too large
# to come back).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
CARRY=.carry
INIT=${INIT:-weights/ensam.pt}
CONFIG=${CONFIG:-ensam_train/configs/gpu_burst.json}
RUN_DIR=${RUN_DIR:-/tmp/ensam_burst}

prepare() {
    local py=${PYTHON:-.venv/bin/python}
    local cc3d_version
    cc3d_version=$("$py" -c 'import importlib.metadata as m; print(m.version("connected-components-3d"))')
    rm -rf "$CARRY/data"
    "$py" -m ensam_train pack --out "$CARRY/data"
    mkdir -p "$CARRY/whl"
    "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$CARRY/whl" "connected-components-3d==$cc3d_version"
    du -sh "$CARRY"
    echo "ready: run 'bash scripts/gpu_burst.sh device MINUTES' on the device with carry [\"$CARRY\"]"
}

device() {
    local minutes=${1:-8} py=${PYTHON:-python3}
    : "${OUT:?set OUT to the folder whose files come back}"
    [[ -d "$CARRY/data" ]] || { echo "no $CARRY/data: run 'bash scripts/gpu_burst.sh prepare' first" >&2; exit 2; }
    if ! "$py" -c 'import cc3d' 2>/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$CARRY"/whl/*.whl
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
    set +e
    ENSAM_DATA="$CARRY/data" ENSAM_CACHE_DIR=/tmp/ensam_label_maps PYTHONUNBUFFERED=1 \
        "$py" -m ensam_train train --run-dir "$RUN_DIR" --config "$CONFIG" --init "$INIT" \
        --minutes "$minutes" 2>&1 | tee "$OUT/train.log"
    local rc=${PIPESTATUS[0]}
    set -e
    for f in model.pt metrics.jsonl plot.png; do
        [[ -f "$RUN_DIR/$f" ]] && cp "$RUN_DIR/$f" "$OUT/"
    done
    ls -la "$OUT"
    return "$rc"
}

case "${1:-}" in
    prepare) prepare ;;
    device) shift; device "$@" ;;
    *) echo "usage: bash scripts/gpu_burst.sh prepare | device [MINUTES]" >&2; exit 2 ;;
esac
