"""Markdown tables of a benchmark result: what `pagdemo bench` prints and maintainer.docs quotes."""

from __future__ import annotations


def _step_row(r: dict) -> str:
    """One training step at one batch size, or why it failed."""
    if "error" in r:
        return f"| {r['case']} | {r['batch']} | failed: {r['error'][:120]} | | | | | | {r['semantics']} |"
    return (
        f"| {r['case']} | {r['batch']} | {r['img_per_s']:.1f} | {1e3 * r['median_s']:.0f} "
        f"({1e3 * r['min_s']:.0f}-{1e3 * r['max_s']:.0f}) | {r['x_vanilla_time']:.1f} | "
        f"{r['speedup_vs_loop']:.2f} | {r['peak_mem_mb']} | {r['cpu_util']:.2f} | {r['semantics']} |"
    )


def _pgd_line(p: dict) -> str:
    """PGD-20, ours beside torchattacks'."""
    best = p.get("ours_vs_torchattacks_speed_best")  # older JSONs have no best-run ratio
    best = "" if best is None else f", of best runs {best:.2f}"
    ours, theirs = p["ours"], p["torchattacks"]
    return (
        f"PGD-20 linf eval, batch {p['batch']}: ours {ours['img_per_s']:.1f} img/s, torchattacks "
        f"{theirs['img_per_s']:.1f} img/s (ratio of medians {p['ours_vs_torchattacks_speed']:.2f}{best}, "
        f"{ours.get('runs', '?')} runs each; identical pixels {100 * p['same_pixels_frac']:.1f}%)"
    )


def _grid_line(g: dict) -> str:
    """The app's grid: how soon a visitor sees it, and its whole run."""
    return (
        f"App grid ({g['models']} models x {g['targets']} targets, L2 eps {g['eps_l2']}, "
        f"{g['steps']} steps): "
        f"clean grid {1e3 * g['first_frame_s']:.0f} ms, first PGD step {1e3 * g['first_step_s']:.0f} ms, "
        f"total {g['total_s']:.2f} s"
    )


def _approx_line(a: dict, mode: str) -> str:
    """The sampled approximation's gradient error in one BatchNorm mode."""
    m = a[mode]
    return (
        f"{a['impl']} gradient error ({mode}-mode BN, batch {a['batch']}, {a['draws']} draws): "
        f"cosine to exact {m['cos_to_exact_per_draw']:.3f}, relative error per draw "
        f"{m['rel_err_per_draw']:.2f}, of their mean {m['rel_err_of_mean']:.2f}"
    )


def format_tables(result: dict, profiles: bool = True) -> str:
    """Markdown tables of a result (the profiles' operator tables too, unless profiles=False)."""
    env, cfg = result["env"], result["config"]
    hw = env.get("gpu", env["cpu"] + f", {env['cpu_threads']} threads")
    lines = [
        f"{env['date_utc']}, {hw}, torch {env['torch']}, autocast {env['autocast']}, "
        f"model {cfg['model']}, median of {cfg['repeats']} runs (min-max)",
        "",
        "| step | batch | img/s | ms/step (min-max) | x vanilla time | speedup vs loop | peak MiB | CPU util "
        "| semantics |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_step_row(r) for r in result["train_step"]]
    pgd, grid = result.get("pgd20_eval"), result.get("app_grid")
    lines += [""] if pgd is None else ["", _pgd_line(pgd)]
    lines += [] if grid is None else [_grid_line(grid)]
    lines += [_approx_line(result["approx_error"], m) for m in ("train", "eval") if "approx_error" in result]
    lines += [f"Skipped {name}: {why}" for name, why in result["skipped"].items()]
    prof = result.get("profile", {}) if profiles else {}
    for impl in (i for i in cfg.get("profile", ()) if i in prof):
        head = f"Profile of one `{impl}` step, batch {prof['batch']}, by {prof['sorted_by']}:"
        lines += ["", head, "", prof[impl]]
    return "\n".join(lines)
