"""The reference models served by the local Triton server.

``pipelines`` holds the model code proper (ONNX Runtime sessions, pre- and
post-processing; importable and testable anywhere), ``backends`` the Triton
Python-backend adapters around them (importable only inside the Triton stub),
and ``build`` writes the Triton model repository that points at both.
"""
