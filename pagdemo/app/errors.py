"""The app's one error path. A handler raises `InputError` (a ValueError naming its field) for a user mistake;
`endpoint` logs it in one line (anything else with its traceback, once) and raises it to API clients as a one-line
gr.Error ("internal error" hides the details); `wire` makes each page event its named endpoint and shows a failure
beside the control it names, keeping the last result."""

from __future__ import annotations

import ctypes
import functools
import gc
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from pagdemo.app.page import PAGE, error_note

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


def endpoint(fn: Callable, outcome: gr.State) -> Callable:
    """A handler (plain or generator) as an event: each result streams out with an empty `outcome`; a failure
    leaves (field, message) in `outcome` (the page's failure listener shows it) and is raised as a gr.Error that
    API clients read and the page does not pop up; the memory a run left is released however it ended."""

    @functools.wraps(fn)
    def run(*args: Any) -> Iterator:
        try:
            results = fn(*args)
            for out in results if inspect.isgenerator(results) else [results]:
                yield (*(out if isinstance(out, tuple) else (out,)), None)
        except Exception as e:  # noqa: BLE001 - every failure takes this one path
            log_refusal(fn, e)
            message = public_message(e)
            yield {outcome: (getattr(e, "field", "settings"), message)}
            raise gr.Error(message, visible=False, print_exception=False) from None
        finally:
            release_memory()

    return run


def wire(
    trigger: Callable,
    fn: Callable,
    inputs: list,
    outputs: list,
    api_name: str,
    slots: dict,
    failed: dict | None = None,
    **kw: Any,
) -> None:
    """The page's event that is the named endpoint `api_name`: inputs as sent (`preprocess=False`), errors through
    `endpoint`. A success clears the error `slots` ({field: Markdown}); a failure writes its message in the slot of
    the field it names (else the "settings" one), leaves the results as they were (clearing Gradio's error marks on
    them) and sets each output in `failed` ({component: value}), e.g. a status that must not say "done"."""
    failed, outcome = failed or {}, gr.State()
    event = trigger(
        endpoint(fn, outcome), inputs, [*outputs, outcome], api_name=api_name, preprocess=False, **kw
    )
    notes = list(dict.fromkeys(slots.values()))
    cleared = [s for s in notes if s not in outputs]
    if cleared:
        event.success(lambda: [""] * len(cleared) if len(cleared) > 1 else "", None, cleared, **PAGE)
    shown = list(dict.fromkeys([*outputs, *notes]))

    def failure(error: tuple[str, str] | None) -> list:
        field, message = error or ("settings", "the server did not run it (busy, or the request was refused)")
        slot = slots.get(field, slots.get("settings", notes[0]))
        values = [
            failed.get(c, error_note(message) if c is slot else "" if c in cleared else gr.skip())
            for c in shown
        ]
        return values if len(values) > 1 else values[0]

    event.failure(failure, outcome, shown, **PAGE)
