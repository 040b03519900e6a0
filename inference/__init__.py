"""The model runtime: the reference models' code, wherever it runs.

- ``pipelines``: the model code proper (ONNX Runtime sessions, pre- and
  post-processing), plain Python, importable and testable anywhere.
- ``triton``: the Triton Python-backend adapters around the pipelines
  (``TritonPythonModel``; importable only inside the Triton stub).
- ``runners``: the same pipelines as in-process batch runners (the worker's
  ONNX Runtime backend, no server).
- ``io``: what a model takes and gives; ``weights``: where the shipped weights
  are; ``manifest``: the sha256 check every model runs when it loads.

Depends on ``schemas`` only (cost and image policy). ``ops`` builds model
repositories that point here; ``workers`` drives it through its backends.
"""
