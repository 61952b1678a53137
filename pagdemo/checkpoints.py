"""Checkpoint folders: sharded fp16 safetensors, config.json, metrics.json and a model card.

A folder is everything a user needs to trust a model: the weights (never pickle), the
config that rebuilds the model and repeats the run, every evaluation with its exact
settings, and a README.md model card rendered from those two files.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; evaluate one checkpoint at a time there
    fcntl = None

import torch
from huggingface_hub import PyTorchModelHubMixin, load_torch_model, save_torch_state_dict
from torch import nn

from pagdemo.models import MODELS, build_model

MAX_SHARD = "15MB"  # every file stays under the 16 MB that comes back from a GPU machine
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message says what is wrong and where."""


class PAGClassifier(nn.Module, PyTorchModelHubMixin, library_name="pagdemo",
                    tags=["image-classification", "adversarial-robustness", "perceptually-aligned-gradients"]):
    """A named architecture plus its class names, savable as a self-describing folder."""

    def __init__(self, arch: str = "resnet18", num_classes: int = 10, classes: list[str] | None = None) -> None:
        super().__init__()
        self.arch, self.num_classes = arch, num_classes
        self.classes = list(classes) if classes else [str(i) for i in range(num_classes)]
        self.net = build_model(arch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _save_pretrained(self, save_directory: Path) -> None:
        """fp16 shards: half the bytes to ship, and lossless enough for evaluation (tested)."""
        state = {k: v.half() if v.is_floating_point() else v for k, v in self.state_dict().items()}
        save_torch_state_dict(state, save_directory, max_shard_size=MAX_SHARD)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location: str = "cpu", strict: bool = True, **kwargs):
        """Local folders only: a checkpoint never reaches for the network."""
        model_kwargs = {k: kwargs[k] for k in ("arch", "num_classes", "classes") if k in kwargs}
        model = cls(**model_kwargs)
        load_torch_model(model, model_id, strict=strict, map_location=map_location)
        return model.eval()


def _atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a kill never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Pretty, atomic JSON, so a human can read a checkpoint with `cat`; the folder is made if missing."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(Path(path), json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def git_commit() -> str:
    """The commit that produced a run, with '-dirty' when the tree had uncommitted changes.

    $PAGDEMO_COMMIT overrides it where the code runs from a copy without .git (a rented GPU machine).
    """
    if os.environ.get("PAGDEMO_COMMIT"):
        return os.environ["PAGDEMO_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now() -> str:
    """UTC timestamp for logs and metrics."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def save_checkpoint(model: PAGClassifier, folder: str | Path, run: dict[str, Any]) -> Path:
    """Weights + config.json (model args and `run`: method, data, schedule, provenance) + model card.

    Shards are written into a temporary sibling folder and moved in one by one, so a reader
    never sees a half-written file; metrics.json, if present, is kept.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        model.save_pretrained(tmp, config={"arch": model.arch, "num_classes": model.num_classes,
                                           "classes": model.classes, "run": run})
        old = {p.name for p in folder.glob("model*.safetensors*")}
        new = {p.name for p in Path(tmp).iterdir()} - {"README.md"}
        for name in new:
            os.replace(Path(tmp) / name, folder / name)
        for name in old - new:  # shards of an earlier save with a different layout
            (folder / name).unlink()
    write_model_card(folder)
    return folder


def shard_names(folder: Path) -> set[str]:
    """Files a sharded save's index (or a single-file save) consists of, the index included."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return set(json.loads(index.read_text())["weight_map"].values()) | {index.name}
    return {"model.safetensors"}


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file, turning a corrupt one into a clear CheckpointError."""
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def check_folder(folder: str | Path) -> Path:
    """Refuse early, with a reason, anything that is not a complete safetensors checkpoint."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint folder at {folder}")
    missing = sorted(n for n in shard_names(folder) if not (folder / n).exists())
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if missing and pickles:
        raise CheckpointError(f"{folder} holds pickle weights ({', '.join(pickles)}); "
                              "pagdemo loads safetensors only, never pickle")
    if not (folder / "config.json").exists():
        raise CheckpointError(f"{folder} has no config.json; is it a pagdemo checkpoint folder?")
    if missing:
        raise CheckpointError(f"{folder} is missing weight file(s): {', '.join(missing)}")
    return folder


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> PAGClassifier:
    """Rebuild the model from config.json and load its weights in fp32, in eval mode."""
    folder = check_folder(folder)
    config = read_json(folder / "config.json")
    if config.get("arch") not in MODELS:
        raise CheckpointError(f"{folder}/config.json: unknown arch {config.get('arch')!r}; "
                              f"this pagdemo knows {sorted(MODELS)}")
    try:
        model = PAGClassifier.from_pretrained(folder, map_location="cpu")
    except RuntimeError as e:  # shape or key mismatch between config and weights
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{folder}: weights do not match config.json (arch {config['arch']!r}): {detail}") from None
    except Exception as e:  # corrupt safetensors header or truncated shard
        raise CheckpointError(f"{folder}: cannot read the weights ({type(e).__name__}: {e})") from None
    model.run = config.get("run", {})
    return model.float().to(device).eval()


def append_metrics(folder: str | Path, record: dict[str, Any]) -> None:
    """Add one evaluation (with its settings) to metrics.json and refresh the model card."""
    folder = Path(folder)
    fd = os.open(folder, os.O_RDONLY)
    try:
        if fcntl is not None:  # two evaluations of one checkpoint at once must not drop each other's line
            fcntl.flock(fd, fcntl.LOCK_EX)
        metrics = read_json(folder / "metrics.json", {"evaluations": []})
        metrics["evaluations"].append(record)
        write_json(folder / "metrics.json", metrics)
        write_model_card(folder)
    finally:
        os.close(fd)  # releases the lock


def info(folder: str | Path) -> dict[str, Any]:
    """What the app and the model card show about a checkpoint, without loading its weights."""
    folder = Path(folder)
    config = read_json(folder / "config.json", {})
    metrics = read_json(folder / "metrics.json", {"evaluations": []})
    audits = {a.get("norm"): a for a in (read_json(f, {}) for f in sorted(folder.glob("audit-*.json")))}
    unfinished = {norm: a for norm, a in audits.items() if a.get("finished") is False}  # cut off: not in metrics.json
    return {"name": folder.name, "path": str(folder), "arch": config.get("arch"),
            "classes": config.get("classes"), "run": config.get("run", {}), "evaluations": metrics["evaluations"],
            "audits": audits, "unfinished_audits": unfinished}


def unfinished_verdict(audit: dict[str, Any]) -> str:
    """What a cut-off audit-<norm>.json can claim: the checks it finished, and what it never ran."""
    text = f"unfinished ({', '.join(audit.get('not_run_yet', []))} not run); checks so far: {audit.get('verdict')}"
    done = [k for k in audit.get("autoattack_so_far", {}) if k != "clean"]
    if done:  # AutoAttack only lowers accuracy attack by attack, so a cut-off run still bounds it from above
        text += f"; AutoAttack cut off after {done[-1]}: {100 * audit['autoattack_so_far'][done[-1]]:.1f}% (an upper bound)"
    return text


def list_checkpoints(root: str | Path = "checkpoints") -> tuple[list[dict[str, Any]], list[str]]:
    """Every loadable-looking checkpoint under `root`, and a reason for each folder skipped."""
    found, skipped = [], []
    for sub in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if not sub.is_dir() or sub.name.startswith("."):
            continue
        try:
            check_folder(sub)
            found.append(info(sub))
        except CheckpointError as e:
            skipped.append(str(e))
    return found, skipped


def latest_metric(evaluations: list[dict[str, Any]], norm: str | None, eps: float | None = None) -> dict | None:
    """The newest evaluation for a threat model (norm None means clean accuracy)."""
    for ev in reversed(evaluations):
        if norm is None and "clean_acc" in ev:
            return ev
        if norm is not None and ev.get("norm") == norm and (eps is None or abs(ev.get("eps", -1) - eps) < 1e-9):
            return ev
    return None


def _fmt(value: Any) -> str:
    """Radii like 8/255 print as 0.03137, not 0.03137254901960784."""
    return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))


NOTES = "NOTES.md"  # optional hand-written context, shown in the model card under "Notes"


def write_model_card(folder: str | Path) -> None:
    """Render README.md from config.json and metrics.json: no number is typed by hand."""
    folder = Path(folder)
    i = info(folder)
    run = i["run"]
    lines = ["---", "library_name: pagdemo", "tags:", "- adversarial-robustness", "- perceptually-aligned-gradients",
             f"datasets:\n- {run.get('dataset', 'unknown')}", "---", "",
             f"# {i['name']}: {i['arch']} trained with `{run.get('method', '?')}`", ""]
    method = run.get("method")
    if method == "adv":  # show the settings that shaped this model, not the PAG defaults it never used
        specific = [("adv_attack", "adversarial attack"), ("adv_norm", "threat model"), ("adv_eps", "eps"),
                    *([("adv_steps", "attack steps")] if run.get("adv_attack") == "pgd" else [])]
    elif method == "vanilla":
        specific = []
    else:
        specific = [("lam", "lambda"), ("grad_of", "input gradient of"), ("pag_impl", "PAG implementation"),
                    ("target_info", "target details"), ("teacher", "teacher")]
    keys = [("method", "method"), *specific, ("dataset", "dataset"), ("data_source", "data"),
            ("train_size", "training images"), ("recipe", "recipe"), ("epochs", "epochs"), ("batch_size", "batch size"),
            ("lr", "learning rate"), ("schedule", "schedule"), ("momentum", "momentum"), ("weight_decay", "weight decay"),
            ("amp", "autocast"), ("seed", "seed"), ("device", "device"), ("world_size", "processes"),
            ("train_time_s", "training time (s)"), ("command", "command"), ("commit", "commit"), ("date", "finished")]
    done, planned = run.get("epochs_done"), run.get("epochs")
    if done is not None and planned is not None and done < planned:  # a run stopped (or still going) mid-schedule
        run = {**run, "epochs": f"{done} of {planned} (stopped before the schedule ended)"}
    lines += ["| setting | value |", "|---|---|"]
    lines += [f"| {label} | `{run[k]}` |" for k, label in keys if run.get(k) not in (None, "")]
    if (folder / NOTES).exists():  # what a reader must know that no setting says (a cut-short schedule, say)
        lines += ["", "## Notes", "", (folder / NOTES).read_text(encoding="utf-8").strip()]
    lines += ["", "## Evaluations", ""]
    if not i["evaluations"]:
        lines.append("Not evaluated yet: run `pagdemo eval --checkpoint <this folder> ...`.")
    else:
        lines += ["| date | data | n | attack | norm | eps | steps | step size | restarts | clean acc | robust acc |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for ev in i["evaluations"]:
            rob = ev.get("robust_acc")
            lines.append(f"| {ev.get('date', '')} | {ev.get('data', '')} | {ev.get('n', '')} | {ev.get('attack', '')} | "
                         f"{ev.get('norm', '')} | {_fmt(ev.get('eps'))} | {ev.get('steps', '')} | {_fmt(ev.get('step_size'))} | "
                         f"{ev.get('restarts', '')} | {100 * ev['clean_acc']:.2f}% | "
                         f"{'' if rob is None else f'{100 * rob:.2f}%'} |")
    audits = [ev for ev in i["evaluations"] if "verdict" in ev]
    if audits or i["unfinished_audits"]:
        lines += ["", "## Audits", ""] + [f"- {ev.get('date', '')}, {ev.get('norm', '')}: {ev['verdict']}"
                                          + (f"; PAG score {ev['pag_score']:.3f} (judge {ev.get('pag_judge')})"
                                             if ev.get("pag_score") is not None else "") for ev in audits]
        lines += [f"- {a.get('date', '')}, {norm}: {unfinished_verdict(a)} (`audit-{norm}.json`)"
                  for norm, a in i["unfinished_audits"].items()]
    lines += ["", "Load it with `pagdemo.checkpoints.load_checkpoint(folder)` or "
              "`PAGClassifier.from_pretrained(folder)`; inputs are RGB images in [0, 1], NCHW.", ""]
    _atomic_write_text(folder / "README.md", "\n".join(lines))
