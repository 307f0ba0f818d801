# tb in a container: `docker build -t tb .` then `docker run --rm -v "$PWD:/data" tb models list`.
# CPU wheels by default. For CUDA, pick a CUDA base and the matching wheel index, e.g.
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t tb:cuda .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG DEBIAN_FRONTEND=noninteractive

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# libGL and glib: opencv (pulled in by imgaug) links libGL.so.1 and libgthread/libglib.
# python3/venv only matter on CUDA bases, which ship no Python; the slim base already has it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 ca-certificates \
    && if ! command -v python3 >/dev/null; then \
         apt-get install -y --no-install-recommends python3 python3-venv; \
       fi \
    && rm -rf /var/lib/apt/lists/*

# A venv works the same on Debian slim and on Ubuntu-based CUDA images (PEP 668).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN python3 -m venv /opt/venv

WORKDIR /opt/tb
COPY pyproject.toml README.md ./
COPY toolbox ./toolbox
# torch/torchvision first from the chosen index, so the CPU (or CUDA) build is the one used.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch>=2.4,<2.15" "torchvision>=0.19,<0.30" \
    && pip install . \
    && tb --help >/dev/null

# Caches live under /cache (mount a volume to keep downloaded weights between runs);
# outputs go to /data, the working directory, meant for `-v "$PWD:/data"`.
ENV HF_HOME=/cache/huggingface \
    TORCH_HOME=/cache/torch \
    TB_CACHE_DIR=/cache/tb \
    MPLCONFIGDIR=/cache/matplotlib
RUN useradd --create-home --uid 1000 tb \
    && mkdir -p /data /cache \
    && chown tb:tb /data /cache
USER tb
WORKDIR /data
VOLUME ["/data", "/cache"]

ENTRYPOINT ["tb"]
CMD ["--help"]
