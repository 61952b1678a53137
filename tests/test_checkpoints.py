"""pagdemo.records.checkpoints: fp16 safetensors round trip, sharding, config/metrics/model card, refusals."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import socket
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pagdemo.models import PAGClassifier
from pagdemo.records.checkpoints import (
    CheckpointError,
    append_metrics,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    write_model_card,
)
from pagdemo.records.files import write_json

RUN = {"method": "cm", "lam": 0.4, "dataset": "synthetic", "epochs": 3, "seed": 0}
SHARD_LIMIT = 16_000_000  # bytes: what comes back from a GPU machine


def _trained_looking(
    arch: str = "tinycnn", num_classes: int = 3, classes: list[str] | None = None
) -> PAGClassifier:
    """A model whose BatchNorm statistics moved away from their defaults, so they must round-trip too."""
    model = PAGClassifier(arch, num_classes, classes)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 32, 32))
    return model.eval()


def _fp16_rounded(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a lossless fp16 save must give back: every float tensor rounded to half and widened again."""
    return {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def _assert_state_equal(loaded: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = loaded.state_dict()
    assert state.keys() == expected.keys()
    for k, v in expected.items():
        assert state[k].dtype == v.dtype, k
        assert torch.equal(state[k], v), f"{k} differs after the round trip"


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[PAGClassifier, Path]:
    model = _trained_looking(classes=["cat", "dog", "fox"])
    return model, save_checkpoint(model, tmp_path / "tiny", RUN)


def test_round_trip_is_fp16_exact_and_outputs_agree(tiny):
    model, folder = tiny
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes["net.linear.weight"] == torch.float16
    assert all(d in (torch.float16, torch.int64) for d in dtypes.values()), dtypes
    loaded = load_checkpoint(folder)
    assert isinstance(loaded, PAGClassifier) and not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    _assert_state_equal(loaded, _fp16_rounded(model))
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-2, atol=1e-3)


def test_config_json_rebuilds_the_model(tiny):
    _, folder = tiny
    config = json.loads((folder / "config.json").read_text())
    assert config["arch"] == "tinycnn" and config["num_classes"] == 3
    assert config["classes"] == ["cat", "dog", "fox"] and config["run"] == RUN
    loaded = load_checkpoint(folder)
    assert (loaded.arch, loaded.num_classes, loaded.classes) == ("tinycnn", 3, ["cat", "dog", "fox"])
    assert loaded.net.linear.out_features == 3
    assert loaded.run == RUN


def test_resnet18_is_sharded_under_16mb_and_round_trips(tmp_path):
    model = _trained_looking("resnet18", 10)
    folder = save_checkpoint(model, tmp_path / "r18", {"method": "vanilla"})
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    assert all((folder / s).is_file() for s in shards)
    assert not (folder / "model.safetensors").exists()
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert all(size < SHARD_LIMIT for size in sizes.values()), sizes
    assert sum(sizes[s] for s in shards) > 20_000_000  # 11.2M parameters in fp16: really everything is there
    loaded = load_checkpoint(folder)
    _assert_state_equal(loaded, _fp16_rounded(model))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-2, atol=1e-2)


def test_resave_with_another_layout_removes_stale_shards(tmp_path):
    folder = save_checkpoint(PAGClassifier("resnet18", 10), tmp_path / "run", {"method": "vanilla"})
    assert (folder / "model.safetensors.index.json").exists()
    save_checkpoint(_trained_looking(), folder, RUN)
    assert sorted(p.name for p in folder.glob("model*")) == ["model.safetensors"]
    assert load_checkpoint(folder).arch == "tinycnn"
    assert not [p for p in tmp_path.iterdir() if p.name != "run"], "temporary folders left behind"


def test_metrics_append_keeps_earlier_records_and_survives_a_resave(tiny):
    model, folder = tiny
    first = {"date": "d1", "norm": "l2", "eps": 0.5, "clean_acc": 0.5, "robust_acc": 0.25}
    second = {"date": "d2", "norm": None, "clean_acc": 0.75, "robust_acc": None}
    append_metrics(folder, first)
    append_metrics(folder, second)
    assert json.loads((folder / "metrics.json").read_text())["evaluations"] == [first, second]
    save_checkpoint(model, folder, {**RUN, "epochs_done": 4})  # the next epoch of the same run
    assert json.loads((folder / "metrics.json").read_text())["evaluations"] == [first, second]
    assert json.loads((folder / "config.json").read_text())["run"]["epochs_done"] == 4


def test_model_card_lists_method_lambda_and_evaluations(tiny):
    _, folder = tiny
    card = (folder / "README.md").read_text()
    assert "library_name: pagdemo" in card and "- synthetic" in card
    assert "| method | `cm` |" in card and "| lambda | `0.4` |" in card
    assert "Not evaluated yet" in card
    append_metrics(
        folder,
        {
            "date": "2026-01-01",
            "data": "synthetic/test",
            "n": 64,
            "attack": "pgd-20",
            "norm": "l2",
            "eps": 0.5,
            "steps": 20,
            "step_size": 0.05,
            "restarts": 1,
            "clean_acc": 0.6875,
            "robust_acc": 0.40625,
        },
    )
    card = (folder / "README.md").read_text()
    assert "Not evaluated yet" not in card
    row = [ln for ln in card.splitlines() if ln.startswith("| 2026-01-01")]
    assert len(row) == 1
    assert "| l2 | 0.5 | 20 | 0.05 |" in row[0] and "68.75%" in row[0] and "40.62%" in row[0]


def test_model_card_shows_a_recipes_settings_as_fields_not_a_python_dict(tiny):
    model, folder = tiny
    save_checkpoint(
        model, folder, {**RUN, "recipe_settings": {"summary": "batch 256, cosine", "nesterov": True}}
    )
    row = next(
        ln for ln in (folder / "README.md").read_text().splitlines() if ln.startswith("| recipe settings |")
    )
    assert row == "| recipe settings | `summary: batch 256, cosine; nesterov: True` |"


def test_model_card_shows_the_notes_file(tiny):
    _, folder = tiny
    (folder / "NOTES.md").write_text("Trained for 3 epochs only: the slot ran out.\n")
    write_model_card(folder)
    card = (folder / "README.md").read_text()
    assert card.index("## Notes") < card.index("Trained for 3 epochs only") < card.index("## Evaluations")


def test_model_card_says_when_a_run_stopped_mid_schedule(tiny):
    model, folder = tiny
    assert "| epochs | `3` |" in (folder / "README.md").read_text()
    save_checkpoint(model, folder, {**RUN, "epochs_done": 2})
    assert "| epochs | `2 of 3 (stopped before the schedule ended)` |" in (folder / "README.md").read_text()


def test_model_card_names_an_unfinished_audit(tiny):
    _, folder = tiny
    assert "## Audits" not in (folder / "README.md").read_text()
    write_json(
        folder / "audit-l2.json",
        {
            "norm": "l2",
            "date": "2026-01-02",
            "finished": False,
            "not_run_yet": ["autoattack"],
            "verdict": "no sign of gradient masking",
        },
    )
    write_model_card(folder)
    assert (
        "- 2026-01-02, l2: unfinished (autoattack not run); checks so far: no sign of gradient masking"
        in (folder / "README.md").read_text()
    )


def test_concurrent_evaluations_keep_every_line(tiny):
    """The GPU session evaluates one checkpoint in several processes at once."""
    _, folder = tiny
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(folder, i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    records = json.loads((folder / "metrics.json").read_text())["evaluations"]
    assert sorted((r["proc"], r["i"]) for r in records) == [(p, i) for p in range(3) for i in range(10)]


def _append_many(folder: Path, proc: int) -> None:
    for i in range(10):
        append_metrics(folder, {"proc": proc, "i": i, "clean_acc": 0.5})


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def _refusal(folder: Path) -> str:
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(folder)
    assert isinstance(e.value, ValueError)  # the CLI turns ValueErrors into one line
    assert str(folder) in str(e.value), "the message must say which folder"
    return str(e.value)


def test_refuses_a_missing_folder(tmp_path):
    assert "no checkpoint folder" in _refusal(tmp_path / "nope")


def test_refuses_a_folder_without_config(tiny, tmp_path):
    _, folder = tiny
    (folder / "config.json").unlink()
    assert "no config.json" in _refusal(folder)


def test_refuses_a_folder_holding_only_a_pickle(tiny, tmp_path):
    """A torch.save()d state dict alone: the user learns that pickle is the problem, not a missing config."""
    model, _ = tiny
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    msg = _refusal(folder)
    assert "pickle" in msg and "safetensors" in msg and "pytorch_model.bin" in msg


def test_refuses_pickle_weights_beside_a_config(tiny):
    model, folder = tiny
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "model.pt")
    msg = _refusal(folder)
    assert "pickle" in msg and "safetensors" in msg and "model.pt" in msg


def test_refuses_a_missing_shard(tmp_path):
    folder = save_checkpoint(PAGClassifier("resnet18", 10), tmp_path / "r18", {})
    shards = sorted(
        set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values())
    )
    (folder / shards[-1]).unlink()
    msg = _refusal(folder)
    assert "missing weight file" in msg and shards[-1] in msg


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_refuses_corrupt_weights_naming_the_weights(tiny, damage):
    """The lead's intended message ('cannot read the weights') and the file, not a blame on config.json."""
    _, folder = tiny
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a safetensors file" * 8)
    msg = _refusal(folder)
    assert "cannot read the weights" in msg and "model.safetensors" in msg
    assert "config.json" not in msg, msg


@pytest.mark.parametrize("arch", ["resnet18", "mlp"])
def test_refuses_a_config_whose_arch_does_not_match_the_weights(tiny, arch):
    _, folder = tiny
    _edit_config(folder, arch=arch)
    msg = _refusal(folder)
    assert "do not match" in msg and "config.json" in msg


def test_refuses_weights_with_another_number_of_classes(tiny):
    _, folder = tiny
    _edit_config(folder, num_classes=10, classes=[str(i) for i in range(10)])
    assert "do not match" in _refusal(folder)


def test_refuses_an_unknown_arch(tiny):
    _, folder = tiny
    _edit_config(folder, arch="vgg11")
    msg = _refusal(folder)
    assert (
        "config.json" in msg and "'vgg11'" in msg and "tinycnn" in msg
    )  # names the bad value and the valid ones


def test_refuses_invalid_json(tiny):
    _, folder = tiny
    (folder / "config.json").write_text("{ not json")
    assert "not valid JSON" in _refusal(folder)


def test_list_checkpoints_returns_good_ones_and_reasons_for_the_rest(tiny, tmp_path):
    model, good = tiny
    root = tmp_path / "zoo"
    root.mkdir()
    shutil.copytree(good, root / "a-cm")
    save_checkpoint(model, root / "b-vanilla", {"method": "vanilla"})
    (root / "c-empty").mkdir()
    shutil.copytree(good, root / "d-noweights")
    (root / "d-noweights" / "model.safetensors").unlink()
    shutil.copytree(good, root / ".e-hidden")  # e.g. a save in progress
    (root / "notes.txt").write_text("not a folder")
    append_metrics(root / "a-cm", {"norm": "l2", "eps": 0.5, "clean_acc": 0.5, "robust_acc": 0.3})
    write_json(
        root / "a-cm" / "audit-linf.json", {"norm": "linf", "finished": False, "not_run_yet": ["autoattack"]}
    )
    write_json(
        root / "b-vanilla" / "audit-l2.json", {"norm": "l2", "finished": True}
    )  # already in metrics.json
    found, skipped = list_checkpoints(root)
    assert [f["name"] for f in found] == ["a-cm", "b-vanilla"]
    assert found[0]["arch"] == "tinycnn" and found[0]["run"]["method"] == "cm"
    assert found[0]["evaluations"][0]["robust_acc"] == 0.3 and found[1]["evaluations"] == []
    assert (
        found[0]["unfinished_audits"]["linf"]["not_run_yet"] == ["autoattack"]
        and found[1]["unfinished_audits"] == {}
    )
    assert len(skipped) == 2
    assert "c-empty" in skipped[0] and "no config.json" in skipped[0]
    assert "d-noweights" in skipped[1] and "model.safetensors" in skipped[1]
    assert list_checkpoints(tmp_path / "missing") == ([], [])


def test_loading_never_touches_the_network(tiny, monkeypatch):
    model, folder = tiny

    def no_network(*args, **kwargs):
        raise AssertionError("loading a local checkpoint tried to reach the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for ref in (str(folder), folder):
        loaded = load_checkpoint(ref)
        assert (loaded.arch, loaded.classes) == ("tinycnn", ["cat", "dog", "fox"]) and not loaded.training
        _assert_state_equal(loaded.float(), _fp16_rounded(model))


def test_model_card_of_an_adversarial_run_shows_its_attack_not_pag_settings(tiny):
    _, folder = tiny
    run = json.loads((folder / "config.json").read_text())["run"]
    _edit_config(folder, run={**run, "method": "adv", "adv_attack": "fgsm", "adv_norm": "l2", "adv_eps": 0.5})
    write_model_card(folder)
    card = (folder / "README.md").read_text()
    assert (
        "| adversarial attack | `fgsm` |" in card
        and "| threat model | `l2` |" in card
        and "| eps | `0.5` |" in card
    )
    assert "lambda" not in card and "attack steps" not in card
