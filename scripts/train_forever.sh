#!/usr/bin/env bash
# Keep a training run going: resume it after any crash (the run folder's checkpoint makes
# every restart exact), until it ends normally or is stopped.
#   bash scripts/train_forever.sh RUN_DIR CONFIG [extra ensam_train train args]
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR=$1
CONFIG=$2
shift 2
cd "$REPO"
for attempt in $(seq 1 50); do
    .venv/bin/python -m ensam_train train --run-dir "$RUN_DIR" --config "$CONFIG" "$@" && exit 0
    echo "[train_forever] run stopped with an error (attempt $attempt); resuming in 10 s" >&2
    sleep 10
done
exit 1
