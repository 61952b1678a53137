"""The benchmark runs end to end in a tiny setting and writes a sane, complete JSON."""

import json

import pytest
import torch

from pagdemo.bench import SAMPLED, BenchConfig, format_tables, run_bench, step_cases
from pagdemo.cli import parse
from pagdemo.records.files import write_json


def parse_config(argv):
    """What `pagdemo bench ARGV` runs."""
    return parse(["bench", *argv])[1]


TINY = BenchConfig(
    device="cpu",
    model="tinycnn",
    image_size=8,
    batch_sizes=(4,),
    warmup=0,
    repeats=2,
    pgd_batch=4,
    pgd_repeats=3,
    grid_steps=2,
    approx_draws=2,
    profile=("explicit",),
)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "cpu.json"
    write_json(path, run_bench(TINY))
    return json.loads(path.read_text())


def test_every_step_is_timed(result):
    cases = {r["case"] for r in result["train_step"]}
    assert cases == {"vanilla", "loop", "batched", "vmap", "explicit", SAMPLED}
    assert set(result["skipped"]) == {"compiled"}
    for r in result["train_step"]:
        assert r["runs"] == 2 and r["batch"] == 4  # two timed runs: min <= median <= max says something
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"] and r["min_s"] < r["max_s"]
        assert r["img_per_s"] > 0 and r["peak_mem_mb"] > 0 and r["cpu_util"] > 0
    kinds = {r["case"]: r["semantics"] for r in result["train_step"]}
    assert (
        kinds[SAMPLED].startswith("APPROXIMATE")
        and kinds["explicit"] == kinds["vmap"] == "exact (equals loop)"
    )
    loop = next(r for r in result["train_step"] if r["case"] == "loop")
    assert loop["speedup_vs_loop"] == 1.0  # the reference of the ratios


def test_pgd_ours_and_torchattacks_compute_the_same_attack(result):
    p = result["pgd20_eval"]
    assert p["ours"]["img_per_s"] > 0 and p["torchattacks"]["img_per_s"] > 0
    assert p["same_pixels_frac"] > 0.99
    assert p["ours"]["runs"] == p["torchattacks"]["runs"] == 3  # PGD gets its own, larger repeat count


def test_grid_and_approximation_sections(result):
    g = result["app_grid"]
    assert g["frames"] == 2 + 1  # the clean grid, then one frame per PGD step
    assert 0 < g["first_frame_s"] < g["first_step_s"] < g["total_s"]
    for mode in ("train", "eval"):
        err = result["approx_error"][mode]
        assert -1 <= err["cos_to_exact_per_draw"] <= 1 and err["rel_err_per_draw"] > 0


def test_environment_and_tables(result):
    env = result["env"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__ and "date_utc" in env
    assert result["config"]["model"] == "tinycnn"
    table = format_tables(result)
    for case in (
        "vanilla",
        "loop",
        "explicit",
        SAMPLED,
        "torchattacks",
        "App grid",
        "Skipped compiled",
        "Profile of one `explicit` step, batch 4",
    ):
        assert case in table


def test_profile_lists_the_steps_operators(result):
    table = result["profile"]["explicit"]
    assert result["profile"]["sorted_by"] == "self CPU time" and "Self CPU" in table
    assert "aten::convolution_backward" in table  # the PAG term differentiates the transposed convolutions


def test_small_preset_and_flags_override_it():
    cfg = parse_config(["--device", "cpu", "--small", "--model", "tinycnn", "--repeats", "3"])
    assert cfg.model == "tinycnn" and cfg.repeats == 3 and cfg.batch_sizes == (8, 16) and cfg.device == "cpu"
    assert parse_config(["--device", "cpu", "--batch-sizes", "8", "32"]).batch_sizes == (8, 32)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="nope"):
        step_cases(BenchConfig(impls=("nope",)), torch.device("cpu"))
    with pytest.raises(ValueError, match="repeats"):
        run_bench(BenchConfig(device="cpu", repeats=0))
    with pytest.raises(ValueError, match="profile"):
        run_bench(BenchConfig(device="cpu", profile=("nope",)))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            run_bench(BenchConfig(device="cuda"))


def test_negative_threads_are_one_line(capsys):
    from pagdemo.cli import main

    assert main(["bench", "--device", "cpu", "--threads", "-2"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "pagdemo bench: error: --threads must be 0 (torch's default) or more, got -2"
    )
