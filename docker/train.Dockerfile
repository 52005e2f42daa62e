# syntax=docker/dockerfile:1.7
# gears_h training image: the `gears_h` command line with the [train] extra (SPEC §4, §9).
#
# Build from the repository root:
#   docker build -f docker/train.Dockerfile -t gears-h-train .                       # CUDA JAX
#   docker build -f docker/train.Dockerfile --build-arg VARIANT=cpu -t gears-h-train:cpu .
#   docker build -f docker/train.Dockerfile --build-arg WITH_DFT=1 -t gears-h-train:dft .
# Run (data read-only, runs written to the mounted folder):
#   docker run --gpus all -v "$PWD/data:/data:ro" -v "$PWD/runs:/work/runs" \
#       gears-h-train train /data/config.yaml
#
# VARIANT=cuda adds the [cuda] extra (jax[cuda12] wheels), VARIANT=cpu leaves it out;
# WITH_DFT=1 adds the [dft] extra (PySCF, for `gears_h` data generation).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# -- build: a self-contained virtual environment in /opt/venv --------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cuda
ARG WITH_DFT=0
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON=/usr/local/bin/python3.12 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    set -- --extra train \
    && case "${VARIANT}" in \
        cuda) set -- "$@" --extra cuda ;; \
        cpu) ;; \
        *) echo "VARIANT must be cuda or cpu, not '${VARIANT}'" >&2; exit 1 ;; \
    esac \
    && if [ "${WITH_DFT}" = 1 ]; then set -- "$@" --extra dft; fi \
    && uv sync --frozen --no-dev --no-install-project --no-editable "$@"
COPY pyproject.toml uv.lock README.md ./
COPY gears_h_core ./gears_h_core
COPY service ./service
COPY training ./training
RUN --mount=type=cache,target=/root/.cache/uv \
    set -- --extra train \
    && if [ "${VARIANT}" = cuda ]; then set -- "$@" --extra cuda; fi \
    && if [ "${WITH_DFT}" = 1 ]; then set -- "$@" --extra dft; fi \
    && uv sync --frozen --no-dev --no-editable "$@" \
    && /opt/venv/bin/gears_h --help > /dev/null

# -- runtime --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cuda
LABEL org.opencontainers.image.title="gears-h-train" \
      org.opencontainers.image.description="GEARS H training toolkit (gears_h command line)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      ai.gears-h.variant="${VARIANT}"
RUN groupadd --system --gid 10001 gearsh \
    && useradd --system --uid 10001 --gid gearsh --home-dir /home/gearsh --create-home \
        --shell /usr/sbin/nologin gearsh \
    && mkdir -p /work/runs /home/gearsh/.cache/gears_h/jax \
    && chown -R gearsh:gearsh /work /home/gearsh/.cache
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.90 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
VOLUME ["/work/runs"]
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["gears_h"]
CMD ["--help"]
