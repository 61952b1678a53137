"""The real app on a local port, called through every named endpoint with gradio_client."""

import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio_client")
import gradio as gr  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from test_images import huge_png  # noqa: E402

from pagdemo.app.ui import build_demo, launch_options  # noqa: E402
from pagdemo.models import (
    CIFAR10_CLASSES,  # noqa: E402
    PAGClassifier,  # noqa: E402
)
from pagdemo.records.checkpoints import append_metrics, save_checkpoint  # noqa: E402
from pagdemo.toy.experiment import ToyConfig  # noqa: E402
from pagdemo.toy.run import run_toy  # noqa: E402

CLASSES = CIFAR10_CLASSES  # the one list, in pagdemo.models
EXAMPLE = str(Path(__file__).resolve().parents[1] / "pagdemo" / "app" / "examples" / "cat_3543.png")
ENDPOINTS = ["/preview", "/pag_grid", "/compare", "/robustness", "/eps_curve", "/toy", "/model_card"]
TINY_TOY = ToyConfig(epochs=2, n_per_mode=60, n_test=60, k=10)  # the real experiment, shrunk to a second


def make_tiny_checkpoints(root) -> list[str]:
    """Three untrained tinycnn checkpoints with plausible cards and one recorded evaluation each."""
    names = []
    for seed, (name, method, lam) in enumerate(
        [("vanilla", "vanilla", 0.0), ("pag-cm", "cm", 0.4), ("pag-oi", "oi", 0.5)]
    ):
        torch.manual_seed(seed)
        folder = root / name
        save_checkpoint(
            PAGClassifier("tinycnn", 10, CLASSES),
            folder,
            {
                "method": method,
                "lam": lam,
                "dataset": "cifar10",
                "epochs": 1,
                "train_time_s": 1.5,
                "note": "tiny untrained test checkpoint",
            },
        )
        append_metrics(
            folder,
            {
                "date": "2025-01-01",
                "data": "cifar10/test",
                "n": 64,
                "attack": "pgd-20",
                "norm": "linf",
                "eps": 8 / 255,
                "steps": 20,
                "step_size": 0.8 / 255,
                "restarts": 1,
                "random_start": True,
                "clean_acc": 0.1 + 0.1 * seed,
                "robust_acc": 0.05 * seed,
            },
        )
        names.append(name)
    return names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(checkpoints, toy_dir="docs/toy"):
    demo = build_demo(checkpoints, "cpu", toy_config=TINY_TOY, toy_dir=toy_dir)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options("127.0.0.1", port, demo))
    return demo, Client(f"http://127.0.0.1:{port}/", verbose=False)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    make_tiny_checkpoints(root)
    toy_dir = tmp_path_factory.mktemp("toy")
    run_toy(
        replace(TINY_TOY, seeds=2, out=str(toy_dir)), progress=False
    )  # what `pagdemo toy` saves, in seconds
    demo, client = _serve(root, toy_dir)
    yield demo, client
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    return app[1]


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _error(client, *args, api_name):
    """Call an endpoint that must fail; return the message the page would show."""
    with pytest.raises(AppError) as info:  # what a gr.Error becomes on the client's side
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_every_tab_has_a_named_endpoint(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(api) == sorted(ENDPOINTS)  # the page's own events are private


def test_preview_shows_what_the_model_sees(client):
    image, notes = client.predict(handle_file(EXAMPLE), api_name="/preview")
    a = _png(image)
    assert a.shape == (256, 256, 3)
    assert np.array_equal(a[::8, ::8], np.asarray(Image.open(EXAMPLE).convert("RGB")))
    assert "true class **cat**" in notes


@pytest.mark.parametrize(
    "size, words",
    [
        ((1, 1), ["1x1, resized to 32x32", "holds almost nothing"]),
        ((400, 10), ["centre-cropped to 10x10", "40 times as wide", "keeps only 2%"]),
        ((64, 48), ["centre-cropped to 48x48, then resized to 32x32"]),
    ],
)
def test_preview_says_what_was_done_and_warns_about_tiny_or_sliver_images(client, tmp_path, size, words):
    path = tmp_path / "odd.png"
    Image.new("RGB", size, (120, 30, 200)).save(path)
    _, notes = client.predict(handle_file(str(path)), api_name="/preview")
    assert all(w in notes for w in words), notes
    assert ("Warning" in notes) == (size != (64, 48))


def test_pag_grid_streams_partial_grids(client):
    job = client.submit(
        handle_file(EXAMPLE),
        ["vanilla", "pag-cm", "pag-oi"],
        "all classes",
        "l2",
        4.0,
        8,
        api_name="/pag_grid",
    )
    statuses = [out[2] for out in job]
    grid, probs, status = job.result()
    assert len(statuses) >= 2 and statuses[0].startswith("step 0/8") and status.startswith("step 8/8")
    assert "done" in status
    assert probs["headers"] == ["model"] + CLASSES
    assert [row[0] for row in probs["data"]] == ["vanilla", "pag-cm", "pag-oi"]
    assert all(len(p) == 5 and 0 <= float(p) <= 1 for row in probs["data"] for p in row[1:])  # always 0.xxx
    h, w, _ = _png(grid).shape
    assert w > 11 * 128 and h > 3 * 128  # cells of 128 px for a 32x32 input


def test_pag_grid_single_target_and_the_api_default_radius(client):
    grid, probs, _ = client.predict(
        handle_file(EXAMPLE), ["pag-cm"], "dog", "linf", 16 / 255, 3, api_name="/pag_grid"
    )
    assert probs["headers"] == ["model", "dog"] and len(probs["data"]) == 1
    _, _, status = client.predict(
        handle_file(EXAMPLE), ["pag-cm"], "dog", "linf", steps=2, api_name="/pag_grid"
    )
    assert "done" in status  # no eps: the threat model's default (16/255 for the picture)


def test_compare_with_each_norms_default(client):
    panel, table = client.predict(
        handle_file(EXAMPLE), ["vanilla", "pag-oi"], "l2", 0.5, 5, api_name="/compare"
    )
    assert [row[0] for row in table["data"]] == ["vanilla", "pag-oi"]
    l2 = table["headers"].index("L2 of perturbation")
    assert all(0 < float(row[l2]) <= 0.5 + 1e-3 for row in table["data"])
    assert _png(panel).shape[0] > 2 * 128
    _, linf = client.predict(
        handle_file(EXAMPLE), ["vanilla"], "linf", api_name="/compare"
    )  # eps and steps defaulted
    assert float(linf["data"][0][linf["headers"].index("Linf x 255")]) <= 8.0 + 1e-3


def test_robustness_table_against_the_paper(client):
    table, settings, plot, audits = client.predict(api_name="/robustness")
    rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert rows["pag-cm"]["PGD linf %"] == "5.0" and rows["pag-cm"]["paper linf %"] == "15.7"
    assert rows["vanilla"]["paper clean %"] == "93.6" and rows["vanilla"]["n"] == 64
    how = {r[0]: dict(zip(settings["headers"], r)) for r in settings["data"]}
    assert (
        "eps 0.03137" in how["vanilla"]["linf settings"] and how["vanilla"]["l2 settings"] == "not evaluated"
    )
    assert _png(plot).ndim == 3
    verdicts = {(r[0], r[1]): dict(zip(audits["headers"], r)) for r in audits["data"]}
    assert verdicts[("vanilla", "l2")]["verdict"] == "not audited" and len(verdicts) == 2 * len(rows)


def test_eps_curve_streams_then_is_served_from_the_cache(client, monkeypatch):
    import pagdemo.app.handlers as handlers

    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    real = handlers.accuracy_vs_eps
    monkeypatch.setattr(handlers, "accuracy_vs_eps", counting)  # the server runs in this process
    job = client.submit(["vanilla", "pag-cm"], "linf", 16, 2, api_name="/eps_curve")
    statuses = [out[2] for out in job]
    plot, table, status = job.result()
    assert len(calls) == 2 and status == "done" and len(statuses) > 3  # one curve per model, point by point
    assert table["headers"] == ["eps x 255", "vanilla", "pag-cm"] and len(table["data"]) == 6
    assert [row[0] for row in table["data"]] == ["0", "1", "2", "4", "8", "16"]
    assert all(float(row[k]) <= float(table["data"][0][k]) for row in table["data"] for k in (1, 2))
    _, again, _ = client.predict(["vanilla", "pag-cm"], "linf", 16, 2, api_name="/eps_curve")
    assert again["data"] == table["data"] and len(calls) == 2  # the same setting is served from the cache


def test_toy_matches_the_saved_run_for_the_same_seed(client):
    figure, metrics, caption = client.predict(TINY_TOY.lam, 1, api_name="/toy")
    names = [r[0] for r in metrics["data"]]
    assert names == [
        "vanilla (seed 1)",
        f"PAG lambda={TINY_TOY.lam:g} (seed 1)",
        "vanilla, saved run (seed 1)",
        "PAG, saved run (seed 1)",
    ]
    assert (
        metrics["data"][0][1:] == metrics["data"][2][1:] and metrics["data"][1][1:] == metrics["data"][3][1:]
    )
    assert "gave the same numbers" in caption and _png(figure).shape[1] > 500
    _, other, caption = client.predict(0.5, 7, api_name="/toy")
    assert len(other["data"]) == 2 and "not in the saved run" in caption


def test_model_card(client):
    card = client.predict("pag-oi", api_name="/model_card")
    assert card.startswith("# pag-oi") and "`oi`" in card and "---" not in card.splitlines()[0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"just some text"), "not an image"),
        (lambda p: p.write_bytes(open(EXAMPLE, "rb").read()[:300]), "cut short"),
        (
            lambda p: p.write_bytes(huge_png(9000, 9000)),
            "the image is 9000x9000 = 81 megapixels; the limit is 40",
        ),
        (lambda p: p.write_bytes(huge_png(20000, 20000)), "the image is 400 megapixels; the limit is 40"),
    ],
)
def test_bad_images_get_a_clear_message_and_the_server_lives(client, tmp_path, make, message):
    path = tmp_path / "upload.png"
    make(path)
    assert message in _error(client, handle_file(str(path)), api_name="/preview")
    assert message in _error(
        client, handle_file(str(path)), ["vanilla"], "all classes", "l2", 4.0, 2, api_name="/pag_grid"
    )
    image, _ = client.predict(
        handle_file(EXAMPLE), api_name="/preview"
    )  # the next request is served as usual
    assert _png(image).shape == (256, 256, 3)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "CMYK"])
def test_unusual_pixel_modes_are_accepted(client, tmp_path, mode):
    img = (
        Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.full((30, 40), 40000, np.uint16))
    )
    path = tmp_path / ("img.jpg" if mode == "CMYK" else "img.png")
    img.save(path)
    image, notes = client.predict(handle_file(str(path)), api_name="/preview")
    assert _png(image).shape == (256, 256, 3) and "40x30" in notes


def test_animated_gif_is_accepted_with_a_note(client, tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    image, notes = client.predict(handle_file(str(path)), api_name="/preview")
    assert "first frame" in notes and tuple(_png(image)[0, 0]) == (255, 0, 0)


def test_uploads_over_the_size_limit_are_refused(client, tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(Path(EXAMPLE).read_bytes() + bytes(11 * 2**20))  # over the app's 10 MB upload limit
    with pytest.raises(ValueError, match="exceeds the maximum file size of 10485760 bytes"):
        client.predict(handle_file(str(path)), api_name="/preview")
    assert client.predict("vanilla", api_name="/model_card").startswith("# vanilla")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            (["vanilla"], "all classes", "linf", 0.5, 2),
            "eps 128/255 is out of range for linf: choose 0 < eps <= 64/255",
        ),
        (([], "all classes", "l2", 4.0, 2), "choose at least one model"),
        ((None, "all classes", "l2", 4.0, 2), "choose at least one model"),
        ((["nope"], "all classes", "l2", 4.0, 2), "unknown model(s) ['nope']; choose from"),
        ((["vanilla"], "unicorn", "l2", 4.0, 2), "unknown target 'unicorn'"),
        ((["vanilla"], "all classes", "l3", 4.0, 2), "unknown threat model 'l3'"),
        ((["vanilla"], "all classes", "l2", 400.0, 2), "out of range for l2"),
        ((["vanilla"], "all classes", "l2", "big", 2), "eps must be a number"),
        ((["vanilla"], "all classes", "l2", 4.0, 1000), "steps must be a whole number from 1 to 100"),
        ((["vanilla"], "all classes", "l2", 0.0, 2), "out of range"),
    ],
)
def test_bad_settings_are_refused_in_words(client, args, message):
    assert message in _error(client, handle_file(EXAMPLE), *args, api_name="/pag_grid")


def test_missing_image_and_unknown_card(client):
    assert "give an image first" in _error(client, None, ["vanilla"], "l2", 0.5, 2, api_name="/compare")
    assert "unknown model 'nope'" in _error(client, "nope", api_name="/model_card")


def test_models_of_different_data_are_not_put_in_one_picture(tmp_path):
    root = tmp_path / "mixed"
    make_tiny_checkpoints(root)
    save_checkpoint(
        PAGClassifier("tinycnn", 3, ["cat", "dog", "fox"], image_size=48),
        root / "pets",
        {"method": "vanilla"},
    )
    demo, client = _serve(root)
    try:
        message = _error(
            client,
            handle_file(EXAMPLE),
            ["vanilla", "pets"],
            "all classes",
            "l2",
            4.0,
            2,
            api_name="/pag_grid",
        )
        assert (
            "vanilla: 10 classes at 32x32; pets: 3 classes at 48x48" in message and "one dataset" in message
        )
    finally:
        demo.close()


def test_model_runs_share_one_bounded_queue(app):
    demo, _ = app
    compute = [fn for fn in demo.fns.values() if fn.concurrency_id == "compute"]
    assert sorted(fn.api_name for fn in compute) == ["compare", "eps_curve", "pag_grid", "toy"]
    assert all(fn.concurrency_limit == "default" for fn in compute)  # the queue's default: one run at a time
    assert demo._queue.default_concurrency_limit == 1 and demo._queue.max_size == 32


def test_every_event_is_wired_once_on_the_page(app):
    """The page's own events are the endpoints: no hidden button, no second wiring, the upload undecoded."""
    demo, _ = app
    named = [fn for fn in demo.fns.values() if fn.api_visibility == "public"]
    assert sorted(fn.api_name for fn in named) == sorted(e[1:] for e in ENDPOINTS)
    hidden = [b for b in demo.blocks.values() if isinstance(b, gr.Button) and not b.visible]
    assert not hidden and not any(fn.preprocess for fn in named)
    assert all(len(fn.targets) == 1 and demo.blocks[fn.targets[0][0]].visible for fn in named)


def test_without_checkpoints_the_page_says_so_and_the_toy_works(tmp_path):
    demo, client = _serve(tmp_path / "empty")
    try:
        assert "No checkpoints found" in demo.lab.notice()
        assert "No checkpoints found" in client.predict(None, api_name="/model_card")
        assert "no checkpoints" in _error(
            client, handle_file(EXAMPLE), [], "all classes", "l2", 4.0, 2, api_name="/pag_grid"
        )
        assert "no checkpoints" in _error(client, api_name="/robustness")
        _, metrics, _ = client.predict(0.5, 1, api_name="/toy")
        assert len(metrics["data"]) == 2
    finally:
        demo.close()


def test_errors_take_one_path_one_line_each_and_hide_internal_details(caplog):
    from pagdemo.app.errors import InputError, endpoint

    def bad_value():
        raise InputError("eps must be positive")

    def crash():
        raise RuntimeError("secret internal detail")

    def stream():
        yield 1, 2
        raise InputError("give an image first", "image")

    outcome = gr.State()
    with caplog.at_level("INFO", logger="pagdemo.app"):
        run = endpoint(bad_value, outcome)()
        assert next(run) == {outcome: ("settings", "eps must be positive")}  # what the page shows, and where
        with pytest.raises(gr.Error, match="eps must be positive"):  # what an API client reads
            next(run)
    assert [r.getMessage() for r in caplog.records] == ["bad_value refused: eps must be positive"]
    assert caplog.records[0].exc_info is None  # a user mistake is one line, no traceback
    run = endpoint(crash, outcome)()
    ((field, message),) = next(run).values()
    assert message.startswith("internal error (RuntimeError)") and "secret" not in message
    with pytest.raises(gr.Error, match=r"internal error \(RuntimeError\)") as info:
        next(run)
    assert "secret" not in str(info.value) and caplog.records[-1].exc_info  # logged with its traceback, once
    run = endpoint(stream, outcome)()
    assert next(run) == (1, 2, None) and next(run) == {outcome: ("image", "give an image first")}
    with pytest.raises(gr.Error, match="give an image first"):
        next(run)


def test_a_failed_page_run_keeps_the_last_result_and_says_why_beside_its_control():
    from pagdemo.app.errors import InputError, wire

    def grid(image, eps):
        if image is None:
            raise InputError("give an image first", "image")
        if eps > 1:
            raise InputError(f"eps {eps} is out of range")
        yield "grid", "step 20/20 (done)"

    with gr.Blocks() as demo:
        image, eps, out, status = gr.Textbox(), gr.Number(), gr.Textbox(), gr.Markdown()
        under_image, under_button = gr.Markdown(), gr.Markdown()
        slots = {"image": under_image, "settings": under_button}
        wire(gr.Button().click, grid, [image, eps], [out, status], "grid", slots, failed={status: "Not run"})
    run = next(fn for fn in demo.fns.values() if fn.api_name == "grid")
    after = {fn.trigger_only_on_failure: fn for fn in demo.fns.values() if fn.trigger_after == run._id}
    assert list(run.fn("img", 0.5)) == [("grid", "step 20/20 (done)", None)]
    assert after[False].fn() == {under_image: "", under_button: ""}  # cleared
    outcome = run.outputs[-1]
    steps = run.fn("img", 5)
    (error,) = next(steps).values()
    with pytest.raises(gr.Error):
        next(steps)
    shown = after[True].fn(error)
    assert out in after[True].outputs and out not in shown  # the last result stays, its error mark cleared
    assert shown[status] == "Not run"  # no "done"
    assert "eps 5 is out of range" in shown[under_button] and shown[under_image] == ""
    shown = after[True].fn(next(run.fn(None, 0.5))[outcome])
    assert "give an image first" in shown[under_image] and shown[under_button] == ""  # under the image


def test_data_urls_reach_the_loader_as_bytes():
    import base64

    from pagdemo.app.errors import InputError
    from pagdemo.app.inputs import upload

    data = Path(EXAMPLE).read_bytes()
    assert upload({"url": "data:image/png;base64," + base64.b64encode(data).decode(), "path": None}) == data
    assert upload({"path": "/some/upload.png", "url": None}) == "/some/upload.png" and upload(None) is None
    with pytest.raises(InputError, match="base64"):
        upload({"url": "data:image/png;base64,not*base64"})
