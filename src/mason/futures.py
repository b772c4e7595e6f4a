"""Futures and a thread pool: the part of ``concurrent.futures`` a build uses, with its semantics,
without its imports (``logging``, and with it ``traceback``, ``linecache``, ``tokenize``,
``string``, ``weakref``; ``queue`` and ``heapq``: ~4 ms of every start, issue 14).

``Future`` (``result``, ``exception``, ``cancel``, ``set_result``, ...), ``ThreadPoolExecutor``
(``submit``, ``map``, ``shutdown(wait, cancel_futures)``, a ``with`` block shuts it down and
waits) and ``wait`` (``FIRST_COMPLETED`` or ``ALL_COMPLETED``, a timeout) behave as the standard
library's. Not kept: process pools, ``as_completed``, ``FIRST_EXCEPTION``, and the logging of
an exception a done-callback raises (it is printed to stderr instead).

Workers are not daemon threads: a pool that was never shut down keeps the interpreter from
exiting until its work is done, as the standard library's does; an idle worker of such a pool
ends when the pool is garbage (a worker holds its queue, not the pool)."""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "CancelledError",
    "Future",
    "InvalidStateError",
    "ThreadPoolExecutor",
    "in_daemon_thread",
    "wait",
]

T = TypeVar("T")

FIRST_COMPLETED = "FIRST_COMPLETED"
ALL_COMPLETED = "ALL_COMPLETED"

_PENDING, _RUNNING, _CANCELLED, _FINISHED = "PENDING", "RUNNING", "CANCELLED", "FINISHED"


class CancelledError(Exception):
    """The future was cancelled before it ran."""


class InvalidStateError(Exception):
    """A result set on a future that already has one (or was cancelled)."""


class Future(Generic[T]):
    """The result of a call that runs elsewhere: set once, waited for by any thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._state = _PENDING
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Future[T]], object]] = []
        self._waiters: list[threading.Event] = []

    def __repr__(self) -> str:
        return f"<Future {self._state}>"

    def cancel(self) -> bool:
        """Cancel it unless it runs or ran; True when it is cancelled."""
        with self._cond:
            if self._state in (_RUNNING, _FINISHED):
                return False
            if self._state == _CANCELLED:
                return True
            self._state = _CANCELLED
            self._cond.notify_all()
        self._ended()
        return True

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def running(self) -> bool:
        return self._state == _RUNNING

    def done(self) -> bool:
        return self._state in (_CANCELLED, _FINISHED)

    def set_running_or_notify_cancel(self) -> bool:
        """Mark it running; False (and nothing to run) when it was cancelled."""
        with self._cond:
            if self._state == _CANCELLED:
                return False
            if self._state != _PENDING:
                raise InvalidStateError(f"a {self._state} future cannot start")
            self._state = _RUNNING
            return True

    def set_result(self, result: T) -> None:
        self._set(result, None)

    def set_exception(self, exception: BaseException) -> None:
        self._set(None, exception)

    def _set(self, result: T | None, exception: BaseException | None) -> None:
        with self._cond:
            if self._state in (_CANCELLED, _FINISHED):
                raise InvalidStateError(f"a {self._state} future has its outcome")
            self._result, self._exception = result, exception
            self._state = _FINISHED
            self._cond.notify_all()
        self._ended()

    def _ended(self) -> None:
        with self._cond:
            waiters, callbacks = list(self._waiters), self._callbacks
            self._callbacks = []
        for event in waiters:
            event.set()
        for callback in callbacks:
            self._call(callback)

    def _call(self, callback: Callable[[Future[T]], object]) -> None:
        try:
            callback(self)
        except Exception as exc:  # as concurrent.futures: reported, not raised
            print(f"exception calling callback for {self!r}: {exc!r}", file=sys.stderr)

    def add_done_callback(self, fn: Callable[[Future[T]], object]) -> None:
        """Call ``fn(self)`` when it is done (now, when it is)."""
        with self._cond:
            if not self.done():
                self._callbacks.append(fn)
                return
        self._call(fn)

    def _wait_done(self, timeout: float | None) -> None:
        with self._cond:
            if not self._cond.wait_for(self.done, timeout):
                raise TimeoutError()

    def result(self, timeout: float | None = None) -> T:
        self._wait_done(timeout)
        if self._state == _CANCELLED:
            raise CancelledError()
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[return-value]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait_done(timeout)
        if self._state == _CANCELLED:
            raise CancelledError()
        return self._exception


def wait(
    fs: Iterable[Future[Any]], timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> tuple[set[Future[Any]], set[Future[Any]]]:
    """(done, not done) once one (``FIRST_COMPLETED``) or all of ``fs`` are done, or when
    ``timeout`` seconds passed."""
    if return_when not in (FIRST_COMPLETED, ALL_COMPLETED):
        raise ValueError(f"return_when={return_when!r} is not kept here")
    futures = set(fs)
    event = threading.Event()
    for f in futures:
        with f._cond:
            f._waiters.append(event)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            event.clear()
            done = {f for f in futures if f.done()}
            if done == futures or (done and return_when == FIRST_COMPLETED):
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            event.wait(left)
    finally:
        for f in futures:
            with f._cond:
                f._waiters.remove(event)
    return done, futures - done


class _WorkQueue:
    """The pool's pending calls and its workers' signal; what a worker holds of its pool."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]]
        self.items = deque()
        self.idle = 0
        self.closed = False


def _work(queue: _WorkQueue) -> None:
    while True:
        with queue.cond:
            while not queue.items and not queue.closed:
                queue.idle += 1
                queue.cond.wait()
                queue.idle -= 1
            if not queue.items:
                return
            future, fn, args, kwargs = queue.items.popleft()
        if not future.set_running_or_notify_cancel():
            continue
        _settle(future, fn, *args, **kwargs)
        del future, fn, args, kwargs  # nothing of the call is kept while idle


def _settle(future: Future[T], fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> None:
    """``future`` takes what ``fn(*args, **kwargs)`` returns or raises."""
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


def in_daemon_thread(name: str, fn: Callable[..., T], /, *args: Any) -> Future[T]:
    """``fn(*args)`` on a daemon thread of its own, its outcome in the future returned: a
    caller that gives up (an error, Ctrl-C) does not wait for it (e.g. a slow registry)."""
    future: Future[T] = Future()
    threading.Thread(target=_settle, args=(future, fn, *args), name=name, daemon=True).start()
    return future


class ThreadPoolExecutor:
    """Runs calls on up to ``max_workers`` threads, started as the work asks for them."""

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "") -> None:
        if max_workers is None:
            import os

            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix or f"ThreadPoolExecutor-{id(self):x}"
        self._queue = _WorkQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # the threads list, for submits from several threads

    def __enter__(self) -> ThreadPoolExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    def __del__(self) -> None:
        # a pool never shut down: its idle workers end (a worker holds only the queue)
        queue = getattr(self, "_queue", None)
        if queue is not None:
            with queue.cond:
                queue.closed = True
                queue.cond.notify_all()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        queue = self._queue
        with queue.cond:
            if queue.closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            queue.items.append((future, fn, args, kwargs))
            if queue.idle >= len(queue.items):
                queue.cond.notify()
                return future
        with self._lock:
            if len(self._threads) < self._max_workers:
                name = f"{self._prefix}_{len(self._threads)}"
                thread = threading.Thread(target=_work, args=(queue,), name=name)
                thread.start()
                self._threads.append(thread)
                return future
        with queue.cond:  # every worker is busy: the first to finish takes it
            queue.cond.notify()
        return future

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any]) -> Iterator[T]:
        """``fn`` over the items, all submitted now; the results in order as iterated (the
        first failure raised there, the calls not yet started then cancelled)."""
        futures = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]

        def results() -> Iterator[T]:
            try:
                futures.reverse()
                while futures:
                    yield futures.pop().result()
            finally:
                for f in futures:
                    f.cancel()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        queue = self._queue
        with queue.cond:
            queue.closed = True
            if cancel_futures:
                while queue.items:
                    queue.items.popleft()[0].cancel()
            queue.cond.notify_all()
        if wait:
            with self._lock:
                threads = list(self._threads)
            for thread in threads:
                thread.join()
