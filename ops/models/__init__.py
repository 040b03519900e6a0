"""Model operations: the Triton model repository builder, targets, variants and evaluation.

The model code itself (pipelines, Triton adapters, in-process runners) lives
in ``sluicegate.inference``; ``build`` writes the repository that points at it.
"""
