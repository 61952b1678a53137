"""Every `pagdemo` command in one table: the config dataclass whose flag() fields are its flags, the function
that runs it (config and command line in, what to print out) and its help, for `pagdemo.cli`; modules are
named, not imported, so a command loads its own runner only (training never imports gradio)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Command:
    """One command: `config` and `run` are "module:name" strings; the rest shapes its parser."""

    config: str
    run: str
    help: str
    description: str
    group: str | None = None  # a config shared by two commands shows each its own group of flags
    fixed: dict[str, object] = field(default_factory=dict)  # settings the command line does not offer
    build: str | None = None  # "module:name" making the config from flags that default to None (not given)
    interrupted: str = ""  # said on Ctrl-C


TRAIN = "pagdemo.train.config:TrainConfig"
RESUME = "interrupted; run the same command again to resume from the last finished epoch"
COMMANDS = {
    "train": Command(
        TRAIN,
        "pagdemo.train:train_command",
        "train vanilla or PAG (oi, cm, nn, rigd) classifiers",
        "Train with Eq. 1: CE + lambda * sum over classes of (1 - cos(input gradient, g(x, t))), the targets "
        "g named by --method; the paper's settings are the defaults (docs/training.md says which choices the "
        "paper leaves open, and ours).",
        group="pag",
        interrupted=RESUME,
    ),
    "adv-train": Command(
        TRAIN,
        "pagdemo.train:train_command",
        "adversarially train a robust teacher (PGD-AT, FGSM-RS or N-FGSM)",
        "Adversarial training (Madry et al. 2018) for the RIGD teachers: each batch is replaced by its "
        "adversarial examples.",
        group="adv",
        fixed={"method": "adv"},
        interrupted=RESUME,
    ),
    "eval": Command(
        "pagdemo.eval.run:EvalCommand",
        "pagdemo.eval.run:eval_command",
        "clean and PGD robust accuracy of a checkpoint",
        "PGD-k with random start and step 2*eps/k (the paper: k=20, linf eps 8/255, l2 eps 0.5). The result "
        "is appended to the checkpoint's metrics.json.",
    ),
    "toy": Command(
        "pagdemo.toy.experiment:ToyConfig",
        "pagdemo.toy.run:toy_command",
        "the paper's 2-D experiment (Sec. 5.1): vanilla vs PAG decision boundaries",
        "Two classes on the line x2 = 2*x1, an MLP 2-32-2, vanilla vs PAG with the Nearest Neighbor target, "
        "attacked with L2 PGD-10 (eps 15, step 2).",
    ),
    "attack": Command(
        "pagdemo.viz.picture:PictureConfig",
        "pagdemo.viz.picture:picture_command",
        "the PAG picture: targeted PGD from one image toward each class",
        "Large-eps targeted PGD from your image toward every class (or one): robust and PAG models paint "
        "class features, vanilla models add noise (the paper's Fig. 1).",
    ),
    "audit": Command(
        "pagdemo.eval.audit:AuditConfig",
        "pagdemo.eval.run:audit_command",
        "gradient-masking checks and the PAG score of a checkpoint",
        "Carlini et al. (2019) sanity checks: accuracy against growing eps must reach 0, PGD-100 with "
        "restarts must not beat PGD-20 by much, a transfer attack from the vanilla model must not beat the "
        "white-box one. Prints a verdict with the evidence.",
    ),
    "bench": Command(
        "pagdemo.bench:BenchConfig",
        "pagdemo.bench:bench_command",
        "training-step, PGD and app-grid speed and memory (JSON out)",
        "Times every PAG implementation against vanilla and the reference loop, our PGD against "
        "torchattacks', and the app's grid; medians of round-robin runs.",
        build="pagdemo.bench:bench_config",
    ),
    "app": Command(
        "pagdemo.app:AppConfig",
        "pagdemo.app:serve",
        "serve the Gradio app on the shipped (or your) checkpoints",
        "Upload an image or pick a test image and watch class-targeted PGD change it, model by model; "
        "compare robustness; the toy experiment. http://127.0.0.1:7860 by default.",
    ),
    "import-robustbench": Command(
        "pagdemo.records.zoo_import:ImportConfig",
        "pagdemo.records.zoo_import:import_command",
        "a RobustBench model (e.g. the paper's RIGD teachers) as a pagdemo checkpoint",
        "Loads a model of RobustBench's zoo with RobustBench's own load_model (tensors only, never code from "
        "the file) and writes a checkpoint folder that eval, audit, attack, the app and train --method rigd "
        "--teacher use like any other. Needs the optional robustbench package: pip install -e '.[zoo]'.",
    ),
    "push-to-hub": Command(
        "pagdemo.records.push:PushConfig",
        "pagdemo.records.push:push_to_hub",
        "upload a checkpoint folder to a Hugging Face Hub repo",
        "Checks that FOLDER loads as a pagdemo checkpoint, then uploads exactly its files (weights, config, "
        "records, audits) with a model card rendered now, whose model-index carries the recorded clean, "
        "PGD-20 and AutoAttack accuracies, as one commit (the repo is created if missing). Log in first "
        "(`hf auth login` or HF_TOKEN). Anyone then loads it by name: pagdemo eval --checkpoint "
        "hf-hub:ORG/NAME --no-record, likewise attack, audit, train --teacher/--init and app --checkpoints.",
    ),
}
