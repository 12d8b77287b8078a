#!/usr/bin/env bash
# End-to-end smoke test of the challenge container, offline and without a GPU.
#
#   sudo bash scripts/container_smoke.sh          (or as root, e.g. in CI after .ci/run
#                                                  has created .venv)
#
# Idempotent; a rerun reuses everything that is already there:
#   1. installs docker.io + debootstrap (apt) when missing, starts dockerd when it is
#      not running (--bridge=none --iptables=false; a docker0 bridge is removed);
#   2. builds the base image ensam-base:bookworm (Debian minbase + python3 + pip, no
#      torch) with debootstrap from the host's own Debian mirror; the rootfs tarball is
#      cached in ~/.cache/ensam/docker/;
#   3. downloads the wheels (torch + requirements-container.txt) into ./wheels/
#      (git-ignored) with the host's pip;
#   4. builds ensam:latest from the repository (BASE_IMAGE=ensam-base:bookworm, offline
#      install from wheels/); while weights/ensam.pt is not there, from a copy in
#      .docker-build/ (git-ignored) with an UNTRAINED checkpoint, with a warning;
#   5. makes the synthetic sample cases (`python -m ensam_infer samples`) and runs the
#      organizers' protocol on them through the project's evaluator
#      (`python -m ensam_infer evaluate --mode docker --strict`): the organizers' exact
#      command per step (with --network none; --gpus when nvidia-smi works), their click
#      rule and input rewriting. Every step must exit 0 and rewrite a uint8 `segs` of the
#      image's shape that finds the objects (DSC > 0). The outputs folder is owned by
#      root with mode 755 (only root can write there), and what the container leaves in
#      it must be removable by a non-root user.
#
# Measured on 2 busy cores: debootstrap + tarball about 40-85 s (first run only),
# wheel download about 5 s, image build about 75-100 s (about 5 s when cached), each
# container run 2.5-6 s; a rerun with everything cached takes about 45 s.
#
# Environment:
#   PYTHON        python with the package's dependencies (default: .venv/bin/python,
#                 else python3); used for the samples, the evaluator and pip.
#   IMAGE         image to build and test (default ensam:latest)
#   BASE_IMAGE    base image (default ensam-base:bookworm)
#   DEBIAN_MIRROR Debian mirror for debootstrap (default: read from the apt sources)
#   TORCH_SPEC    torch requirement for the wheels (default: torch==<PYTHON's torch>)
#   CLICK_STEPS   click steps simulated per case after the box step (default 2)
#   SAVE=1        also time `docker save | gzip` and print the archive size
#   KEEP=1        keep the scratch folder
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-ensam:latest}
BASE_IMAGE=${BASE_IMAGE:-ensam-base:bookworm}
CACHE=${ENSAM_DOCKER_CACHE:-${HOME:-/root}/.cache/ensam/docker}
CLICK_STEPS=${CLICK_STEPS:-2}
SUITE=bookworm
BASE_TARBALL="$CACHE/$SUITE-minbase-python3.tar.gz"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export DOCKER_BUILDKIT=0 # the Debian engine (20.10) has no BuildKit; the Dockerfile needs none

log() { printf '\n[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '\n[smoke] FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
TIMINGS=()
timing() { TIMINGS+=("$(printf '%-56s %8s s' "$1" "$2")"); }

WORK=$(mktemp -d /tmp/ensam_smoke.XXXXXX)
CONTAINER="ensam_smoke_$$"
cleanup() {
    local rc=$?
    if command -v docker >/dev/null 2>&1 && docker container inspect "$CONTAINER" >/dev/null 2>&1; then
        docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
    fi
    if [[ "${KEEP:-0}" == 1 || $rc -ne 0 ]]; then
        echo "[smoke] scratch folder kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

need_root() {
    [[ $(id -u) -eq 0 ]] || die "$1 needs root (run this script as root or with sudo)"
}

# ---------------------------------------------------------------- 1. docker engine
install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if ((${#missing[@]})); then
        need_root "installing ${missing[*]}"
        log "installing ${missing[*]} (apt)"
        local t0; t0=$(now)
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" iproute2 \
            || die "apt-get install ${missing[*]} failed"
        timing "apt install ${missing[*]}" "$(since "$t0")"
    fi
}

remove_docker0() {
    # Traffic to the default bridge network (172.17.x) is not allowed here.
    if [[ -e /sys/class/net/docker0 ]]; then
        log "removing the docker0 bridge"
        ip link delete docker0 || die "could not delete docker0"
    fi
}

start_engine() {
    if docker info >/dev/null 2>&1; then
        remove_docker0
        return
    fi
    need_root "starting dockerd"
    mkdir -p "$CACHE"
    log "starting dockerd (log: $CACHE/dockerd.log)"
    # Detached from this script (it stays up for later runs); no bridge, no iptables.
    local detach=()
    command -v setsid >/dev/null 2>&1 && detach=(setsid)
    "${detach[@]}" nohup dockerd --bridge=none --iptables=false >"$CACHE/dockerd.log" 2>&1 </dev/null &
    local i
    for i in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -20 "$CACHE/dockerd.log" >&2; die "dockerd did not come up"; }
    remove_docker0
    echo "storage driver: $(docker info --format '{{.Driver}}'), server $(docker version --format '{{.Server.Version}}')"
}

# ---------------------------------------------------------------- 2. base image
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
    # The first URI that ends in /debian, from one-line (.list) or deb822 (.sources) files.
    local files=() f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do [[ -f "$f" ]] && files+=("$f"); done
    ((${#files[@]})) || return 1
    grep -hE '^[[:space:]]*(deb[[:space:]]|URIs:)' "${files[@]}" \
        | sed -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/^[[:space:]]*URIs:[[:space:]]*//' \
        | tr ' \t' '\n\n' | grep -E '^https?://[^ ]+/debian/?$' | head -1
}

build_base() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        echo "base image $BASE_IMAGE present"
        return
    fi
    mkdir -p "$CACHE"
    if [[ ! -s "$BASE_TARBALL" ]]; then
        need_root "debootstrap"
        command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed"
        local mirror
        mirror=$(debian_mirror) || true
        [[ -n "$mirror" ]] || die "no Debian mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR"
        log "debootstrap $SUITE minbase + python3 from $mirror"
        local t0 root="$CACHE/rootfs.tmp"
        t0=$(now)
        rm -rf "$root"
        debootstrap --variant=minbase --include=python3,python3-pip "$SUITE" "$root" "$mirror" \
            >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -c . | gzip -1 >"$BASE_TARBALL.tmp"
        mv "$BASE_TARBALL.tmp" "$BASE_TARBALL"
        rm -rf "$root"
        timing "base rootfs (debootstrap + tar)" "$(since "$t0")"
    fi
    log "importing $BASE_IMAGE from $BASE_TARBALL"
    local t0; t0=$(now)
    docker import - "$BASE_IMAGE" <"$BASE_TARBALL" >/dev/null || die "docker import failed"
    timing "base image import" "$(since "$t0")"
}

# ---------------------------------------------------------------- 3. wheels
download_wheels() {
    local wheels="$REPO/wheels" torch_spec base_py host_py stamp_want
    if [[ -n "${TORCH_SPEC:-}" ]]; then
        torch_spec=$TORCH_SPEC
    else
        torch_spec=$("$PYTHON" -c 'import importlib.metadata as m; print("torch==" + m.version("torch").split("+")[0])' 2>/dev/null) \
            || torch_spec=torch
    fi
    base_py=$(docker run --rm --network none "$BASE_IMAGE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
        || die "python3 does not run in $BASE_IMAGE"
    host_py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    stamp_want="$(sha256sum "$REPO/requirements-container.txt" | cut -c1-16) $torch_spec py$base_py"
    if [[ -f "$wheels/.stamp" && "$(cat "$wheels/.stamp")" == "$stamp_want" ]] \
        && compgen -G "$wheels/torch-*.whl" >/dev/null; then
        echo "wheels present ($stamp_want)"
        return
    fi
    log "downloading wheels ($torch_spec + requirements-container.txt, python $base_py) into $wheels"
    local t0 extra=()
    t0=$(now)
    if [[ "$host_py" != "$base_py" ]]; then
        # Host python differs from the image's: ask pip for the image's interpreter.
        extra=(--python-version "$base_py" --only-binary=:all:
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
            --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
            --platform manylinux2014_x86_64)
    fi
    mkdir -p "$wheels"
    rm -f "$wheels/.stamp"
    "$PYTHON" -m pip download --disable-pip-version-check -q -d "$wheels" "${extra[@]}" \
        -r "$REPO/requirements-container.txt" "$torch_spec" || die "pip download failed"
    echo "$stamp_want" >"$wheels/.stamp"
    timing "wheel download" "$(since "$t0")"
    du -sh "$wheels"
}

# ---------------------------------------------------------------- 4. image
build_context() {
    # The repository itself, as the organizers would build it; only when the shipped
    # weights are missing, a copy in .docker-build/ (git-ignored) with an UNTRAINED
    # checkpoint, so that the container plumbing can still be tested.
    if [[ -s "$REPO/weights/ensam.pt" ]]; then
        echo "$REPO"
        return
    fi
    local ctx="$REPO/.docker-build/context"
    echo "[smoke] WARNING: weights/ensam.pt is missing; building from $ctx with an UNTRAINED checkpoint" >&2
    echo "WARNING: weights/ensam.pt missing: the image was tested with an UNTRAINED checkpoint" >"$WORK/weights_note"
    rm -rf "$ctx"
    mkdir -p "$ctx/weights"
    cp -a "$REPO/Dockerfile" "$REPO/.dockerignore" "$REPO/predict.sh" "$REPO/requirements-container.txt" "$ctx/"
    cp -a "$REPO/ensam_infer" "$ctx/"
    cp -al "$REPO/wheels" "$ctx/wheels" 2>/dev/null || cp -a "$REPO/wheels" "$ctx/wheels"
    (cd "$REPO" && "$PYTHON" -m ensam_infer init-weights --out "$ctx/weights/ensam.pt" >&2) \
        || die "python -m ensam_infer init-weights failed"
    echo "$ctx"
}

build_image() {
    local ctx t0
    ctx=$(build_context)
    log "building $IMAGE from $ctx (log: $WORK/build.log)"
    local old
    old=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    t0=$(now)
    if ! docker build --force-rm --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$ctx" >"$WORK/build.log" 2>&1; then
        tail -60 "$WORK/build.log" >&2
        die "docker build failed"
    fi
    timing "image build" "$(since "$t0")"
    # The image this build replaced (now untagged) would only fill the disk.
    if [[ -n "$old" && "$old" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
    grep -E '^(deps|base torch)' "$WORK/build.log" || true
    local size
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    echo "image $IMAGE: $((size / 1000000)) MB"
    IMAGE_MB=$((size / 1000000))
}

check_image() {
    log "checking the image offline (--network none)"
    local wd
    wd=$(docker image inspect -f '{{.Config.WorkingDir}}' "$IMAGE")
    [[ "$wd" == /workspace ]] || die "image working directory is '$wd', not /workspace"
    docker run --rm --network none "$IMAGE" /bin/bash -c '
        set -e
        test -f predict.sh
        test -s weights/ensam.pt || { echo "weights/ensam.pt missing in the image"; exit 1; }
        echo "user: $(id -u), python3: $(command -v python3)"
        python3 -c "import torch, numpy, scipy, SimpleITK, cc3d, ensam_infer.predict, ensam_infer.session; print(\"torch\", torch.__version__, \"numpy\", numpy.__version__)"
    ' || die "the image does not import its dependencies without network"
}

# ---------------------------------------------------------------- 5. runs
# The project's evaluator drives the container (python -m ensam_infer evaluate --mode
# docker): the organizers' command per step, their click rule and input rewriting, from
# the one implementation in ensam_infer/evaluation. --strict fails the run on any step
# error (non-zero exit, no output, unreadable, wrong shape or dtype, output not rewritten).
run_cases() {
    local samples="$WORK/samples" eval_dir="$WORK/eval"
    log "writing sample cases with $PYTHON -m ensam_infer samples"
    (cd "$REPO" && "$PYTHON" -m ensam_infer samples --out "$samples") >"$WORK/samples.log" 2>&1 \
        || { cat "$WORK/samples.log" >&2; die "python -m ensam_infer samples failed"; }
    compgen -G "$samples/imgs/*.npz" >/dev/null || die "no sample cases in $samples/imgs"
    log "evaluate --mode docker: box step + $CLICK_STEPS click steps per case (log: $WORK/eval.log)"
    local t0 rc
    t0=$(now)
    set +e
    (cd "$REPO" && "$PYTHON" -m ensam_infer evaluate --mode docker --image "$IMAGE" \
        --images "$samples/imgs" --labels "$samples/gts" --out "$eval_dir" --methods ensam \
        --clicks "$CLICK_STEPS" --strict --keep-work) >"$WORK/eval.log" 2>&1
    rc=$?
    set -e
    grep -E '^ensam ' "$WORK/eval.log" | sed 's/^/    /'
    timing "evaluate --mode docker (all cases and steps)" "$(since "$t0")"
    [[ $rc -eq 0 ]] || { tail -20 "$WORK/eval.log" >&2; die "evaluate --mode docker exited with $rc"; }
    # Every step that ran must have found the objects (the per-case CSV: step 1 of a case
    # without boxes is the organizers' 0 placeholder).
    "$PYTHON" - "$eval_dir/ensam_per_case.csv" "$CLICK_STEPS" <<'PY' || die "a step segmented nothing"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
steps = int(sys.argv[2]) + 1
bad = [f"{r['CaseName']} step {i}" for r in rows for i in range(1, steps + 1)
       if (i > 1 or r["box_step"] == "1") and not float(r[f"DSC_{i}"]) > 0]
print(f"    {len(rows)} cases scored; DSC > 0 at every step that ran" if not bad else "")
sys.exit(f"DSC 0 at {', '.join(bad)}" if bad else 0)
PY
    # The organizers' script (not root) deletes the outputs folder between submissions:
    # nothing the container left there may block that.
    local outputs blocked
    outputs=$(find "$eval_dir/work" -mindepth 2 -maxdepth 2 -type d -name outputs | head -1)
    [[ -n "$outputs" ]] || die "the evaluator's outputs folder is missing"
    blocked=$(find "$outputs" -mindepth 1 -type d ! -perm -0003 -printf '%p (%m %u)\n')
    [[ -z "$blocked" ]] || die "folders in outputs that a non-root user could not empty: $blocked"
    echo
    echo "outputs folder after all runs:"
    (cd "$outputs" && find . -mindepth 1 -printf '  %M %u %p\n' | sort | head -20)
}

save_image() {
    [[ "${SAVE:-0}" == 1 ]] || return 0
    log "docker save $IMAGE | gzip"
    local t0; t0=$(now)
    docker save "$IMAGE" | gzip -1 >"$WORK/ensam.tar.gz"
    timing "docker save | gzip -1" "$(since "$t0")"
    echo "archive: $(du -h "$WORK/ensam.tar.gz" | cut -f1)"
}

run_read_only() { # the box step again with a read-only root filesystem: nothing but the
    # outputs mount may need writing
    log "read-only root filesystem"
    local dir="$WORK/readonly" case
    mkdir -p "$dir/inputs" "$dir/outputs"
    case=$(ls "$WORK/samples/imgs" | head -n 1)
    cp "$WORK/samples/imgs/$case" "$dir/inputs/"
    (cd "$dir" && docker container run -m 32G --name "$CONTAINER" --rm --network none --read-only \
        -v "$PWD/inputs/:/workspace/inputs/" -v "$PWD/outputs/:/workspace/outputs/" \
        "$IMAGE" /bin/bash -c "sh predict.sh") || die "the container failed with --read-only"
    "$PYTHON" -c "import numpy as np, sys; s = np.load(sys.argv[1])['segs']; assert s.dtype == np.uint8 and s.any()" \
        "$dir/outputs/$case" || die "no valid output with --read-only"
    echo "  ok: $case with --read-only"
}

# ---------------------------------------------------------------- main
T_ALL=$(now)
IMAGE_MB=?
if ! "$PYTHON" -c 'import numpy, scipy, cc3d' 2>/dev/null; then
    # PYTHON may name the interpreter that made .venv (scripts/setup.sh reads it too).
    if [[ -x "$REPO/.venv/bin/python" ]] && "$REPO/.venv/bin/python" -c 'import numpy, scipy, cc3d' 2>/dev/null; then
        echo "[smoke] $PYTHON lacks numpy/scipy/cc3d; using $REPO/.venv/bin/python"
        PYTHON="$REPO/.venv/bin/python"
    else
        die "$PYTHON lacks numpy/scipy/cc3d (run scripts/setup.sh, or set PYTHON)"
    fi
fi
log "repository $REPO, python $PYTHON, image $IMAGE, base $BASE_IMAGE"
install_packages
start_engine
build_base
download_wheels
build_image
check_image
run_cases
run_read_only
save_image

log "summary"
printf '%s\n' "${TIMINGS[@]}"
echo "image size: ${IMAGE_MB} MB; total $(since "$T_ALL") s"
[[ -f "$WORK/weights_note" ]] && cat "$WORK/weights_note"
echo "container smoke test passed"
