# ENSAM container for the CVPR 2025 interactive 3D segmentation challenge.
#
# Contract (docs/challenge_protocol.md): the organizers run, once per step and as a
# fresh process,
#   docker container run [--gpus "device=0"] -m 32G --name <team> --rm \
#     -v $PWD/inputs/:/workspace/inputs/ -v $PWD/outputs/:/workspace/outputs/ \
#     <team>:latest /bin/bash -c "sh predict.sh"
# so the working directory is /workspace, /bin/bash and sh must exist, and `python3`
# on PATH must have every runtime dependency. Nothing is fetched at run time.
#
# Build for submission (official base, which already has torch + CUDA), then save:
#   docker build -t ensam:latest .
#   docker save ensam:latest | gzip > ensam.tar.gz
# Build offline (used by scripts/container_smoke.sh; a wheels/ folder in the build
# context that holds torch and the requirements; base without torch):
#   docker build --network host --build-arg BASE_IMAGE=ensam-base:bookworm -t ensam:latest .
#
# Works with the legacy builder (no BuildKit features are used).

ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

# ---- stage 1: install the Python dependencies into /opt/ensam/site -------------------
# A separate stage so that the wheels copied in (about 300 MB) never become a layer
# of the final image; only the installed packages are copied over.
FROM ${BASE_IMAGE} AS deps
# `wheel[s]` is a wildcard: it matches nothing (and is silently skipped) when the
# context has no wheels/ folder, while requirements-container.txt always matches.
# The wheels land flat in /tmp/ctx next to the requirements file.
COPY wheel[s] requirements-container.txt /tmp/ctx/
RUN set -eu; \
    export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1; \
    if ls /tmp/ctx/*.whl >/dev/null 2>&1; then \
        # torch from wheels/ only when the base has none: a CPU wheel left in wheels/
        # must never shadow the CUDA torch of the official base.
        torch=torch; src="from wheels/"; \
        if python3 -c "import torch" >/dev/null 2>&1; then torch=""; src="of the base image"; fi; \
        echo "deps: offline install from wheels/, torch $src"; \
        python3 -m pip install --no-index --find-links /tmp/ctx \
            --target /opt/ensam/site -r /tmp/ctx/requirements-container.txt $torch; \
    else \
        echo "deps: install from the package index (torch comes with the base image)"; \
        python3 -c "import torch; print('base torch', torch.__version__)"; \
        python3 -m pip install --target /opt/ensam/site -r /tmp/ctx/requirements-container.txt; \
    fi; \
    rm -rf /opt/ensam/site/bin; \
    python3 -m compileall -q /opt/ensam/site >/dev/null || true

# ---- stage 2: the runtime image --------------------------------------------------------
FROM ${BASE_IMAGE}

# PYTHONPATH puts our pinned packages ahead of the base's site-packages (the official
# image has its own numpy) and makes /workspace/ensam_infer importable from anywhere.
# Bytecode is compiled at build time (below); every run is a fresh container, so
# writing .pyc at run time would only cost time. Thread counts (OMP_NUM_THREADS,
# torch.set_num_threads) are deliberately NOT set here: the organizers' host size is
# unknown, and the package decides from the CPUs it actually sees.
ENV PYTHONPATH=/workspace:/opt/ensam/site \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

COPY --from=deps /opt/ensam/site /opt/ensam/site

WORKDIR /workspace

COPY predict.sh requirements-container.txt /workspace/
COPY weights/ /workspace/weights/
COPY ensam_infer/ /workspace/ensam_infer/

# inputs/outputs exist in the image (world-writable) so that a run without mounts, or
# with a non-root --user and an unmounted outputs folder, still works. A non-root
# user (uid 1000) is provided for those who want it: `docker run --user 1000 ...`.
RUN set -eu; \
    python3 -m compileall -q /workspace/ensam_infer >/dev/null; \
    mkdir -p /workspace/inputs /workspace/outputs; \
    chmod 0777 /workspace/outputs; \
    chmod 0755 /workspace/inputs; \
    # Make our files readable for a non-root --user without touching files that are
    # already fine (a chmod of an unchanged file still copies it into a new layer).
    find /workspace /opt/ensam -type d ! -perm -0055 -exec chmod a+rx {} +; \
    find /workspace /opt/ensam -type f ! -perm -0044 -exec chmod a+r {} +; \
    if ! getent passwd 1000 >/dev/null 2>&1; then \
        (useradd --uid 1000 --create-home --shell /bin/bash ensam 2>/dev/null \
         || echo "ensam:x:1000:1000::/tmp:/bin/sh" >> /etc/passwd); \
    fi; \
    python3 -c "import numpy, scipy, SimpleITK, cc3d, torch; print('deps ok: torch', torch.__version__, 'numpy', numpy.__version__)"

# Which user runs predict.sh: root, on purpose; decided by testing the organizers'
# command. They bind-mount a host folder over /workspace/outputs, so its owner and mode
# are whatever their host has (the chmod above does not apply to a mount). Tested:
#   outputs owned by root, mode 755 (what `docker run -v` creates for a missing folder,
#   or a script run with sudo):  --user 1000 -> PermissionError, no output, the case
#   scores 0;  root -> works.
#   outputs owned by the host user (uid 1000), mode 755: root and uid 1000 both work.
# Root is the only default that writes in every case. (The organizers' script happens
# to `chmod -R 777` its folders first, but a default that relies on that is fragile.)
# The non-root user exists for local use: `docker run --user 1000 ...` works when the
# mounted outputs folder is writable by uid 1000; a root-owned outputs mount then needs
# `--user root` (the default). predict.sh sets `umask 000` so that what root leaves in
# outputs (the per-case cache folder) can be removed by the organizers' non-root user.
USER root

CMD ["/bin/bash", "-c", "sh predict.sh"]
