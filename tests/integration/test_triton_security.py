"""Triton runs with model control off and its admin APIs behind a key (docs/security.md)."""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sluicegate.ops.stack.stack import LocalStack
from sluicegate.ops.stack.triton import GRPC_ADMIN_HEADER

pytestmark = pytest.mark.integration


def test_admin_apis_need_the_key_and_models_cannot_be_swapped(stack: LocalStack) -> None:
    key = stack.triton.admin_key()
    admin = {GRPC_ADMIN_HEADER: key}
    with grpcclient.InferenceServerClient(stack.settings.triton_url) as client:
        # What workers use stays open.
        assert client.is_server_ready() and client.is_model_ready("text-embed")
        assert client.get_model_metadata("text-embed").name == "text-embed"
        # Admin APIs without the key are refused...
        for call in (
            lambda h: client.get_model_repository_index(headers=h),
            lambda h: client.get_model_config("text-embed", headers=h),
            lambda h: client.get_inference_statistics("text-embed", headers=h),
        ):
            with pytest.raises(InferenceServerException) as refused:
                call(None)
            assert "restricted" in str(refused.value).lower() or "PERMISSION" in str(
                refused.value.status()
            ), refused.value
            with pytest.raises(InferenceServerException):
                call({GRPC_ADMIN_HEADER: "wrong"})
            call(admin)  # ...and served with it.
        # Even with the key, model control is off: nothing can be unloaded or loaded.
        with pytest.raises(InferenceServerException):
            client.unload_model("text-embed", headers=admin)
        with pytest.raises(InferenceServerException):
            client.load_model("text-embed", headers=admin)
        assert client.is_model_ready("text-embed")
    assert (stack.triton.config.state_dir / "admin.key").stat().st_mode & 0o077 == 0
