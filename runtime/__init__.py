"""The floor that workers and streams both stand on; it imports neither.

What both sides of the topics need, written once: the service lifecycle
(`lifecycle`), and (as the sweep proceeds) Kafka client factories, the
compacted-topic follower, clock helpers, the image loader and the tracing
helpers. Depends on `schemas` only.
"""
