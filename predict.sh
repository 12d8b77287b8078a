#!/bin/sh
# Entry point of the challenge container. The organizers run `sh predict.sh` (POSIX sh,
# not bash) from /workspace, once per step, as a fresh container:
#   /workspace/inputs/<case>.npz  ->  /workspace/outputs/<case>.npz (key `segs`)
# python3 is the interpreter that holds the dependencies in both base images (official
# PyTorch image: /opt/conda/bin/python3; local Debian base: /usr/bin/python3); the
# Dockerfile's PYTHONPATH adds /workspace and the pinned packages.
set -eu
# The container runs as root, but the organizers' evaluation script runs as an ordinary
# host user and removes the outputs folder between submissions: whatever we create
# there (e.g. the per-case cache folder) must be deletable by that user, so create it
# world-writable.
umask 000
cd "$(dirname "$0")"
exec python3 -m ensam_infer predict --input /workspace/inputs --output /workspace/outputs
