from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serve.batching import DynamicBatcher
from serve.errors import Overloaded, ShuttingDown


class RecordingModel:
    """Returns each image's first pixel as its 'logit', and records the batch sizes it was called with."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.release = threading.Event()
        self.started = threading.Event()  # set when the first call begins

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(len(images))
        self.started.set()
        if self.delay:
            time.sleep(self.delay)
        return images[:, 0, 0, :1].copy()


def images(values: list[float]) -> np.ndarray:
    out = np.zeros((len(values), 1, 28, 28), np.float32)
    out[:, 0, 0, 0] = values
    return out


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_model_call_and_get_their_own_rows() -> None:
    model = RecordingModel()

    async def scenario() -> tuple[list[np.ndarray], list[np.ndarray]]:
        batcher = DynamicBatcher(model, max_batch=64, max_delay_ms=50)
        batcher.start()
        sizes = [1, 3, 2, 1, 4]
        requests = [images([100 * i + j for j in range(n)]) for i, n in enumerate(sizes)]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return results, requests

    results, requests = run(scenario())
    assert model.calls == [11]
    for got, sent in zip(results, requests):
        np.testing.assert_array_equal(got[:, 0], sent[:, 0, 0, 0])


def test_batches_never_exceed_max_batch() -> None:
    model = RecordingModel()

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch=4, max_delay_ms=50)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(images([i, i])) for i in range(5)))
        await batcher.stop()
        for i, r in enumerate(results):
            assert r[:, 0].tolist() == [i, i]

    run(scenario())
    assert sum(model.calls) == 10 and max(model.calls) <= 4


def test_max_batch_1_turns_batching_off() -> None:
    model = RecordingModel()

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch=1, max_delay_ms=50)
        batcher.start()
        await asyncio.gather(*(batcher.submit(images([i])) for i in range(6)))
        await batcher.stop()

    run(scenario())
    assert model.calls == [1] * 6


def test_without_a_wait_window_what_arrives_while_the_model_runs_is_the_next_batch() -> None:
    gate = threading.Event()
    model = RecordingModel()

    def gated(x: np.ndarray) -> np.ndarray:
        out = model(x)
        gate.wait(10)  # the first call holds the model until the others are queued
        return out

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(gated, max_batch=64, max_delay_ms=0)  # no wait window (the default)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(images([0])))
        assert await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 10)
        later = [asyncio.ensure_future(batcher.submit(images([i]))) for i in range(1, 6)]
        await asyncio.sleep(0)  # let them reach the queue
        gate.set()
        results = await asyncio.gather(first, *later)
        await batcher.stop()
        return results

    results = run(scenario())
    assert model.calls == [1, 5]  # the lone first request ran at once; the five queued behind it ran together
    assert [r[0, 0] for r in results] == [0, 1, 2, 3, 4, 5]


def test_a_full_queue_answers_overloaded() -> None:
    model = RecordingModel(delay=0.2)

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch=1, max_delay_ms=0, max_queue=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(images([1])))
        # wait until the worker is busy with the first request
        assert await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 10)
        queued = [asyncio.ensure_future(batcher.submit(images([i]))) for i in (2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.submit(images([4]))
        assert [r[0, 0] for r in await asyncio.gather(first, *queued)] == [1, 2, 3]  # the queued ones still finish
        await batcher.stop()

    run(scenario())


def test_a_model_error_reaches_every_request_of_the_batch_and_the_batcher_goes_on() -> None:
    calls = []

    def flaky(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return x[:, 0, 0, :1]

    async def scenario() -> None:
        batcher = DynamicBatcher(flaky, max_batch=8, max_delay_ms=30)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(images([i])) for i in range(3)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert (await batcher.submit(images([7])))[0, 0] == 7
        await batcher.stop()

    run(scenario())


def test_a_stopped_batcher_answers_what_it_holds_and_refuses_the_rest() -> None:
    """An unloaded model's batcher: a request that found the model just before must not wait forever."""
    model = RecordingModel(delay=0.05)

    async def scenario() -> tuple[np.ndarray, BaseException | None]:
        batcher = DynamicBatcher(model, max_batch=4, max_delay_ms=1)
        batcher.start()
        held = asyncio.ensure_future(batcher.submit(images([7.0])))
        await asyncio.sleep(0)  # queued before the stop
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0)
        late: BaseException | None = None
        try:
            await asyncio.wait_for(batcher.submit(images([8.0])), timeout=5)
        except ShuttingDown as exc:
            late = exc
        await stopping
        return await held, late

    answered, late = run(scenario())
    assert answered[0, 0] == 7.0 and isinstance(late, ShuttingDown)
