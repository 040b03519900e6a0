"""Triton Python-backend models (``TritonPythonModel`` classes).

These modules import ``triton_python_backend_utils``, which exists only inside
the Triton Python backend stub; the generated ``1/model.py`` files re-export
the classes from here.
"""
