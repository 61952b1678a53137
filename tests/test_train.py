"""pagdemo.train.loop: settings, schedules, vanilla/PAG/adversarial/RIGD runs, resume, DDP under torchrun."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import pagdemo.data.augment as augment_mod
import pagdemo.train.loop as train_mod
import pagdemo.train.objective as objective_mod
from pagdemo.data.datasets import load_dataset
from pagdemo.models import PAGClassifier
from pagdemo.records.checkpoints import load_checkpoint, save_checkpoint
from pagdemo.train.config import TrainConfig, lr_at, resolve
from pagdemo.train.loop import train
from pagdemo.train.recipes import RECIPES
from pagdemo.train.state import STATE_DIR

REPO = Path(__file__).resolve().parents[1]
TINY = dict(
    dataset="synthetic", limit=32, batch_size=16, epochs=1, monitor_limit=0
)  # 2 steps: seconds on a CPU


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def _run(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())["run"]


# --- settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", [r for r in RECIPES if not RECIPES[r].needs_init])
def test_resolve_fills_recipe_defaults(recipe):
    cfg = resolve(TrainConfig(out="x", recipe=recipe))
    r = RECIPES[recipe]
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (r.epochs, r.batch_size, r.lr)
    assert (RECIPES["paper"].epochs, RECIPES["paper"].batch_size, RECIPES["paper"].lr) == (
        100,
        64,
        0.01,
    )  # App. C.2
    custom = resolve(TrainConfig(out="x", recipe=recipe, epochs=3, batch_size=8, lr=0.5, arch="tinycnn"))
    assert (custom.epochs, custom.batch_size, custom.lr, custom.arch) == (3, 8, 0.5, "tinycnn")


def test_resolve_arch_and_stl10_batch():
    assert resolve(TrainConfig(out="x", dataset="cifar10")).arch == "resnet18"
    assert resolve(TrainConfig(out="x", dataset="synthetic")).arch == "tinycnn"
    stl = resolve(TrainConfig(out="x", dataset="stl10"))
    assert (stl.arch, stl.batch_size) == ("resnet18_stl", 32)
    assert resolve(TrainConfig(out="x", dataset="stl10", recipe="fast")).batch_size == 256


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("method", "pag", ["'pag'", "vanilla", "rigd"]),
        ("recipe", "slow", ["'slow'", "paper", "fast"]),
        ("grad_of", "softmax", ["'softmax'", "logit", "logsoftmax"]),
        ("pag_impl", "magic", ["'magic'", "loop", "batched"]),
    ],
)
def test_resolve_names_the_bad_value_and_the_choices(field, value, words):
    with pytest.raises(ValueError) as e:
        resolve(replace(TrainConfig(out="x", method="cm"), **{field: value}))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_resolve_refuses_rigd_without_teacher_and_bad_adversarial_settings():
    with pytest.raises(ValueError, match="rigd needs --teacher"):
        resolve(TrainConfig(out="x", method="rigd"))
    with pytest.raises(ValueError, match="'l1'"):
        resolve(TrainConfig(out="x", method="adv", adv_norm="l1"))
    with pytest.raises(ValueError, match="'cw'"):
        resolve(TrainConfig(out="x", method="adv", adv_attack="cw"))


@pytest.mark.parametrize(
    "field, value",
    [("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("epochs", -1), ("lr", -0.1), ("lam", -1.0)],
)
def test_resolve_refuses_zero_or_negative_settings(field, value):
    """An explicit 0 must be refused, not silently replaced by the recipe's default (0 is falsy)."""
    with pytest.raises(ValueError):
        resolve(replace(TrainConfig(out="x", method="cm"), **{field: value}))


def test_lr_at_paper_drops_at_50_and_75_percent():
    cfg = resolve(TrainConfig(out="x", epochs=4, lr=0.1))  # 40 steps
    lrs = [lr_at(cfg, s, 10) for s in range(40)]
    assert lrs[:20] == [0.1] * 20
    assert lrs[20:30] == pytest.approx([0.01] * 10)
    assert lrs[30:] == pytest.approx([0.001] * 10)


def test_lr_at_fast_warms_up_for_one_epoch_then_cosine_to_zero():
    cfg = resolve(TrainConfig(out="x", recipe="fast", epochs=5, lr=0.4))  # 50 steps, 10 of warm-up
    lrs = [lr_at(cfg, s, 10) for s in range(50)]
    assert lrs[:10] == pytest.approx([0.04 * (s + 1) for s in range(10)])  # linear up to the peak
    assert lrs[10] == pytest.approx(0.4)
    assert lrs[30] == pytest.approx(0.2)  # half way through the cosine
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 0.01 * 0.4
    assert lrs[-1] == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))


# --- runs ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vanilla_run(tmp_path_factory) -> tuple[TrainConfig, Path]:
    cfg = TrainConfig(
        out=str(tmp_path_factory.mktemp("runs") / "vanilla"),
        dataset="synthetic",
        limit=256,
        batch_size=32,
        epochs=3,
        lr=0.05,
        monitor_limit=128,
        monitor_robust=32,
    )
    return cfg, train(cfg, progress=False)


def test_vanilla_run_learns_and_records_the_run(vanilla_run):
    cfg, out = vanilla_run
    log = _log(out)
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert log[-1]["test_acc"] > 0.3, log  # 10 classes: chance is 0.1
    assert 0 <= log[-1]["test_l2_pgd7"] <= 1
    assert [r["lr"] for r in log] == pytest.approx(
        [0.05, 0.005, 0.0005]
    )  # 24 steps: drops after steps 12, 18
    run = _run(out)
    assert (run["method"], run["lam"], run["arch"], run["epochs_done"], run["train_size"]) == (
        "vanilla",
        0.0,
        "tinycnn",
        3,
        256,
    )
    assert run["world_size"] == 1 and run["device"] == "cpu" and run["data_source"].startswith("synthetic")
    assert not (out / STATE_DIR).exists()
    assert load_checkpoint(out).arch == "tinycnn"


def test_a_finished_run_is_never_overwritten(vanilla_run):
    cfg, out = vanilla_run
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="already holds a finished run"):
        train(cfg, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.fixture(scope="module", params=["cm", "nn"])
def pag_run(request, tmp_path_factory) -> tuple[str, Path]:
    method = request.param
    options = {"cm_scaling": "centred"} if method == "cm" else {"nn_k": 2}  # Class Mean in the authors' space
    cfg = TrainConfig(out=str(tmp_path_factory.mktemp("pag") / method), method=method, **options, **TINY)
    return method, train(cfg, progress=False)


def test_pag_run_writes_checkpoint_and_records_the_target(pag_run):
    method, out = pag_run
    assert {"config.json", "model.safetensors", "README.md", "train_log.jsonl"} <= {
        p.name for p in out.iterdir()
    }
    run = _run(out)
    assert (run["method"], run["lam"], run["grad_of"], run["pag_impl"]) == (
        method,
        0.4,
        "logsoftmax",
        "batched",
    )
    assert run["target_info"]["target"] == method
    card = (out / "README.md").read_text()
    assert f"| method | `{method}` |" in card
    if method == "cm":  # recorded in the config and the card
        assert run["cm_scaling"] == "centred" and "grey" in run["target_info"]["scaling"]
        assert "| Class Mean scaling | `centred` |" in card and "departure from grey" in card
    assert math.isfinite(_log(out)[0]["loss"])
    assert load_checkpoint(out).arch == "tinycnn"


def test_pag_run_logs_ce_and_cos(pag_run):
    """The two terms of Eq. 1 are what a reader of the log needs to see PAG at work."""
    _, out = pag_run
    record = _log(out)[0]
    assert {"ce", "cos"} <= record.keys(), record
    assert record["loss"] == pytest.approx(record["ce"] + 0.4 * record["cos"], rel=1e-4)
    assert 0 <= record["cos"] <= 2 * 10  # sum over 10 classes of 1 - cos


@pytest.mark.parametrize("impl", ["vmap", "explicit"])
def test_fast_pag_impls_train_the_checkpoint_model_like_the_loop(impl, tmp_path):
    """Training runs the PAGClassifier wrapper, not the bare network the unit tests check."""
    logs = {
        i: _log(train(TrainConfig(out=str(tmp_path / i), method="cm", pag_impl=i, **TINY), progress=False))[0]
        for i in ("loop", impl)
    }
    for key in ("loss", "ce", "cos"):
        assert logs[impl][key] == pytest.approx(logs["loop"][key], rel=1e-4), key


def test_bn_coupling_resolves_to_what_the_impl_computes_and_is_refused_where_it_means_nothing():
    assert resolve(TrainConfig(out="x", method="cm")).bn_coupling == "batch"  # batched: the authors'
    assert resolve(TrainConfig(out="x", method="cm", pag_impl="compiled")).bn_coupling == "classes"
    assert (
        resolve(TrainConfig(out="x", method="cm", pag_impl="loop", bn_coupling="eval")).bn_coupling == "eval"
    )
    assert resolve(TrainConfig(out="x")).bn_coupling is None
    with pytest.raises(ValueError, match="--pag-impl loop cannot compute BatchNorm coupling 'batch'"):
        resolve(TrainConfig(out="x", method="cm", pag_impl="loop", bn_coupling="batch"))
    with pytest.raises(ValueError, match="use them with --method"):
        resolve(TrainConfig(out="x", pag_frame="authors"))
    with pytest.raises(ValueError, match="--cm-scaling is for --method cm"):
        resolve(TrainConfig(out="x", method="nn", cm_scaling="none"))
    with pytest.raises(ValueError, match="'sideways'; choose one of"):
        resolve(TrainConfig(out="x", method="cm", pag_frame="sideways"))


def test_authors_frame_run_records_its_step_and_logs_cos_in_train_and_eval_mode(tmp_path, monkeypatch):
    crops = []
    real = augment_mod.batch_crop
    monkeypatch.setattr(augment_mod, "batch_crop", lambda gen: crops.append(real(gen)) or crops[-1])
    monkeypatch.setattr(
        train_mod, "augment", lambda x, gen: pytest.fail("the authors' frame crops per batch")
    )
    out = train(
        TrainConfig(
            out=str(tmp_path / "authors"),
            method="cm",
            pag_impl="explicit",
            bn_coupling="batch",
            pag_frame="authors",
            cm_scaling="none",
            monitor_cos=24,
            **TINY,
        ),
        progress=False,
    )
    assert len(crops) == 2 * 2  # 2 steps, one crop for the cross-entropy and one for the PAG pass each
    run = _run(out)
    assert (run["bn_coupling"], run["pag_frame"], run["target_info"]["scaling"]) == (
        "batch",
        "authors",
        "none (the raw class mean)",
    )
    record = _log(out)[0]
    assert record["cos_n"] == 24 and 0 < record["cos_eval"] < 20 and 0 < record["cos_train"] < 20
    assert record["cos_train"] != pytest.approx(record["cos_eval"], rel=1e-3)  # two modes, two gradients
    assert "| BatchNorm in the PAG pass | `batch` |" in (out / "README.md").read_text()


def test_eval_coupling_run_logs_its_pag_term_from_eval_mode(tmp_path):
    out = train(
        TrainConfig(
            out=str(tmp_path / "eval"),
            method="cm",
            pag_impl="explicit",
            bn_coupling="eval",
            monitor_cos=0,
            **TINY,
        ),
        progress=False,
    )
    record = _log(out)[0]
    assert "cos_eval" not in record and math.isfinite(record["cos"]) and _run(out)["bn_coupling"] == "eval"


RESUMED = dict(
    method="cm", dataset="synthetic", limit=48, batch_size=16, epochs=2, monitor_limit=0
)  # 3 steps/epoch


def _interrupted(cfg: TrainConfig, monkeypatch, at_batch: int) -> None:
    """Run cfg and stop it with a Ctrl-C as its `at_batch`-th batch (counted over epochs, from 1) is
    augmented."""
    real_augment, calls = train_mod.augment, {"n": 0}

    def killed(x, generator=None):
        calls["n"] += 1
        if calls["n"] == at_batch:
            raise KeyboardInterrupt
        return real_augment(x, generator)

    monkeypatch.setattr(train_mod, "augment", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(train_mod, "augment", real_augment)


def test_resume_repeats_the_uninterrupted_run(tmp_path, monkeypatch):
    """Run A: 2 epochs straight. Run B: killed in the middle of epoch 2, then started again with the same
    config."""
    base = RESUMED
    finals: dict[str, dict[str, torch.Tensor]] = {}
    real_save = train_mod.save_checkpoint

    def capturing_save(model, folder, run):
        finals[Path(folder).name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real_save(model, folder, run)

    monkeypatch.setattr(train_mod, "save_checkpoint", capturing_save)
    a = train(TrainConfig(out=str(tmp_path / "A"), **base), progress=False)

    cfg_b = TrainConfig(out=str(tmp_path / "B"), **base)
    _interrupted(cfg_b, monkeypatch, at_batch=5)  # epoch 2, second batch: one step of epoch 2 already taken
    b = Path(cfg_b.out)
    assert json.loads((b / STATE_DIR / "progress.json").read_text())["epoch"] == 1
    assert _run(b)["epochs_done"] == 1 and len(_log(b)) == 1
    train(cfg_b, progress=False)

    assert not (a / STATE_DIR).exists() and not (b / STATE_DIR).exists()
    assert _run(b)["epochs_done"] == 2
    assert [r["epoch"] for r in _log(b)] == [1, 2]
    assert [r["loss"] for r in _log(b)] == pytest.approx([r["loss"] for r in _log(a)], rel=1e-6)
    assert finals["A"].keys() == finals["B"].keys()
    for k in finals["A"]:
        torch.testing.assert_close(
            finals["B"][k], finals["A"][k], rtol=0, atol=1e-6, msg=f"{k} differs after resume"
        )
    fresh = PAGClassifier("tinycnn", 10).state_dict()
    assert not torch.equal(finals["A"]["net.linear.weight"], fresh["net.linear.weight"])  # it did train


def test_a_run_moved_to_another_machine_resumes_like_the_uninterrupted_run(tmp_path, monkeypatch):
    """What a GPU window hands to the next: config.json, train_log.jsonl, train_state/, in another folder."""
    base = RESUMED
    a = train(TrainConfig(out=str(tmp_path / "A"), **base), progress=False)
    _interrupted(
        TrainConfig(out=str(tmp_path / "B"), **base), monkeypatch, at_batch=4
    )  # epoch 1 saved, none of 2
    moved = tmp_path / "elsewhere" / "C"
    moved.mkdir(parents=True)
    for name in ("config.json", "train_log.jsonl"):
        shutil.copy(tmp_path / "B" / name, moved / name)
    shutil.copytree(tmp_path / "B" / STATE_DIR, moved / STATE_DIR)  # no weights: the state alone travels
    train(TrainConfig(out=str(moved), **base), progress=False)
    assert [r["loss"] for r in _log(moved)] == pytest.approx([r["loss"] for r in _log(a)], rel=1e-6)
    for k, v in load_checkpoint(a).state_dict().items():
        torch.testing.assert_close(load_checkpoint(moved).state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_finetune_starts_from_init_and_records_what_the_start_cost(tmp_path):
    start = train(TrainConfig(out=str(tmp_path / "vanilla"), **TINY), progress=False)
    with pytest.raises(ValueError, match="--init"):
        resolve(TrainConfig(out="x", method="cm", recipe="finetune"))
    seen = {}
    real = train_mod._new_model

    def spy(cfg, trainset):
        seen["model"] = real(cfg, trainset)
        seen["init"] = {k: v.clone() for k, v in seen["model"].state_dict().items()}
        return seen["model"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "_new_model", spy)
        out = train(
            TrainConfig(
                out=str(tmp_path / "ft"),
                method="cm",
                recipe="finetune",
                init=str(start),
                **{**TINY, "batch_size": 16},
            ),
            progress=False,
        )
    for k, v in load_checkpoint(start).state_dict().items():
        assert torch.equal(seen["init"][k], v), k  # the run began at the init's (fp16-saved) weights
    run = _run(out)
    assert run["init"] == str(start) and run["init_train_time_s"] == _run(start)["train_time_s"]
    assert run["recipe_settings"]["needs_init"] and run["recipe"] == "finetune"
    other = save_checkpoint(PAGClassifier("tinycnn", 3, ["a", "b", "c"]), tmp_path / "other", {})
    with pytest.raises(
        ValueError, match=r"--init .* is not this run's model: its num_classes 3 \(this run: 10\)"
    ):
        train(
            TrainConfig(out=str(tmp_path / "bad"), method="cm", recipe="finetune", init=str(other), **TINY),
            progress=False,
        )


def test_ramp_logs_the_growing_lambda_and_pgd20_monitor_logs_both_norms(tmp_path):
    out = train(
        TrainConfig(
            out=str(tmp_path / "ramp"),
            method="cm",
            recipe="ramp",
            **{**TINY, "epochs": 3, "monitor_limit": 16, "monitor_robust": 8, "monitor_pgd": "pgd20"},
        ),
        progress=False,
    )
    log = _log(out)  # 6 steps: lambda at the last step of each epoch, full from step 3 (of 0..5) on
    assert [r["lam"] for r in log] == pytest.approx([0.4 * 2 / 3, 0.4, 0.4])
    assert {"test_linf_pgd20", "test_l2_pgd20"} <= log[0].keys() and log[0]["test_robust_n"] == 8
    assert all(0 <= log[0][k] <= log[0]["test_acc"] + 1e-6 for k in ("test_linf_pgd20", "test_l2_pgd20"))


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "nfgsm"])
def test_adversarial_training_attacks_every_batch(attack, tmp_path, monkeypatch):
    seen = []
    real_pgd, real_nfgsm = objective_mod.pgd, objective_mod.nfgsm

    def spy(model, x, y, eps, **kw):
        seen.append((eps, kw["norm"], kw["steps"], kw["step_size"]))
        return real_pgd(model, x, y, eps, **kw)

    def spy_nfgsm(model, x, y, eps, norm, generator):
        seen.append((eps, norm, 1, eps))
        return real_nfgsm(model, x, y, eps, norm, generator)

    monkeypatch.setattr(objective_mod, "pgd", spy)
    monkeypatch.setattr(objective_mod, "nfgsm", spy_nfgsm)
    eps = 8 / 255
    out = train(
        TrainConfig(
            out=str(tmp_path / attack), method="adv", adv_attack=attack, adv_steps=2, adv_eps=eps, **TINY
        ),
        progress=False,
    )
    steps, size = {"fgsm": (1, 1.25 * eps), "nfgsm": (1, eps), "pgd": (2, 2.5 * eps / 2)}[attack]
    assert seen == [(eps, "linf", steps, pytest.approx(size))] * 2  # one attack per batch, 2 batches
    run = _run(out)
    assert (run["method"], run["adv_attack"], run["adv_eps"], run["adv_norm"]) == ("adv", attack, eps, "linf")
    assert math.isfinite(_log(out)[0]["loss"])


def test_rigd_trains_against_a_teacher_checkpoint(tmp_path):
    classes = load_dataset("synthetic", "train", synthetic_size=10).classes
    teacher = save_checkpoint(
        PAGClassifier("tinycnn", 10, classes).eval(), tmp_path / "teacher", {"method": "adv"}
    )
    before = (teacher / "model.safetensors").read_bytes()
    out = train(
        TrainConfig(out=str(tmp_path / "rigd"), method="rigd", teacher=str(teacher), **TINY), progress=False
    )
    run = _run(out)
    assert (run["method"], run["lam"], run["teacher"]) == ("rigd", 0.4, str(teacher))
    assert run["target_info"] == {"target": "rigd", "teacher": str(teacher), "grad_of": "logsoftmax"}
    assert (teacher / "model.safetensors").read_bytes() == before
    assert math.isfinite(_log(out)[0]["loss"])


def test_rigd_with_a_missing_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint folder"):
        train(
            TrainConfig(out=str(tmp_path / "rigd"), method="rigd", teacher=str(tmp_path / "nope"), **TINY),
            progress=False,
        )


# --- DDP ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """Two CPU processes under torchrun (gloo), exactly as the README tells a multi-GPU user to launch."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    root = tmp_path_factory.mktemp("ddp")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "pagdemo",
        "train",
        "--method",
        "cm",
        "--dataset",
        "synthetic",
        "--limit",
        "64",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--monitor-limit",
        "0",
        "--device",
        "cpu",
        "--out",
        str(root / "cm"),
    ]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=150)
    return proc, root / "cm"


def test_ddp_run_writes_the_checkpoint(ddp_run):
    proc, out = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert _run(out)["world_size"] == 2 and _run(out)["batch_size"] == 16
    assert not (out / STATE_DIR).exists()
    assert load_checkpoint(out).arch == "tinycnn"
    assert len(_log(out)) == 1  # rank 0 alone writes the log


def test_ddp_takes_the_same_optimizer_steps_as_one_process(ddp_run):
    """batch_size is the global batch: 64 images / 16 = 4 steps per epoch on any number of processes, so the
    schedule ends where a single process's would (the last lr of a 1-epoch paper run is lr * 0.01)."""
    proc, out = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = resolve(TrainConfig(out="x", method="cm", dataset="synthetic", limit=64, batch_size=16, epochs=1))
    assert _log(out)[0]["lr"] == pytest.approx(lr_at(cfg, 3, 4)), (
        "DDP ran fewer (or more) steps than 64 // 16"
    )
