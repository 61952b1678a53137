"""The real app on a local port, called through every named endpoint with gradio_client."""
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from app.ui import build_demo, launch_options  # noqa: E402
from pagdemo.checkpoints import append_metrics, save_checkpoint  # noqa: E402
from pagdemo.models import PAGClassifier  # noqa: E402
from pagdemo.toy import ToyConfig  # noqa: E402
from test_images import huge_png  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EXAMPLE = str(Path(__file__).resolve().parents[1] / "app" / "examples" / "cat_3543.png")
ENDPOINTS = ["/preview", "/pag_grid", "/compare", "/robustness", "/eps_curve", "/toy", "/model_card"]
TINY_TOY = ToyConfig(epochs=2, n_per_mode=60, n_test=60, k=10)  # the real experiment, shrunk to a second


def make_tiny_checkpoints(root) -> list[str]:
    """Three untrained tinycnn checkpoints with plausible cards and one recorded evaluation each."""
    names = []
    for seed, (name, method, lam) in enumerate([("vanilla", "vanilla", 0.0), ("pag-cm", "cm", 0.4), ("pag-oi", "oi", 0.5)]):
        torch.manual_seed(seed)
        folder = root / name
        save_checkpoint(PAGClassifier("tinycnn", 10, CLASSES), folder,
                        {"method": method, "lam": lam, "dataset": "cifar10", "epochs": 1, "train_time_s": 1.5,
                         "note": "tiny untrained test checkpoint"})
        append_metrics(folder, {"date": "2025-01-01", "data": "cifar10/test", "n": 64, "attack": "pgd-20", "norm": "linf",
                                "eps": 8 / 255, "steps": 20, "step_size": 0.8 / 255, "restarts": 1, "random_start": True,
                                "clean_acc": 0.1 + 0.1 * seed, "robust_acc": 0.05 * seed})
        names.append(name)
    return names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(checkpoints):
    demo = build_demo(checkpoints, "cpu", toy_config=TINY_TOY)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options("127.0.0.1", port))
    return demo, Client(f"http://127.0.0.1:{port}/", verbose=False)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    make_tiny_checkpoints(root)
    demo, client = _serve(root)
    yield demo, client
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    return app[1]


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _error(client, *args, api_name):
    """Call an endpoint that must fail; return the message the page would show."""
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_every_tab_has_a_named_endpoint(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(api) == sorted(ENDPOINTS)


def test_preview_shows_what_the_model_sees(client):
    image, notes = client.predict(handle_file(EXAMPLE), api_name="/preview")
    a = _png(image)
    assert a.shape == (256, 256, 3)
    assert np.array_equal(a[::8, ::8], np.asarray(Image.open(EXAMPLE).convert("RGB")))
    assert "true class: **cat**" in notes


def test_pag_grid_streams_partial_grids(client):
    job = client.submit(handle_file(EXAMPLE), ["vanilla", "pag-cm", "pag-oi"], "all classes", "l2", 4.0, 8,
                        api_name="/pag_grid")
    statuses = [out[2] for out in job]
    grid, probs, status = job.result()
    assert len(statuses) >= 2 and statuses[0].startswith("step 0/8") and status.startswith("step 8/8")
    assert "done" in status
    assert probs["headers"] == ["model"] + CLASSES
    assert [row[0] for row in probs["data"]] == ["vanilla", "pag-cm", "pag-oi"]
    assert all(0 <= p <= 1 for row in probs["data"] for p in row[1:])
    h, w, _ = _png(grid).shape
    assert w > 11 * 96 and h > 3 * 96


def test_pag_grid_single_target(client):
    grid, probs, _ = client.predict(handle_file(EXAMPLE), ["pag-cm"], "dog", "linf", 16 / 255, 3, api_name="/pag_grid")
    assert probs["headers"] == ["model", "dog"] and len(probs["data"]) == 1


def test_compare(client):
    panel, table = client.predict(handle_file(EXAMPLE), ["vanilla", "pag-oi"], "l2", 0.5, 5, api_name="/compare")
    assert [row[0] for row in table["data"]] == ["vanilla", "pag-oi"]
    l2 = table["headers"].index("L2 of perturbation")
    assert all(0 < row[l2] <= 0.5 + 1e-4 for row in table["data"])
    assert _png(panel).shape[0] > 2 * 128


def test_robustness_table_against_the_paper(client):
    table, settings, plot, audits = client.predict(api_name="/robustness")
    rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert rows["pag-cm"]["PGD linf %"] == 5.0 and rows["pag-cm"]["paper linf %"] == 15.65
    assert rows["vanilla"]["paper clean %"] == 93.61 and rows["vanilla"]["n linf"] == 64
    how = {r[0]: dict(zip(settings["headers"], r)) for r in settings["data"]}
    assert "eps 0.03137" in how["vanilla"]["linf settings"] and how["vanilla"]["l2 settings"] == "not evaluated"
    assert _png(plot).ndim == 3
    verdicts = {(r[0], r[1]): dict(zip(audits["headers"], r)) for r in audits["data"]}
    assert verdicts[("vanilla", "l2")]["verdict"] == "not audited" and len(verdicts) == 2 * len(rows)


def test_eps_curve_is_computed_then_cached(client, monkeypatch):
    import app.handlers as handlers
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    real = handlers.accuracy_vs_eps
    monkeypatch.setattr(handlers, "accuracy_vs_eps", counting)  # the server runs in this process
    plot, table = client.predict(["vanilla", "pag-cm"], "linf", 16, 2, api_name="/eps_curve")
    assert len(calls) == 2  # one curve per model
    assert table["headers"] == ["eps", "eps x 255", "vanilla", "pag-cm"] and len(table["data"]) == 6
    assert [row[1] for row in table["data"]] == [0, 1, 2, 4, 8, 16]
    assert all(row[k] <= table["data"][0][k] for row in table["data"] for k in (2, 3))  # none beats clean accuracy
    _, again = client.predict(["vanilla", "pag-cm"], "linf", 16, 2, api_name="/eps_curve")
    assert again["data"] == table["data"] and len(calls) == 2  # the same setting is served from the cache


def test_toy(client):
    figure, metrics = client.predict(0.5, 0, api_name="/toy")
    assert [r[0] for r in metrics["data"]] == ["vanilla", "PAG lambda=0.5"]
    assert _png(figure).shape[1] > 500


def test_model_card(client):
    card = client.predict("pag-oi", api_name="/model_card")
    assert card.startswith("# pag-oi") and "`oi`" in card and "---" not in card.splitlines()[0]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"just some text"), "not an image"),
    (lambda p: p.write_bytes(open(EXAMPLE, "rb").read()[:300]), "corrupt or truncated"),
    (lambda p: p.write_bytes(huge_png(9000, 9000)), "megapixels"),
])
def test_bad_images_get_a_clear_message_and_the_server_lives(client, tmp_path, make, message):
    path = tmp_path / "upload.png"
    make(path)
    assert message in _error(client, handle_file(str(path)), api_name="/preview")
    assert message in _error(client, handle_file(str(path)), ["vanilla"], "all classes", "l2", 4.0, 2, api_name="/pag_grid")
    image, _ = client.predict(handle_file(EXAMPLE), api_name="/preview")  # the next request is served as usual
    assert _png(image).shape == (256, 256, 3)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "CMYK"])
def test_unusual_pixel_modes_are_accepted(client, tmp_path, mode):
    img = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode) if mode != "I;16" else Image.fromarray(
        np.full((30, 40), 40000, np.uint16))
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
    with pytest.raises(Exception):
        client.predict(handle_file(str(path)), api_name="/preview")
    assert client.predict("vanilla", api_name="/model_card").startswith("# vanilla")


@pytest.mark.parametrize("args, message", [
    ((["vanilla"], "all classes", "linf", 5.0, 2), "out of range for linf"),
    (([], "all classes", "l2", 4.0, 2), "choose at least one model"),
    ((["nope"], "all classes", "l2", 4.0, 2), "not in the list of choices"),
    ((["vanilla"], "unicorn", "l2", 4.0, 2), "not in the list of choices"),
    ((["vanilla"], "all classes", "l3", 4.0, 2), "not in the list of choices"),
    ((["vanilla"], "all classes", "l2", 400.0, 2), "greater than maximum"),
    ((["vanilla"], "all classes", "l2", 4.0, 1000), "greater than maximum"),
    ((["vanilla"], "all classes", "l2", 0.0, 2), "out of range"),
])
def test_bad_settings_are_refused(client, args, message):
    assert message in _error(client, handle_file(EXAMPLE), *args, api_name="/pag_grid")


def test_missing_image_and_unknown_card(client):
    assert "give an image first" in _error(client, None, ["vanilla"], "l2", 0.5, 2, api_name="/compare")
    assert "not in the list of choices" in _error(client, "nope", api_name="/model_card")


def test_model_runs_share_one_bounded_queue(app):
    demo, _ = app
    compute = [fn for fn in demo.fns.values() if fn.api_name in ("pag_grid", "compare", "eps_curve", "toy")]
    assert len(compute) == 4 and {fn.concurrency_id for fn in compute} == {"compute"}
    assert all(fn.concurrency_limit == "default" for fn in compute)  # the queue's default: one run at a time
    assert demo._queue.default_concurrency_limit == 1 and demo._queue.max_size == 32


def test_without_checkpoints_the_page_says_so_and_the_toy_works(tmp_path):
    demo, client = _serve(tmp_path / "empty")
    try:
        assert "No checkpoints found" in demo.lab.notice()
        assert "No checkpoints found" in client.predict(None, api_name="/model_card")
        assert "no checkpoints" in _error(client, handle_file(EXAMPLE), [], "all classes", "l2", 4.0, 2, api_name="/pag_grid")
        assert "no checkpoints" in _error(client, api_name="/robustness")
        _, metrics = client.predict(0.5, 1, api_name="/toy")
        assert len(metrics["data"]) == 2
    finally:
        demo.close()


def test_handler_errors_become_one_line_messages():
    import gradio as gr

    from app.handlers import user_errors

    @user_errors
    def bad_value():
        raise ValueError("eps must be positive")

    @user_errors
    def crash():
        raise RuntimeError("secret internal detail")

    @user_errors
    def stream():
        yield 1
        raise KeyError("boom")

    with pytest.raises(gr.Error, match="eps must be positive"):
        bad_value()
    with pytest.raises(gr.Error, match=r"internal error \(RuntimeError\)") as info:
        crash()
    assert "secret" not in str(info.value)
    with pytest.raises(gr.Error, match=r"internal error \(KeyError\)"):
        list(stream())


def test_data_urls_reach_the_loader_as_bytes():
    import base64

    import gradio as gr
    from gradio.data_classes import ImageData

    from app.ui import _raw_upload

    data = Path(EXAMPLE).read_bytes()
    assert _raw_upload(ImageData(url="data:image/png;base64," + base64.b64encode(data).decode())) == data
    assert _raw_upload(ImageData(path="/some/upload.png")) == "/some/upload.png" and _raw_upload(None) is None
    with pytest.raises(gr.Error, match="base64"):
        _raw_upload(ImageData(url="data:image/png;base64,not*base64"))
