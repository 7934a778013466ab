# One image for every service of docker-compose.yml: the Dask scheduler, dask-cuda GPU workers, CPU
# workers and Jupyter. One image means the scheduler, workers and client run the same versions of
# Python, dask, distributed and emchunks, which Dask requires (pickled tasks cross between them).
#
# Base: the official PyTorch CUDA *runtime* image, the usual choice of a GPU lab: torch, CUDA and cuDNN
# come matched and tested together, Python is 3.11 (as in development), and the CUDA libraries are
# installed once (a plain CUDA base + torch wheels would carry them twice). The host only needs the
# NVIDIA driver and the NVIDIA container toolkit; the runtime image has no compiler toolchain for CUDA,
# which emchunks does not need. Its torch satisfies pyproject's bound (>=2.4,<2.14), so pip keeps it.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# a C++ compiler and the Boost headers: waterz compiles scoring-function variants that its wheel does
# not ship on first use
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libboost-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/emchunks
COPY pyproject.toml README.md ./
COPY em_chunks ./em_chunks
COPY workflows ./workflows
COPY tilesets ./tilesets

# the package with the [cuda] extra (dask-cuda, CUDA 12 bindings) and JupyterLab; then fail the build
# if anything replaced the CUDA build of torch with a CPU one (checked without a GPU: builders have none)
RUN pip install ".[cuda]" jupyterlab \
    && python -c "import importlib.util as u, torch, em_chunks; assert torch.version.cuda and u.find_spec('dask_cuda')"

# run as a non-root user owning the shared data folder (a new named volume copies this ownership)
RUN useradd --create-home --uid 1000 emchunks \
    && mkdir -p /data /tmp/dask-worker \
    && chown emchunks /data /tmp/dask-worker
# the notebooks go into /data, Jupyter's folder: a new named volume is seeded with the image's /data
COPY --chown=emchunks docs/notebooks /data/notebooks
USER emchunks
WORKDIR /data
EXPOSE 8786 8787 8888
CMD ["emchunks", "--help"]
