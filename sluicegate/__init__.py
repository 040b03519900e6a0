"""sluicegate: event-driven streaming inference over Kafka, budget-batched into Triton.

The packages are kept in the design card's top-level folders (`schemas/`,
`streams/`, `workers/`, `ops/`) and appear here as `sluicegate.<folder>`.
"""

__version__ = "0.1.0"
