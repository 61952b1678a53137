"""The app's one error path. A handler raises `InputError` (a ValueError naming its field) for a user mistake;
`endpoint` logs it and raises it to API clients as a one-line gr.Error; `wire` makes each page event its named
endpoint and shows a failure beside the control it names, keeping the last result."""

from __future__ import annotations

import contextlib
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


def endpoint(fn: Callable, outcome: gr.State) -> Callable:
    """A handler (plain or generator) as an event: each result streams out with an empty `outcome`; a failure
    leaves (field, message) in `outcome` for the page and raises a gr.Error that API clients read and the page
    does not pop up; the memory a run left is released however it ended (else the server only grows)."""

    @functools.wraps(fn)
    def run(*args: Any) -> Iterator:
        try:
            results = fn(*args)
            for out in results if inspect.isgenerator(results) else [results]:
                yield (*(out if isinstance(out, tuple) else (out,)), None)
        except Exception as e:  # noqa: BLE001 - every failure takes this one path
            if isinstance(e, ValueError):  # a user mistake: one log line, its own message
                log.info("%s refused: %s", fn.__name__, " ".join(str(e).split()))
                message = str(e)
            else:  # the traceback once in the log, no details to the visitor
                log.exception("handler %s failed", fn.__name__)
                message = f"internal error ({type(e).__name__}); it has been logged on the server"
            yield {outcome: (getattr(e, "field", "settings"), message)}
            raise gr.Error(message, visible=False, print_exception=False) from None
        finally:  # free what the run left in cycles, and hand the heap back to the OS (glibc would keep it)
            gc.collect()
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)

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
    """The page's event that is the named endpoint `api_name` (inputs as sent, errors through `endpoint`).
    A success clears the error `slots` ({field: Markdown}); a failure shows its message in its field's slot
    (else the "settings" one), keeps the results (clearing Gradio's error marks on them) and sets the outputs
    in `failed` ({component: value}), e.g. a status that must not say "done"."""
    outcome = gr.State()
    event = trigger(
        endpoint(fn, outcome), inputs, [*outputs, outcome], api_name=api_name, preprocess=False, **kw
    )
    notes = list(dict.fromkeys(slots.values()))
    cleared = [s for s in notes if s not in outputs]
    if cleared:
        event.success(lambda: dict.fromkeys(cleared, ""), None, cleared, **PAGE)

    def failure(error: tuple[str, str] | None) -> dict:
        field, message = error or ("settings", "the server did not run it (busy, or the request was refused)")
        slot = slots.get(field, slots.get("settings", notes[0]))
        return {**dict.fromkeys(cleared, ""), slot: error_note(message), **(failed or {})}

    event.failure(failure, outcome, list(dict.fromkeys([*outputs, *notes])), **PAGE)
