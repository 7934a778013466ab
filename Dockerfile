# One image for every service of docker-compose.yml: the Dask scheduler, dask-cuda GPU workers,
# CPU workers and Jupyter. Based on the CUDA runtime image (the driver comes from the host through
# the NVIDIA container toolkit); torch's CUDA wheels bring their own CUDA libraries.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential curl \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/emchunks
COPY pyproject.toml README.md ./
COPY em_chunks ./em_chunks
COPY workflows ./workflows
COPY tilesets ./tilesets
COPY docs/notebooks ./notebooks

# torch with CUDA 12.x from the PyTorch index (bounded below 2.14 as in pyproject.toml), then the
# package with the [cuda] extra (dask-cuda) and Jupyter.
RUN pip install --upgrade pip \
    && pip install "torch>=2.4,<2.14" --index-url https://download.pytorch.org/whl/cu126 \
    && pip install ".[cuda]" jupyterlab

# a non-root user owning the shared data folder
RUN useradd --create-home --uid 1000 emchunks && mkdir -p /data && chown emchunks /data
USER emchunks
WORKDIR /data
EXPOSE 8786 8787 8888
CMD ["emchunks", "--help"]
