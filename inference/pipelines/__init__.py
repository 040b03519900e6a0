"""Model pipelines: plain Python over ONNX Runtime, no Triton imports.

Each pipeline takes a whole batch and pads it once, the way the worker's cost
accounting charges it (``len(batch) * max(member cost)``).
"""
