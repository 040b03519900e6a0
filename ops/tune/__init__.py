"""`sluicegate tune`: calibrate a model x pool's batch budget against the real backend.

`knee` (pure: the ladder of batches and the knee), `sweep` (Triton calls,
the plot); `ops/cli_tune.py` is the command. The file it writes is
`workers.tuned`'s, which every worker reads.
"""
