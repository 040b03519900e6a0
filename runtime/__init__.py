"""The floor that workers and streams both stand on; it imports neither.

What both sides of the topics need, written once, depending on `schemas` only:

- `lifecycle`: the `Service` start/stop lifecycle;
- `kafka`: `KafkaSettings`, aiokafka client factories, topic metadata through
  public APIs (`wait_for_partitions`), `OnFirstAssignment`;
- `follow`: the compacted-topic `Follower` (no consumer group);
- `records` / `clock`: the `Record` protocol and `now_ms()`;
- `results`: the one `InferenceResult` builder;
- `images`: the one image loader (image root and sha256 checks);
- `tracing`: W3C trace context over Kafka headers and messaging spans.
"""
