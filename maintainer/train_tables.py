"""Issue 23's training diagnosis in docs/training.md, printed from its committed JSON (maintainer.docs puts
the tables in place): the GPU recipe probe, where the shipped Class Mean model's alignment lives, and the
CPU probes of the BatchNorm couplings."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from pagdemo.records.files import read_json
from pagdemo.records.report import table_cell as _cell


def probe(root: Path) -> str:
    """The recipe probe (issue 23), from its committed JSON; says so when no window has run it yet."""
    found = sorted(root.glob("docs/gpu/*/probe.json"))
    if not found:
        return "(no GPU window has run the probe yet: `maintainer/queue.json` holds it first)"
    data = read_json(found[-1])
    jobs = data["jobs"]
    lines = [
        f"From [`{found[-1].relative_to(root)}`]({found[-1].relative_to(root / 'docs')}): "
        f"{jobs[0]['device'] if jobs else ''}, {jobs[0]['subset_n'] if jobs else ''} test images, "
        "after the last epoch; cos: summed misalignment on 256 training images after the first epoch -> "
        "after the last, with BatchNorm in train mode coupled as the run trained (as classes where its PAG "
        "pass was in eval mode) (cos train) and in eval mode, the gradient attacks see (cos eval).",
        "",
        "| job | recipe | arch | BN coupling | frame | lr | epochs | clean | PGD-20 linf | PGD-20 l2 | "
        "cos train | cos eval | seconds | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in jobs:
        first, last = (r["trajectory"][0], r["trajectory"][-1]) if r["trajectory"] else ({}, {})
        lines.append(
            f"| {r['job']} | {r['recipe']} | {r['arch']} | {r.get('bn_coupling')} | {r.get('pag_frame')} | "
            f"{r['lr']} | {r['epochs_done']}/{r['epochs']} | {_cell(100 * (r['clean'] or 0))} | "
            f"{_cell(100 * (r['linf_pgd20'] or 0))} | {_cell(100 * (r['l2_pgd20'] or 0))} | "
            f"{_cell(first.get('cos_train'))} -> {_cell(last.get('cos_train'))} | "
            f"{_cell(first.get('cos_eval'))} -> {_cell(last.get('cos_eval'))} | "
            f"{_cell(r['train_time_s'], 0)} | "
            f"`{str(r['commit'])[:7]}` |"
        )
    return "\n".join(lines)


def _spread(stat: dict) -> str:
    """A per-image quantity as mean [10th, 90th percentile]."""
    return f"{stat['mean']:.2f} [{stat['p10']:.2f}, {stat['p90']:.2f}]"


def coupling(root: Path) -> str:
    """docs/training.md: where the shipped Class Mean model's alignment lives (issue 23), from its JSON."""
    data = read_json(root / "docs/diagnosis/coupling.json")
    if not data:
        return "(not measured yet: `python -m maintainer.coupling_diagnosis`)"
    lines = [
        "| Class Mean targets | pairwise cosine of the 10 targets | lowest per-image misalignment found | "
        "one gradient flipped |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {_spread(t['pairwise_cos'])} | {_spread(t['per_image_floor'])} | "
        f"{_spread(t['flip_one_bound'])} |"
        for name, t in data["targets"].items()
    ]
    lines += [
        "",
        "| checkpoint | train mode, coupling classes | train mode, coupling batch | batch statistics held "
        "constant (detached) | eval mode | p(true class), eval mode |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{name}` | {_cell(r['classes'])} | {_cell(r['batch'])} | {_cell(r.get('detached'))} | "
        f"{_cell(r['eval'])} | "
        f"{_spread(r['p_true_class_eval'])} |"
        for name, r in data["checkpoints"].items()
    ]
    lines += [
        "",
        f"Summed misalignment of the log-softmax input gradients (0: aligned, 10: orthogonal, 20: opposite), "
        f"mean over {data['images']} training images ({data['augmented']}; "
        f"{data.get('order', 'in class order')}), BatchNorm batches of "
        f"{data['batch_size']} in train mode; {data['machine']}, torch {data['torch']}, commit "
        f"`{data['commit'][:7]}`, {data['seconds']:.0f} s: `{data['command']}`.",
    ]
    return "\n".join(lines)


def _pct(fraction: float) -> str:
    """A fraction as a percentage with one decimal, the probe's resolution."""
    return f"{100 * fraction:.1f}"


def _commit(sha: str) -> str:
    """A recorded commit as the tables print it, saying when the tree had uncommitted changes."""
    return f"`{sha[:7]}`" + (" (uncommitted changes)" if sha.endswith("-dirty") else "")


def _unique(values: Iterable[str]) -> list[str]:
    """The distinct values in their first order (a record's arms may come from several runs)."""
    return list(dict.fromkeys(values))


def _probe_arm(arm: dict) -> str:
    """One arm of a CPU coupling probe as a table row."""
    steps, epochs = arm["steps"], arm["epochs"]
    own = next(k for k in epochs[0] if k.startswith("cos_") and k != "cos_eval")
    return (
        f"| {arm['coupling']} | {_pct(steps[0]['acc'])} -> {_pct(steps[-1]['acc'])} | "
        f"{max(r['ce'] for r in steps):.2f} | {', '.join(_pct(e['test_acc']) for e in epochs)} | "
        f"{epochs[0][own]:.2f} -> {epochs[-1][own]:.2f} ({own[4:]}) | "
        f"{epochs[0]['cos_eval']:.2f} -> {epochs[-1]['cos_eval']:.2f} | {arm['seconds']:.0f} |"
    )


def _probe_start(data: dict) -> str:
    """Where the arms started: one initialization, or (fine-tuning) one network trained by cross-entropy."""
    s, init = data["settings"], data.get("init")
    if not init:
        return "the same initialization and batches for every arm"
    last = init["epochs"][-1]
    return (
        f"every arm fine-tunes one network trained by the cross-entropy alone for {s['init_epochs']} epochs "
        f"at lr {s['init_lr']} (test accuracy {_pct(last['test_acc'])}, cos eval {last['cos_eval']:.2f}), "
        "with the same batches"
    )


def _cos_images(settings: dict) -> str:
    """Which training images a probe's misalignment was measured on (augmented before it ran through the
    loop)."""
    if "cos_images" in settings:
        return f"{settings['cos_images']} training images (the loop's monitor)"
    return "128 augmented training images"


def coupling_probe(name: str) -> Callable[[Path], str]:
    """docs/training.md: a CPU probe of the BatchNorm couplings (issue 23), from docs/diagnosis/NAME.json."""

    def table(root: Path) -> str:
        data = read_json(root / f"docs/diagnosis/{name}.json")
        if not data:
            return (
                f"(not run yet: `python -m maintainer.coupling_probe_cpu --out docs/diagnosis/{name}.json`)"
            )
        lines = [
            "| coupling | train accuracy (train mode), first -> last 10 steps | cross-entropy, highest of "
            "any 10 steps | test accuracy (eval mode), by epoch | cos in its coupling, epoch 1 -> last | "
            "cos eval, epoch 1 -> last | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [_probe_arm(arm) for arm in data["arms"]]
        s, arms = data["settings"], data["arms"]
        commits = _unique(a.get("commit", data["commit"]) for a in arms)
        lines += [
            "",
            f"ResNet-18 at width {s['width']} (the paper's: 64), {s['images']} class-balanced training "
            f"images, {s['epochs']} epochs of batch {s['batch_size']}, lr {s['lr']} (`fast-lr01`'s shape), "
            f"lambda {s['lam']} (none: 0), `--pag-impl {s['impl']}`, {_probe_start(data)}; test accuracy on "
            f"{s['test_images']} test images; cos on {_cos_images(s)}; {data['machine']}, torch "
            f"{data['torch']}, commit {', '.join(_commit(c) for c in commits)}, "
            f"{data['seconds']:.0f} s: "
            f"{'; '.join(f'`{c}`' for c in _unique(a.get('command', data['command']) for a in arms))} "
            f"([log](diagnosis/{name}.log)).",
        ]
        return "\n".join(lines)

    return table


def target_geometry(root: Path) -> str:
    """docs/training.md: how class-specific every PAG target is (issue 32), from
    docs/diagnosis/target-geometry.json."""
    data = read_json(root / "docs/diagnosis/target-geometry.json")
    if not data:
        return "(not run yet: `python -m maintainer.target_geometry`)"
    lines = [
        "| target g(x, t) | pairwise cosine across classes: the images as they are (the authors' frame) | "
        "augmented once (our frame) |",
        "|---|---|---|",
    ]
    for r in data["rows"]:
        plain, augmented = _spread(r["pairwise_cos_plain"]), _spread(r["pairwise_cos_augmented"])
        lines.append(f"| {r['target']} | {plain} | {augmented} |")
    lines += [
        "",
        f"Mean [10th, 90th percentile] over {data['images']} class-balanced CIFAR-10 training images of the "
        "mean cosine between the 10 targets of one image (1: every class's target points the same way). "
        "Nearest Neighbor never picks the image itself; RIGD's targets are the teachers' log-softmax input "
        f"gradients in eval mode. {data['machine']}, torch {data['torch']}, "
        f"commit {_commit(data['commit'])}, "
        f"{data['seconds']:.0f} s: `{data['command']}` ([log](diagnosis/target-geometry.log)).",
    ]
    return "\n".join(lines)
