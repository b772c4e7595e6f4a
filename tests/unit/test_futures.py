"""mason.futures behaves as concurrent.futures where a build uses it: results and exceptions,
cancellation, map's order and failures, wait's two modes and timeout, shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from mason.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    CancelledError,
    Future,
    InvalidStateError,
    ThreadPoolExecutor,
    in_daemon_thread,
    wait,
)


def test_a_future_carries_a_result_or_an_exception_once() -> None:
    f: Future[int] = Future()
    seen: list[Future[int]] = []
    f.add_done_callback(seen.append)
    f.set_result(3)
    assert f.done() and f.result() == 3 and f.exception() is None and seen == [f]
    with pytest.raises(InvalidStateError):
        f.set_result(4)
    g: Future[int] = Future()
    g.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        g.result()
    assert isinstance(g.exception(), KeyError)
    with pytest.raises(TimeoutError):
        Future().result(timeout=0.01)


def test_a_pending_future_cancels_a_running_one_does_not() -> None:
    f: Future[int] = Future()
    assert f.cancel() and f.cancelled() and f.done()
    with pytest.raises(CancelledError):
        f.result()
    g: Future[int] = Future()
    assert g.set_running_or_notify_cancel()
    assert not g.cancel() and g.running()


def test_the_pool_runs_calls_on_at_most_its_workers() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def job(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return i * 2

    with ThreadPoolExecutor(3, "t") as pool:
        assert list(pool.map(job, range(12))) == [i * 2 for i in range(12)]
        assert pool.submit(job, 5).result() == 10
        assert pool.submit(lambda: threading.current_thread().name).result().startswith("t_")
    assert most <= 3


def test_map_raises_the_first_failure_in_order_and_cancels_the_rest() -> None:
    gate = threading.Event()

    def job(i: int) -> int:
        if i == 1:
            raise ValueError(i)
        if i > 1:
            gate.wait(5)
        return i

    pool = ThreadPoolExecutor(1)
    results = pool.map(job, range(5))
    assert next(results) == 0
    with pytest.raises(ValueError):
        next(results)
    gate.set()
    pool.shutdown()


def test_wait_first_completed_all_completed_and_timeout() -> None:
    gate = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(gate.wait, 5)
        fast = pool.submit(lambda: 1)
        done, not_done = wait([slow, fast], return_when=FIRST_COMPLETED)
        assert done == {fast} and not_done == {slow}
        done, not_done = wait([slow, fast], timeout=0.05, return_when=ALL_COMPLETED)
        assert done == {fast} and not_done == {slow}
        gate.set()
        done, not_done = wait([slow, fast])
        assert done == {slow, fast} and not not_done


def test_shutdown_cancels_what_did_not_start_and_refuses_new_work() -> None:
    gate = threading.Event()
    pool = ThreadPoolExecutor(1)
    first = pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: 1)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: 2)
    gate.set()
    assert first.result(timeout=5) is True


def test_an_idle_pool_that_is_dropped_lets_its_workers_end() -> None:
    pool = ThreadPoolExecutor(2, "dropped")
    pool.submit(lambda: None).result()
    workers = [t for t in threading.enumerate() if t.name.startswith("dropped_")]
    del pool
    for t in workers:
        t.join(5)
        assert not t.is_alive()


def test_in_daemon_thread_hands_over_the_result_or_the_error_and_does_not_hold_the_exit() -> None:
    seen: list[bool] = []

    def work(x: int) -> int:
        seen.append(threading.current_thread().daemon)
        return x * 2

    assert in_daemon_thread("t", work, 21).result(10) == 42
    assert seen == [True]

    def fail() -> None:
        raise ValueError("no")

    failed = in_daemon_thread("t", fail)
    assert isinstance(failed.exception(10), ValueError)
