# syntax=docker/dockerfile:1.7
# gearsh-serve: the GEARS H inference service (SPEC §8, §9).
#
# Build from the repository root (the context must hold pyproject.toml and uv.lock):
#   docker build -f docker/serve.Dockerfile -t gearsh-serve .                           # CUDA JAX
#   docker build -f docker/serve.Dockerfile --build-arg VARIANT=cpu -t gearsh-serve:cpu .
# Run (serves the default model committed in gears_h_core/models/default):
#   docker run --gpus all -p 8000:8000 -p 8001:8001 gearsh-serve
# Another bundle: -v /path/to/bundle:/models/mine:ro -e GEARS_H_MODEL=/models/mine
#
# VARIANT=cuda installs the [serve,cuda] extras (jax[cuda12]: CUDA, cuDNN and the PJRT plugin
# come as wheels, so no CUDA base image is needed; the host driver arrives with --gpus);
# VARIANT=cpu installs [serve] only. Settings are the GEARS_H_* variables of
# service/settings.py.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# -- build: a self-contained virtual environment in /opt/venv --------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cuda
COPY --from=uv /uv /usr/local/bin/uv
# The image's interpreter, not the exact patch release pinned in .python-version.
ENV UV_PYTHON=/usr/local/bin/python3.12 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# Third-party dependencies first (a layer that survives source edits), then the project itself
# as a wheel (--no-editable), which carries the default bundle in gears_h_core/models/default.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    case "${VARIANT}" in \
        cuda) set -- --extra serve --extra cuda ;; \
        cpu) set -- --extra serve ;; \
        *) echo "VARIANT must be cuda or cpu, not '${VARIANT}'" >&2; exit 1 ;; \
    esac \
    && uv sync --frozen --no-dev --no-install-project --no-editable "$@"
COPY pyproject.toml uv.lock README.md ./
COPY gears_h_core ./gears_h_core
COPY service ./service
COPY training ./training
RUN --mount=type=cache,target=/root/.cache/uv \
    case "${VARIANT}" in \
        cuda) set -- --extra serve --extra cuda ;; \
        *) set -- --extra serve ;; \
    esac \
    && uv sync --frozen --no-dev --no-editable "$@" \
    && /opt/venv/bin/python -c "from gears_h_core.io.model_source import resolve_bundle_path; resolve_bundle_path('default')"

# -- runtime: the interpreter, the environment, a non-root user -------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cuda
LABEL org.opencontainers.image.title="gearsh-serve" \
      org.opencontainers.image.description="GEARS H inference service (HTTP :8000, gRPC :8001)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      ai.gears-h.variant="${VARIANT}"
RUN groupadd --system --gid 10001 gearsh \
    && useradd --system --uid 10001 --gid gearsh --home-dir /home/gearsh --create-home \
        --shell /usr/sbin/nologin gearsh \
    && mkdir -p /var/cache/gears_h/jax /models \
    && chown -R gearsh:gearsh /var/cache/gears_h
COPY --from=build /opt/venv /opt/venv
# GEARS_H_HOST: listen on every interface inside the container (the service's default is
# 127.0.0.1). XLA_PYTHON_CLIENT_MEM_FRACTION: the share of GPU memory JAX preallocates (one
# process per GPU); GEARS_H_GPU_MEMORY_FRACTION, when set, overrides it.
# No NVIDIA_VISIBLE_DEVICES: GPUs come only from --gpus or the device plugin, never by default.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GEARS_H_HOST=0.0.0.0 \
    GEARS_H_MODEL=default \
    GEARS_H_COMPILATION_CACHE_DIR=/var/cache/gears_h/jax \
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.90 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# JAX persistent compilation cache: a named volume here makes restarts skip most of the
# warm-up (docker run -v gearsh-jax-cache:/var/cache/gears_h/jax ...).
VOLUME ["/var/cache/gears_h/jax"]
USER 10001:10001
WORKDIR /home/gearsh
EXPOSE 8000 8001
# Ready only after every padding bucket is compiled: allow for a cold warm-up.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('GEARS_H_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["gearsh-serve"]
