"""The floor that workers and streams both stand on; it imports neither.

What both sides of the topics need, written once:
- `lifecycle`: the `Service` base (`start()`/`stop()`/`async with`) of the
  worker, the router and the rollups; `supervise`: their tasks in a TaskGroup.
- `kafka`: `KafkaSettings`, client factories (idempotent and transactional
  producers, consumers, admin), partition waits on public APIs.
- `follow`: the compacted-topic follower (control, cancels, health).
- `records` (`Record`), `clock` (`now_ms`), `results` (the one result builder).
- `images`: the one image loader (inline, `file://` under a root, `s3://`,
  `https://`; sha256); `image_refs` (settings, per-tenant allow-list) and
  `image_fetch` (obstore and httpx reads, SSRF checks) behind it.
- `tracing`: OpenTelemetry context over Kafka headers and the span helpers.

Depends on `schemas` only.
"""
