"""Where a client finds the Kafka brokers when nothing names them: the local stack.

`sluicegate up` binds Kafka to `127.0.0.1:$SLUICEGATE_KAFKA_PORT` and writes
`<state dir>/stack.json` (`SLUICEGATE_STATE_DIR`, default `.state`) with the
`bootstrap_servers` it used. A client process (the SDK, `submit`, `route`,
`cancel`) resolves its bootstrap servers in this order, first found wins:

1. `SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS` (or `kafka=` given in code);
2. `SLUICEGATE_KAFKA_PORT` -> `127.0.0.1:<port>`, as `up` binds it;
3. `bootstrap_servers` in the state dir's `stack.json`, when the file exists;
4. `127.0.0.1:9092`.

`follow_stack` is a pydantic "before" validator body for a settings class
with a `kafka: KafkaSettings` field: it fills in `kafka.bootstrap_servers`
only where the caller left it out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STACK_FILE = "stack.json"


def stack_bootstrap(env: Mapping[str, str] | None = None) -> str | None:
    """The bootstrap servers the local stack's variables or its `stack.json` name, if any."""
    env = os.environ if env is None else env
    port = env.get("SLUICEGATE_KAFKA_PORT")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"SLUICEGATE_KAFKA_PORT={port!r} is not a port number; set it to the port "
                "`sluicegate up` bound Kafka to (see `sluicegate status`)"
            )
        return f"127.0.0.1:{int(port)}"
    path = Path(env.get("SLUICEGATE_STATE_DIR") or ".state") / STACK_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{path} is not readable JSON ({exc}); run `sluicegate up` again to rewrite it, "
            "or set SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS"
        ) from None
    servers = data.get("bootstrap_servers") if isinstance(data, dict) else None
    return servers if isinstance(servers, str) and servers else None


def follow_stack(data: Any, env: Mapping[str, str] | None = None) -> Any:
    """`data` (a settings class's raw input) with the stack's bootstrap servers filled in.

    Leaves `data` alone when it names them already or `kafka` is a model instance.
    """
    if not isinstance(data, dict):
        return data
    kafka = data.get("kafka")
    if kafka is None:
        kafka = {}
    if not isinstance(kafka, dict) or kafka.get("bootstrap_servers"):
        return data
    servers = stack_bootstrap(env)
    if servers is None:
        return data
    return {**data, "kafka": {**kafka, "bootstrap_servers": servers}}
