"""`pip install .` as a user gets it: a wheel built from the repository, installed non-editable into a fresh
virtual environment (reusing the installed torch, no network), works from outside the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env={**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the environment's bin folder): built here, installed without the repository on the path."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy, so no build/ folder of the repository's leaks old files into the wheel
    for folder in ("pagdemo", "maintainer"):  # maintainer/ too: pyproject, not the copy, must keep it out
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(REPO / name, src / name)
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(tmp / "dist"),
        str(src),
        cwd=tmp,
    )
    wheel = next((tmp / "dist").glob("pagdemo-*.whl"))
    env_dir = tmp / "env"
    venv.create(env_dir, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
    # The installed libraries (torch, gradio, ...) by path alone: a .pth line is not itself read for .pth
    # files, so the editable pagdemo of the development environment stays out of this one.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(env_dir / "bin" / "python"),
        "install",
        "--no-deps",
        "--no-index",
        str(wheel),
        cwd=tmp,
    )
    return wheel, env_dir / "bin"


def test_the_wheel_holds_every_subpackage_and_no_top_level_app(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    source = {str(p.parent.relative_to(REPO)) for p in (REPO / "pagdemo").rglob("__init__.py")}
    assert packages == source, packages ^ source  # bench/, app/ and every other subpackage
    assert not any(n.startswith("app/") for n in names)
    assert any(n.startswith("pagdemo/app/examples/") and n.endswith(".png") for n in names)


def test_the_wheel_holds_no_maintainer_tool(installed):
    """What rewrites README.md and docs/ (maintainer/: the docs generator and its tables, the GPU windows)
    stays in the checkout: no module of the wheel knows the generated blocks' marker, and none is the
    generator."""
    wheel, _ = installed
    z = zipfile.ZipFile(wheel)
    names = z.namelist()
    modules = {n: z.read(n) for n in names if n.endswith(".py")}
    marker = [
        n for n, code in modules.items() if b"<!-- generated:" in code
    ]  # the blocks the generator fills
    tools = [n for n, code in modules.items() if b"from maintainer" in code or b"import maintainer" in code]
    assert not [n for n in names if n.split("/")[0] == "maintainer"] and "pagdemo/docs.py" not in names
    assert not marker and not tools, marker + tools


def test_the_installed_commands_work_outside_the_repository(installed, tmp_path):
    _, bin_dir = installed
    assert "train" in _run(str(bin_dir / "pagdemo"), "--help", cwd=tmp_path).stdout
    assert "--batch-sizes" in _run(str(bin_dir / "pagdemo"), "bench", "--help", cwd=tmp_path).stdout
    assert "--aa-version" in _run(str(bin_dir / "pagdemo"), "eval", "--help", cwd=tmp_path).stdout
    staged = _run(
        str(bin_dir / "pagdemo"),
        "push-to-hub",
        str(REPO / "checkpoints" / "vanilla"),
        "--repo",
        "me/vanilla",
        "--dry-run",
        cwd=tmp_path,
    ).stdout
    assert (
        staged.startswith("would upload to me/vanilla: NOTES.md, README.md, audit-l2.json")
        and "model.safetensors.index.json" in staged
    )
    where = _run(
        str(bin_dir / "python"),
        "-c",
        "import pagdemo, pagdemo.app, pagdemo.bench; print(pagdemo.__file__)",
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(where).is_relative_to(bin_dir.parent), where  # the installed copy, not the repository
