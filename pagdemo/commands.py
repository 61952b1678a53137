"""What each `pagdemo` command does with its parsed flags: build the command's config dataclass and call the same
function the app and the tests call (`pagdemo.cli` parses argv and dispatches here)."""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable


class CLIError(Exception):
    """A user mistake the CLI reports in one line."""


def default(cls: type, name: str) -> Any:
    """A config dataclass field's default: the one place a default is written is the dataclass."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def train_config(args: argparse.Namespace):
    """The TrainConfig of a parsed `train` or `adv-train` command line (adv-train is method 'adv')."""
    from pagdemo.train.config import TrainConfig

    common = dict(out=args.out, dataset=args.dataset, data_dir=args.data_dir, limit=args.limit, arch=args.arch,
                  recipe=args.recipe, init=args.init, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  weight_decay=args.weight_decay, amp=args.amp, seed=args.seed, device=args.device,
                  monitor_limit=args.monitor_limit, monitor_robust=args.monitor_robust, monitor_pgd=args.monitor_pgd,
                  monitor_cos=args.monitor_cos, keep_state=args.keep_state, image_size=args.image_size,
                  on_bad_image=args.on_bad_image)
    if args.command == "adv-train":
        return TrainConfig(method="adv", adv_norm=args.norm, adv_eps=args.eps, adv_attack=args.attack,
                           adv_steps=args.adv_steps, **common)
    return TrainConfig(method=args.method, lam=args.lam, grad_of=args.grad_of, pag_impl=args.pag_impl,
                       bn_coupling=args.bn_coupling, pag_frame=args.pag_frame, cm_scaling=args.cm_scaling,
                       nn_k=args.nn_k, teacher=args.teacher, **common)


def cmd_train(args: argparse.Namespace, command: str) -> None:
    """train and adv-train share one loop."""
    from pagdemo.train.loop import train

    out = train(train_config(args), command=command)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint written to {out}; evaluate it with: pagdemo eval --checkpoint {out} --norm l2")


def cmd_eval(args: argparse.Namespace, command: str) -> None:
    """Evaluate and print one line (AutoAttack: a few lines)."""
    from pagdemo.eval.evaluate import EvalConfig, format_record, run_eval

    if args.attack == "autoattack":
        from pagdemo.eval.autoattack import AutoAttackConfig, format_autoattack, run_autoattack_eval

        if args.norm == "none":
            raise CLIError("--attack autoattack needs --norm linf or l2")
        cfg = AutoAttackConfig(checkpoint=args.checkpoint, norm=args.norm, eps=args.eps, version=args.aa_version,
                               backend=args.aa_backend, limit=args.limit or default(AutoAttackConfig, "limit"),
                               dataset=args.dataset, data_dir=args.data_dir, on_bad_image=args.on_bad_image,
                               batch_size=args.batch_size, device=args.device, seed=args.seed, json=args.json,
                               record=not args.no_record)
        print(format_autoattack(run_autoattack_eval(cfg)))
        return
    cfg = EvalConfig(checkpoint=args.checkpoint, norm=None if args.norm == "none" else args.norm, eps=args.eps,
                     steps=args.steps, step_size=args.step_size, restarts=args.restarts,
                     random_start=not args.no_random_start, limit=args.limit, dataset=args.dataset,
                     data_dir=args.data_dir, on_bad_image=args.on_bad_image, batch_size=args.batch_size,
                     device=args.device, seed=args.seed, json=args.json, record=not args.no_record)
    print(format_record(run_eval(cfg)))


def cmd_toy(args: argparse.Namespace, command: str) -> None:
    """Run the toy experiment and say where its files went."""
    from pagdemo.toy.experiment import ToyConfig
    from pagdemo.toy.run import run_toy
    from pagdemo.toy.stats import results_table

    cfg = ToyConfig(seeds=args.seeds, lam=args.lam, out=args.out, sweep_lams=args.sweep, workers=args.workers,
                    dtype=args.dtype)
    print(results_table(run_toy(cfg)))
    print(f"results in {args.out}/results.json, figure in {args.out}/decision_boundary.png")


def cmd_attack(args: argparse.Namespace, command: str) -> None:
    """Render the PAG grid for one image and the given checkpoints."""
    from PIL import Image

    from pagdemo.records.checkpoints import load_checkpoint
    from pagdemo.eval.evaluate import resolve_device
    from pagdemo.viz.grid import GridSpec, pag_grid_steps
    from pagdemo.data.images import load_image
    from pagdemo.threat import picture_eps

    device = resolve_device(args.device)
    models = [load_checkpoint(c, device) for c in args.checkpoint]
    classes, size = models[0].classes, models[0].image_size
    if any(m.classes != classes or m.image_size != size for m in models):
        raise CLIError("the checkpoints do not share the same classes and image size; give checkpoints of one dataset")
    if args.target == "all":
        targets = list(range(len(classes)))
    elif args.target in classes:
        targets = [classes.index(args.target)]
    elif args.target.isdigit() and int(args.target) < len(classes):
        targets = [int(args.target)]
    else:
        raise CLIError(f"unknown target {args.target!r}; choose 'all', one of {classes} or an index below {len(classes)}")
    eps = args.eps if args.eps is not None else picture_eps(args.norm, size)
    x = load_image(args.image, size)
    names = [Path(c).name for c in args.checkpoint]
    spec = GridSpec(names, classes, targets, f"targeted PGD-{args.steps}, {args.norm} eps={eps:.4g}",
                    scale=max(1, 96 // size))
    frame = None
    for frame in pag_grid_steps(models, x, spec, args.norm, eps, args.steps, min_interval=float("inf")):
        pass
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame.image).save(args.out)
    print(f"grid written to {args.out}")


def cmd_audit(args: argparse.Namespace, command: str) -> None:
    """Run the gradient-masking audit and print its verdict."""
    from pagdemo.eval.audit import AuditConfig, format_audit, run_audit

    cfg = AuditConfig(checkpoint=args.checkpoint, norm=args.norm, eps=args.eps, vanilla=args.vanilla, judge=args.judge,
                      autoattack=args.autoattack, autoattack_backend=args.aa_backend, limit=args.limit,
                      pag_limit=args.pag_limit, pag_eps=args.pag_eps, pag_steps=args.pag_steps, restarts=args.restarts,
                      dataset=args.dataset, data_dir=args.data_dir, on_bad_image=args.on_bad_image,
                      batch_size=args.batch_size, device=args.device, seed=args.seed, json=args.json,
                      record=not args.no_record, resume=args.resume)
    print(format_audit(run_audit(cfg)))


def bench_config(args: argparse.Namespace):  # noqa: ANN201 (BenchConfig, imported lazily)
    """Flags -> BenchConfig; --small sets the CPU-sized defaults that the other flags override."""
    import torch

    from pagdemo.bench import SMALL, BenchConfig
    cfg = BenchConfig(device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"), json=args.json,
                      channels_last=args.channels_last)
    if args.small:
        cfg = dataclasses.replace(cfg, **SMALL)
    given = {"model": args.model, "batch_sizes": args.batch_sizes and tuple(args.batch_sizes),
             "impls": args.impls and tuple(args.impls), "repeats": args.repeats, "warmup": args.warmup,
             "pgd_batch": args.pgd_batch, "pgd_repeats": args.pgd_repeats, "threads": args.threads,
             "profile": args.profile and tuple(args.profile)}
    return dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None})


def cmd_bench(args: argparse.Namespace, command: str) -> None:
    """Run the benchmark, write its JSON, print its tables."""
    from pagdemo.bench import format_tables, run_bench
    from pagdemo.records.files import write_json

    cfg = bench_config(args)
    result = run_bench(cfg)
    if cfg.json:
        write_json(cfg.json, result)
    print(format_tables(result))


def cmd_app(args: argparse.Namespace, command: str) -> None:
    """Build the app and serve it until interrupted."""
    from pagdemo.app import serve

    serve(checkpoints=args.checkpoints, host=args.host, port=args.port, device=args.device,
          concurrency=args.concurrency, data_dir=args.data_dir, toy_dir=args.toy_dir)


def cmd_docs(args: argparse.Namespace, command: str) -> None:
    """Rewrite (or check) the generated tables; problems are one line each."""
    from pagdemo.docs import update

    problems = update(Path(args.root), check=args.check)
    if problems:
        raise CLIError(f"{len(problems)} problem(s): " + " | ".join(problems))
    print("every generated table matches the records" if args.check else "generated tables rewritten")


COMMANDS: dict[str, Callable[[argparse.Namespace, str], None]] = {
    "train": cmd_train, "adv-train": cmd_train, "eval": cmd_eval, "toy": cmd_toy, "attack": cmd_attack,
    "audit": cmd_audit, "bench": cmd_bench, "app": cmd_app, "docs": cmd_docs}
