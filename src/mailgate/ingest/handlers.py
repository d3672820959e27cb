"""Capture handlers: each captured message, as its capture event JSON, handed to code the
developer chose, which answers ``CONTINUE`` (keep the SMTP session for the next
message) or ``CLOSE`` (``221`` after the ``250``, and the session ends).

A handler is either an ``http://``/``https://`` URL (the event POSTed as JSON; the
response body is the answer) or ``module:function`` (called with the event as a dict,
sync in a worker thread or async on the loop, returning the answer). A bounded pool
(``smtp.pool.num_workers``) runs them: when every worker is busy, the SMTP session
waiting to hand its message over waits too (backpressure, no unbounded queue), while
every other session goes on being served. A handler that fails, answers something
else than a 2xx or takes longer than ``smtp.pool.timeout`` makes the client hear
``451 4.3.0`` and the message is not kept, so the client's retry is not a duplicate.

On shutdown the SMTP server stops first, giving a handler already running the grace
period to answer (``smtp.shutdown_grace``); then :meth:`HandlerPool.aclose` cancels
whatever still runs and takes nothing more. A sync handler's worker thread cannot be
interrupted: it runs to its end and its answer is dropped.

Sync handlers run in threads of their own, ``num_workers`` of them: one that timed out
still holds its thread until it returns, and stuck handlers must never take the threads
that parse messages and read the store (asyncio's default executor) from everyone else.
A call that finds every such thread stuck waits for one within its time-out. They are
daemon threads (:class:`HandlerThreads`): one stuck for good must not keep the process
from ending once the gateway has stopped.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor, Future
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from mailgate.blockwise import json_blocks
from mailgate.deliver.fetch import loggable_url, response_head
from mailgate.errors import ConfigError

if TYPE_CHECKING:  # the composition root makes the client, only when handlers are set
    import httpx

__all__ = [
    "EVENT_ON_LOOP",
    "HandlerFailed",
    "HandlerPool",
    "HandlerThreads",
    "Verdict",
    "load_handlers",
]

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    CONTINUE = "CONTINUE"
    CLOSE = "CLOSE"


class HandlerFailed(Exception):
    """A handler crashed, timed out or answered nonsense (the reason)."""


class HandlerRecorder(Protocol):
    def smtp_handler(self, kind: str, outcome: str, seconds: float) -> None: ...


Handler = Callable[[dict[str, Any]], Awaitable[Verdict]]


class HandlerPool:
    """``await run(event)``: every handler in order, at most ``workers`` events at once;
    CLOSE if any handler said so, else CONTINUE; :class:`HandlerFailed` if one failed.

    Each event runs in a task of the pool's, so :meth:`aclose` can end them; a caller
    cancelled while it waits (its SMTP session lost) cancels its event's task too."""

    def __init__(
        self,
        handlers: Sequence[tuple[str, Handler]],
        *,
        workers: int,
        timeout: float,
        recorder: HandlerRecorder | None = None,
    ) -> None:
        self.handlers = list(handlers)  #: (kind, call): kind is webhook or python
        self.timeout = timeout
        self.recorder = recorder
        self._slots = asyncio.Semaphore(workers)
        self._running: set[asyncio.Task[Verdict]] = set()
        self._closed = False

    async def run(self, event: dict[str, Any]) -> Verdict:
        if self._closed:
            raise HandlerFailed("the capture handlers are shut down")
        task = asyncio.create_task(self._all(event), name=f"mailgate-handlers-{event.get('id')}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await task

    async def aclose(self) -> None:
        """Take no more events; cancel those still with their handlers (nobody waits for
        their verdict once the SMTP server has stopped) and wait until they have ended."""
        self._closed = True
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _all(self, event: dict[str, Any]) -> Verdict:
        async with self._slots:
            verdict = Verdict.CONTINUE
            for kind, handler in self.handlers:
                if await self._one(kind, handler, event) is Verdict.CLOSE:
                    verdict = Verdict.CLOSE
            return verdict

    async def _one(self, kind: str, handler: Handler, event: dict[str, Any]) -> Verdict:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                verdict = await handler(event)
            if deadline.expired():  # it swallowed its cancellation (bare except:) to answer
                raise TimeoutError
        except TimeoutError:
            self._record(kind, "timeout", started)
            raise HandlerFailed(f"a {kind} handler took over {self.timeout:g} s") from None
        except asyncio.CancelledError:  # the session lost, or shutdown past its grace
            raise
        # SystemExit and KeyboardInterrupt too: sys.exit() in a handler is its crash, not
        # the gateway's end (left to the event loop, it stopped the whole process)
        except BaseException as exc:
            self._record(kind, "error", started)
            log.warning("capture handler (%s) failed on message %s: %s", kind, event.get("id"),
                        f"{type(exc).__name__}: {exc}"[:300])  # fmt: skip
            raise HandlerFailed(f"a {kind} handler failed") from exc
        self._record(kind, verdict.value.lower(), started)
        return verdict

    def _record(self, kind: str, outcome: str, started: float) -> None:
        if self.recorder is not None:
            self.recorder.smtp_handler(kind, outcome, time.monotonic() - started)


_Call = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class HandlerThreads(Executor):
    """``workers`` daemon threads that call the sync handlers.

    Not a ThreadPoolExecutor: Python joins its threads at exit, whatever ``shutdown``
    was told, so a sync handler stuck for good (a call to a peer that never answers)
    kept the process alive after SIGTERM, when it had said it stopped. A daemon thread
    is left behind at exit instead; its handler's answer is dropped, as a shutdown past
    its grace drops it anyway."""

    def __init__(self, workers: int, *, name: str = "mailgate-handler") -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError("the handler threads are shut down")
        future: Future[Any] = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; ``cancel_futures``: drop those not started; ``wait``: for
        the threads to end (each ends once its call has returned)."""
        self._closed = True
        while cancel_futures:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                call[0].cancel()
        for _ in self._threads:
            self._calls.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            if future.set_running_or_notify_cancel():  # else cancelled while it waited
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # the handler's, for its caller to see
                    future.set_exception(exc)
            del call, future, fn, args, kwargs  # nothing of an event held while idle


def load_handlers(
    specs: Sequence[str], client: httpx.AsyncClient, threads: Executor
) -> list[tuple[str, Handler]]:
    """The handlers named by ``specs``, sync functions called in ``threads``; ConfigError
    for one that cannot be used (an unimportable module, a name that is not callable), at
    start, not at the first mail."""
    return [_load(spec, client, threads) for spec in specs]


def _load(spec: str, client: httpx.AsyncClient, threads: Executor) -> tuple[str, Handler]:
    if spec.startswith(("http://", "https://")):
        shown = loggable_url(spec)
        return "webhook", _webhook(spec, shown, client, _reader(shown))
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"smtp.handlers: {spec!r} is neither an http(s) URL nor module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"smtp.handlers: cannot import {module_name!r}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"smtp.handlers: {spec!r} is not a function")
    return "python", _python(function, threads, _reader(spec))


#: octets of a webhook's answer read: ``CLOSE`` with room for space and quotes; a longer
#: answer is something else (CONTINUE), and the rest is never read into memory
_MAX_ANSWER = 1024


def _webhook(
    url: str, shown: str, client: httpx.AsyncClient, read: Callable[[object], Verdict]
) -> Handler:
    """POSTs to ``url``, logged as ``shown``."""

    async def post(event: dict[str, Any]) -> Verdict:
        blocks = await _json_blocks(event)
        headers = {**_JSON, "Content-Length": str(sum(map(len, blocks)))}
        async with client.stream("POST", url, content=_sent(blocks), headers=headers) as response:
            if not response.is_success:
                raise HandlerFailed(f"{shown} answered {response.status_code}")
            answer = await response_head(response, _MAX_ANSWER + 1)  # past it: no word
        return read(answer)

    return post


_JSON = {"Content-Type": "application/json"}

#: the largest message whose capture event is made (by the SMTP server) and encoded for
#: a webhook on the event loop; a bigger one's in a worker thread, a block at a time: a
#: 10 MiB attachment's base64, then ``json.dumps`` of it, held the loop 91 ms. A small
#: one's stays on the loop, cheaper than the hand-off
EVENT_ON_LOOP = 64 * 1024


async def _json_blocks(event: dict[str, Any]) -> list[bytes]:
    """The event as JSON, as httpx's ``json=`` sends it: a big message's in a worker
    thread and in blocks (:mod:`mailgate.blockwise`), which are sent one by one: handed
    to httpx whole, 68 MB were copied into the connection's buffer on the event loop."""
    size = event.get("size")
    if isinstance(size, int) and size > EVENT_ON_LOOP:
        return await asyncio.to_thread(json_blocks, event)
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return [text.encode()]


async def _sent(blocks: list[bytes]) -> AsyncIterator[bytes]:
    for block in blocks:
        yield block


def _python(
    function: Callable[..., Any], threads: Executor, read: Callable[[object], Verdict]
) -> Handler:
    if inspect.iscoroutinefunction(function):

        async def call_async(event: dict[str, Any]) -> Verdict:
            return read(await function(event))

        return call_async

    async def call(event: dict[str, Any]) -> Verdict:
        result = await asyncio.get_running_loop().run_in_executor(threads, function, event)
        if inspect.isawaitable(result):
            result = await result
        return read(result)

    return call


def _reader(spec: str) -> Callable[[object], Verdict]:
    """:func:`_verdict` of the handler ``spec``'s answers; the first that is no verdict
    is logged (a typo such as ``STOP`` or ``"CLOSE."`` would keep sessions unseen)."""
    warned = False

    def read(answer: object) -> Verdict:
        nonlocal warned
        verdict = _verdict(answer)
        if verdict is not None:
            return verdict
        if not warned:
            warned = True
            log.warning("capture handler %s answered %s, which is neither CLOSE nor CONTINUE:"
                        " taken as CONTINUE (told once)", spec, repr(answer)[:80])  # fmt: skip
        return Verdict.CONTINUE

    return read


def _verdict(answer: object) -> Verdict | None:
    """``CLOSE`` (any case; surrounding space and JSON quotes ignored) closes;
    ``CONTINUE`` or nothing (None, an empty body) keeps the session; None for anything
    else (kept too)."""
    if answer is None:
        return Verdict.CONTINUE
    if isinstance(answer, Verdict):
        return answer
    if isinstance(answer, bytes):
        answer = answer.decode("utf-8", "replace")
    if not isinstance(answer, str):
        return None
    word = answer.strip().strip('"').upper()
    return Verdict(word) if word in Verdict.__members__ else (None if word else Verdict.CONTINUE)
