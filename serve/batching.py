"""Dynamic batching in the manner of Triton's dynamic batcher.

Concurrent requests wait in a bounded queue; a single worker takes the first and everything already
queued behind it (up to ``max_batch`` images in all), runs them as one model call in a worker thread
(the event loop keeps accepting requests), and hands each request its own rows. What arrives while
the model runs is the next batch: an idle server runs a request at once, a busy one in batches, with
no wait window. ``max_delay`` > 0 adds one (wait that long for more after the first), which trades
latency for larger batches.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from serve.errors import Overloaded, ShuttingDown


@dataclass
class _Request:
    images: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int = 64, max_delay_ms: float = 0.0,
                 max_queue: int = 1024, on_batch: Callable[[int, list[float]], None] | None = None) -> None:
        """``run``: float32 [N,1,28,28] → [N, classes]. ``on_batch(size, queue_times)`` after every batch."""
        self.run = run
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task | None = None
        self._carry: _Request | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish everything already queued, then stop (the server stopping, or its model unloaded).
        Requests submitted from now on are refused with ShuttingDown: a steady stream of them would hold
        the stop, and one arriving after it (a request that found the model just before it was unloaded)
        would wait forever for a loop that is gone."""
        self._stopping = True
        await self.queue.join()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, images: np.ndarray) -> np.ndarray:
        if self._stopping:
            raise ShuttingDown()
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Request(images, future))
        except asyncio.QueueFull:
            raise Overloaded("server overloaded: inference queue is full, retry later") from None
        return await future

    async def _first(self) -> _Request:
        """The carried request, else the next queued one, however long that takes."""
        if self._carry is not None:
            request, self._carry = self._carry, None
            return request
        return await self.queue.get()

    async def _next(self, timeout: float) -> _Request | None:
        """The carried request, else a queued one, else the next to arrive within ``timeout`` seconds."""
        if self._carry is not None:
            request, self._carry = self._carry, None
            return request
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._first()
            batch = [first]
            size = len(first.images)
            deadline = time.perf_counter() + self.max_delay
            while size < self.max_batch:
                request = await self._next(deadline - time.perf_counter())
                if request is None:
                    break
                if size + len(request.images) > self.max_batch:
                    self._carry = request  # starts the next batch
                    break
                batch.append(request)
                size += len(request.images)
            started = time.perf_counter()
            try:
                inputs = batch[0].images if len(batch) == 1 else np.concatenate([r.images for r in batch])
                outputs = await loop.run_in_executor(self.executor, self.run, inputs)
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear about it
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
            else:
                offset = 0
                for request in batch:
                    rows = outputs[offset:offset + len(request.images)]
                    offset += len(request.images)
                    if not request.future.done():  # the client may have gone away
                        request.future.set_result(rows)
            finally:
                for _ in batch:  # a carried request is marked done with the batch it runs in
                    self.queue.task_done()
            if self.on_batch is not None:
                self.on_batch(size, [started - r.enqueued for r in batch])
