"""Client settings follow the local stack; the sync facade refuses to block a loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import sluicegate
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.runtime.stackfile import stack_bootstrap
from sluicegate.streams.client import ClientNotStarted, ClientSettings


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in ("SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS", "SLUICEGATE_KAFKA_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_kafka_port_alone_moves_the_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _env(monkeypatch, SLUICEGATE_KAFKA_PORT="19092", SLUICEGATE_STATE_DIR=str(tmp_path))
    assert ClientSettings().kafka.bootstrap_servers == "127.0.0.1:19092"


def test_the_state_dirs_stack_json_is_followed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "stack.json").write_text(json.dumps({"bootstrap_servers": "127.0.0.1:29092"}))
    _env(monkeypatch, SLUICEGATE_STATE_DIR=str(tmp_path), SLUICEGATE_KAFKA__SASL_USERNAME="u")
    settings = ClientSettings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:29092"
    assert settings.kafka.sasl_username == "u", "the other kafka variables still apply"


def test_explicit_settings_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(json.dumps({"bootstrap_servers": "127.0.0.1:29092"}))
    _env(monkeypatch, SLUICEGATE_STATE_DIR=str(tmp_path), SLUICEGATE_KAFKA_PORT="19092")
    assert ClientSettings(kafka=KafkaSettings(bootstrap_servers="h:1")).kafka.bootstrap_servers == (
        "h:1"
    )
    monkeypatch.setenv("SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS", "h:2")
    assert ClientSettings().kafka.bootstrap_servers == "h:2"
    monkeypatch.delenv("SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS")
    assert ClientSettings().kafka.bootstrap_servers == "127.0.0.1:19092", "port over the file"


def test_no_stack_means_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _env(monkeypatch, SLUICEGATE_STATE_DIR=str(tmp_path / "none"))
    assert ClientSettings().kafka.bootstrap_servers == "127.0.0.1:9092"


def test_bad_stack_values_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="port number"):
        stack_bootstrap({"SLUICEGATE_KAFKA_PORT": "kafka"})
    (tmp_path / "stack.json").write_text("{not json")
    with pytest.raises(ValueError, match="sluicegate up"):
        stack_bootstrap({"SLUICEGATE_STATE_DIR": str(tmp_path)})


def test_the_top_level_package_exports_the_sdk() -> None:
    from sluicegate.streams.client import Client as AsyncClient
    from sluicegate.streams.sync_client import Client

    assert sluicegate.Client is Client and sluicegate.AsyncClient is AsyncClient
    with pytest.raises(AttributeError):
        _ = sluicegate.Nope  # type: ignore[attr-defined]


def test_the_sync_client_refuses_to_block_an_event_loop() -> None:
    async def inside() -> None:
        with pytest.raises(RuntimeError, match="AsyncClient"):
            sluicegate.Client().start()

    asyncio.run(inside())


def test_an_unstarted_client_says_how_to_start() -> None:
    request = sluicegate.InferenceRequest(request_id="r1", model="text-embed", texts=["x"])
    with pytest.raises(ClientNotStarted, match=r"with sluicegate\.Client"):
        sluicegate.Client().submit(request)
