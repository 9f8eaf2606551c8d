"""Prepare batches on a background thread while the accelerator runs the previous step.

The worker records the inner iterator's state() right after producing each batch and
ships it with the batch, so `Prefetcher.state()` describes what the consumer has taken,
not what the worker has run ahead to: a checkpoint saved mid-run resumes at exactly the
next unconsumed batch. Exceptions in the worker are re-raised in the consumer.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Optional

_END, _ERROR = object(), object()


class Prefetcher:
    """Wrap an iterator; state()/restore() work when it has them (e.g. PackedBatches).

    size: batches held ready (cfg.prefetch). device_put: move each batch to the device
    (jax.device_put, optionally with `sharding`) on the worker thread, so the host-to-device
    copy overlaps compute too. transform: any other per-batch function, applied first.
    """

    def __init__(
        self, source: Any, size: int = 2, device_put: bool = False, sharding: Any = None,
        transform: Optional[Callable[[Any], Any]] = None,
    ):
        self._source = source
        self._size = max(1, int(size))
        self._fns = [transform] if transform else []
        if device_put:
            import jax  # only when asked: data/ itself does not need jax

            self._fns.append(lambda batch: jax.device_put(batch, sharding))
        self._stateful = hasattr(source, "state") and hasattr(source, "restore")
        self._thread: Optional[threading.Thread] = None
        self._restart(source.state() if self._stateful else {})

    def _restart(self, state: dict) -> None:
        self._state = dict(state)
        self._done: object = None  # True at the end, the exception after a failure
        self._queue: queue.Queue = queue.Queue(maxsize=self._size)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._work, args=(self._queue, self._stop), name="data-prefetch", daemon=True
        )
        self._thread.start()

    def _work(self, q: queue.Queue, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    batch = next(self._source)
                except StopIteration:
                    self._put(q, stop, (_END, None))
                    return
                state = self._source.state() if self._stateful else {}  # position after this batch
                for fn in self._fns:
                    batch = fn(batch)
                if not self._put(q, stop, (batch, state)):
                    return
        except BaseException as e:  # surfaced to the consumer by __next__
            self._put(q, stop, (_ERROR, e))

    @staticmethod
    def _put(q: queue.Queue, stop: threading.Event, item: tuple) -> bool:
        while not stop.is_set():  # a bounded wait, so close() never deadlocks on a full queue
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> Any:
        if self._done is True:
            raise StopIteration
        if self._done is not None:
            raise self._done
        if self._thread is None:
            raise RuntimeError("Prefetcher is closed; restore() it to iterate again.")
        batch, payload = self._queue.get()
        if batch is _END:
            self._done = True
            raise StopIteration
        if batch is _ERROR:
            self._done = payload
            raise payload
        self._state = payload
        return batch

    def state(self) -> dict:
        """Inner state after the last batch handed out (what a checkpoint must store)."""
        return dict(self._state)

    def restore(self, state: dict) -> None:
        """Drop what was prefetched, move the inner iterator, and start prefetching again."""
        self.close()
        self._source.restore(state)
        self._restart(self._source.state())

    def close(self) -> None:
        """Stop the worker; safe to call twice. Prefetched batches are discarded."""
        if self._thread is None:
            return
        self._stop.set()
        while True:  # unblock a worker waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()
        self._thread = None

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
