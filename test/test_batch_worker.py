"""BatchWorker: the rclpy edge node's one inference thread (the queue part, without ROS)."""

from __future__ import annotations

import threading
import time

import pytest

from ask_expert_ros.core.nodes.batch_worker import BatchWorker


class _Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, batch: list[int]) -> None:
        self.release.wait()
        self.threads.add(threading.current_thread().name)
        self.batches.append(batch)


def test_every_item_once_in_order_on_one_thread_in_bounded_batches() -> None:
    recorder = _Recorder()
    worker: BatchWorker[int] = BatchWorker(recorder, max_queued=4, name='inference')
    worker.start()
    accepted: list[int] = []
    lock = threading.Lock()

    def produce(base: int) -> None:
        for i in range(200):
            with lock:  # acceptance order is what must be kept
                assert worker.put(base + i)
                accepted.append(base + i)

    producers = [threading.Thread(target=produce, args=(k * 1000,)) for k in range(3)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    worker.stop()
    handled = [item for batch in recorder.batches for item in batch]
    assert handled == accepted
    assert len(handled) == 600
    assert all(1 <= len(b) <= 4 for b in recorder.batches)
    assert recorder.threads == {'inference'}
    assert worker.queued == 0


def test_put_blocks_while_full_and_stop_drains_and_releases() -> None:
    recorder = _Recorder()
    recorder.release.clear()  # the handler holds its first batch
    worker: BatchWorker[int] = BatchWorker(recorder, max_queued=2)
    worker.start()
    assert worker.put(0)
    deadline = time.monotonic() + 5
    while worker.queued and time.monotonic() < deadline:  # the worker took [0]
        time.sleep(0.005)
    assert worker.put(1) and worker.put(2)
    outcome: list[bool] = []
    blocked = threading.Thread(target=lambda: outcome.append(worker.put(3)))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive() and not outcome, 'put returned while the queue was full'
    recorder.release.set()  # the handler finishes [0] and takes [1, 2]: room for 3
    blocked.join(5)
    assert outcome == [True]
    worker.stop()
    assert [i for b in recorder.batches for i in b] == [0, 1, 2, 3]
    assert not worker.put(4), 'a stopped worker must refuse items'


def test_stop_hands_over_what_is_queued_and_wakes_a_blocked_put() -> None:
    recorder = _Recorder()
    recorder.release.clear()
    worker: BatchWorker[int] = BatchWorker(recorder, max_queued=1)
    worker.start()
    assert worker.put(0)
    deadline = time.monotonic() + 5
    while worker.queued and time.monotonic() < deadline:
        time.sleep(0.005)
    assert worker.put(1)  # waits behind the held batch
    outcome: list[bool] = []
    blocked = threading.Thread(target=lambda: outcome.append(worker.put(2)))
    blocked.start()
    blocked.join(0.2)
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    blocked.join(5)
    assert outcome == [False], 'stop must release a put blocked on a full queue'
    recorder.release.set()
    stopper.join(5)
    assert not stopper.is_alive()
    assert [i for b in recorder.batches for i in b] == [0, 1]


def test_a_failing_batch_is_reported_and_the_worker_goes_on() -> None:
    handled: list[list[int]] = []
    errors: list[Exception] = []

    def handle(batch: list[int]) -> None:
        if 13 in batch:
            raise RuntimeError('unlucky batch')
        handled.append(batch)

    worker: BatchWorker[int] = BatchWorker(handle, max_queued=1, on_error=errors.append)
    worker.start()
    for i in (12, 13, 14):
        assert worker.put(i)
    worker.stop()
    assert handled == [[12], [14]]
    assert [str(e) for e in errors] == ['unlucky batch']


def test_max_queued_must_be_positive() -> None:
    with pytest.raises(ValueError, match='max_queued'):
        BatchWorker(lambda batch: None, max_queued=0)
