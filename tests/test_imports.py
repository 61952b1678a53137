"""The package's import graph: the maths loads no I/O library, and importing changes no global state."""

import subprocess
import sys

CHECK = """
import sys, matplotlib
backend = dict.__getitem__(matplotlib.rcParams, "backend")  # read without resolving it
import pagdemo.pag.losses, pagdemo.pag.targets, pagdemo.pag.alignment
import pagdemo.eval.pagscore, pagdemo.eval.accuracy
import pagdemo.toy.experiment
assert "huggingface_hub" not in sys.modules, "the loss pulled in the checkpoint I/O"
import pagdemo.cli, pagdemo.train.loop, pagdemo.eval.audit, pagdemo.viz.grid, pagdemo.viz.plots, pagdemo.bench
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported: it keeps figures and a backend globally"
backend_now = dict.__getitem__(matplotlib.rcParams, "backend")
assert backend_now == backend, "importing pagdemo changed matplotlib's backend"
print("ok")
"""


def test_maths_loads_no_io_and_imports_change_no_global_state():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_the_maths_alone_loads_no_io_plotting_or_web_library():
    check = (
        "import sys, pagdemo.pag.losses, pagdemo.pag.targets, pagdemo.pag.alignment\n"
        "print(sorted(m for m in ('huggingface_hub', 'safetensors', 'matplotlib', 'gradio', 'PIL')"
        " if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_the_cli_parses_without_gradio_so_training_runs_where_it_is_not_installed():
    """The GPU machine has torch but no gradio: parsing `pagdemo train` must not import the app's UI."""
    check = (
        "import sys\nfrom pagdemo.cli import parse\n"
        "parse(['train', '--method', 'cm', '--out', 'x'])\nparse(['app'])\n"
        "print('gradio' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stdout + proc.stderr[-2000:]
