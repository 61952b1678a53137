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
        *[_step_row(r) for r in result["train_step"]],
        "",
    ]
    if (p := result.get("pgd20_eval")) is not None:
        best = p.get("ours_vs_torchattacks_speed_best")  # older JSONs have no best-run ratio
        best = "" if best is None else f", of best runs {best:.2f}"
        ours, theirs = p["ours"], p["torchattacks"]
        lines.append(
            f"PGD-20 linf eval, batch {p['batch']}: ours {ours['img_per_s']:.1f} img/s, torchattacks "
            f"{theirs['img_per_s']:.1f} img/s (ratio of medians {p['ours_vs_torchattacks_speed']:.2f}{best}, "
            f"{ours.get('runs', '?')} runs each; identical pixels {100 * p['same_pixels_frac']:.1f}%)"
        )
    if (g := result.get("app_grid")) is not None:
        lines.append(
            f"App grid ({g['models']} models x {g['targets']} targets, L2 eps {g['eps_l2']}, {g['steps']} "
            f"steps): clean grid {1e3 * g['first_frame_s']:.0f} ms, first PGD step "
            f"{1e3 * g['first_step_s']:.0f} ms, total {g['total_s']:.2f} s"
        )
    if (a := result.get("approx_error")) is not None:
        for mode in ("train", "eval"):
            m = a[mode]
            lines.append(
                f"{a['impl']} gradient error ({mode}-mode BN, batch {a['batch']}, {a['draws']} draws): "
                f"cosine to exact {m['cos_to_exact_per_draw']:.3f}, relative error per draw "
                f"{m['rel_err_per_draw']:.2f}, of their mean {m['rel_err_of_mean']:.2f}"
            )
    lines += [f"Skipped {name}: {why}" for name, why in result["skipped"].items()]
    prof = result.get("profile", {}) if profiles else {}
    for impl in (i for i in cfg.get("profile", ()) if i in prof):
        head = f"Profile of one `{impl}` step, batch {prof['batch']}, by {prof['sorted_by']}:"
        lines += ["", head, "", prof[impl]]
    return "\n".join(lines)
