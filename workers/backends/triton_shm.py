"""Input tensors handed to a same-host Triton through system shared memory.

Instead of serialising every input into the gRPC message, each in-flight
call takes a region from a small pool, writes its serialised tensors there
and sends only (region, offset, size) references; Triton reads them in
place. A region too small for a batch is re-created larger (to the next
power of two) and registered again. Outputs still come back in the gRPC
answer: they are small next to the inputs (an embedding batch is tens of
kilobytes, an image batch megabytes).

Only for a Triton on this host: the regions live in this host's /dev/shm.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import serialize_byte_tensor

__all__ = ["ShmPool", "ShmSlot"]

_MIN_REGION = 1 << 20  # 1 MiB


@dataclass
class ShmSlot:
    """One registered region; used by one call at a time."""

    name: str
    key: str
    size: int  # bytes
    handle: Any


Register = Callable[[str, str, int], Awaitable[None]]
Unregister = Callable[[str], Awaitable[None]]


class ShmPool:
    """`slots` regions, registered with Triton through the given callables.

    `place(arrays)` yields ``[(region name, byte size, offset), ...]`` for
    `arrays` (BYTES tensors) written into a free region, which stays taken
    until the block ends, so a region is never overwritten while Triton may
    still read it.
    """

    def __init__(self, *, slots: int, register: Register, unregister: Unregister) -> None:
        self._register = register
        self._unregister = unregister
        self._prefix = f"sg-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._free: asyncio.Queue[ShmSlot] = asyncio.Queue()
        self._all: dict[str, ShmSlot] = {}
        # Names Triton may still hold: it releases a region a moment after
        # answering, so an unregister right then fails "in use"; retried at close.
        self._stale: set[str] = set()
        self._generation = 0
        for i in range(slots):
            name = f"{self._prefix}-{i}"
            self._free.put_nowait(ShmSlot(name=name, key=f"/{name}", size=0, handle=None))

    @contextlib.asynccontextmanager
    async def place(
        self, arrays: Sequence[np.ndarray[Any, Any]]
    ) -> AsyncIterator[list[tuple[str, int, int]]]:
        blobs = [serialize_byte_tensor(a).item() for a in arrays]
        need = sum(len(b) for b in blobs)
        slot = await self._free.get()
        try:
            if slot.size < need:
                await self._grow(slot, need)
            refs: list[tuple[str, int, int]] = []
            offset = 0
            buf = slot.handle._mpsm_handle.buf
            for blob in blobs:
                buf[offset : offset + len(blob)] = blob
                refs.append((slot.name, len(blob), offset))
                offset += len(blob)
            yield refs
        finally:
            self._free.put_nowait(slot)

    async def _grow(self, slot: ShmSlot, need: int) -> None:
        """Replace `slot`'s region by a larger one under a new name (Triton may hold the old)."""
        old = slot.name if slot.handle is not None else None
        self._drop(slot)
        self._generation += 1
        name = f"{slot.name.split('.g', 1)[0]}.g{self._generation}"
        size = max(_MIN_REGION, 1 << (need - 1).bit_length())
        handle = shm.create_shared_memory_region(name, f"/{name}", size, create_only=True)
        try:
            await self._register(name, f"/{name}", size)
        except BaseException:
            shm.destroy_shared_memory_region(handle)
            raise
        slot.name, slot.key, slot.handle, slot.size = name, f"/{name}", handle, size
        self._all[slot.name] = slot
        if old is not None:
            await self._release(old)

    async def _release(self, name: str) -> None:
        try:
            await self._unregister(name)
            self._stale.discard(name)
        except Exception:  # "in use" for a moment after an answer, or Triton gone
            self._stale.add(name)

    def _drop(self, slot: ShmSlot) -> None:
        if slot.handle is not None:
            shm.destroy_shared_memory_region(slot.handle)
        slot.handle, slot.size = None, 0
        self._all.pop(slot.name, None)

    def forget_registrations(self) -> None:
        """Triton lost the regions (it restarted): re-create and register each on next use."""
        for slot in list(self._all.values()):
            self._drop(slot)

    async def close(self) -> None:
        """Unregister and unlink every region (idempotent)."""
        for slot in list(self._all.values()):
            await self._release(slot.name)
            self._drop(slot)
        for name in list(self._stale):
            await self._release(name)
