"""How the app's handlers fail: a user mistake is an InputError naming its field, logged in one line and shown
in words; anything else is logged with its traceback once and shown as a short "internal error"."""

from __future__ import annotations

import ctypes
import functools
import gc
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

log = logging.getLogger("pagdemo.app")


class InputError(ValueError):
    """A user mistake; `field` says which control it is about ("image" or "settings")."""

    def __init__(self, message: str, field: str = "settings") -> None:
        super().__init__(message)
        self.field = field


def log_refusal(fn: Callable, e: Exception) -> None:
    """A user mistake is one log line; anything else gets its traceback once."""
    if isinstance(e, ValueError):
        log.info("%s refused: %s", fn.__name__, " ".join(str(e).split()))
    else:
        log.exception("handler %s failed", fn.__name__)


def release_memory() -> None:
    """Free what a finished run left: figures and tensors held only by reference cycles (collected now, not
    whenever the collector next runs), and the heap they freed, handed back to the OS (glibc keeps it otherwise,
    and the server's memory only grows)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def public_message(e: Exception) -> str:
    """What a visitor may read: a user mistake's own message, never an internal error's details."""
    return (
        str(e)
        if isinstance(e, ValueError)
        else f"internal error ({type(e).__name__}); it has been logged on the server"
    )


def guarded(fn: Callable, done: Callable[[Any], Any], failed: Callable[[Exception], Any]) -> Callable:
    """Run a handler, plain or generator: each result through `done`, an error through `failed` (which gives the last
    output, or raises); the memory a run left is released after it, however it ended."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Iterator:
            try:
                for out in fn(*args, **kwargs):
                    yield done(out)
            except Exception as e:  # noqa: BLE001 - every failure goes through `failed`
                yield failed(e)
            finally:
                release_memory()

        return stream

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return done(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001
            return failed(e)
        finally:
            release_memory()

    return call


def api_errors(fn: Callable) -> Callable:
    """For API endpoints: any error reaches the client as one clear gr.Error (and the server log as one line)."""

    def failed(e: Exception) -> None:
        if isinstance(e, gr.Error):
            raise e
        log_refusal(fn, e)
        raise gr.Error(public_message(e), print_exception=False) from None

    return guarded(fn, lambda out: out, failed)
