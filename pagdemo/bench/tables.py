"""Markdown tables of a benchmark result: what `pagdemo bench` prints (maintainer.docs puts them in the READMEs)."""

from __future__ import annotations


def format_tables(result: dict, profiles: bool = True) -> str:
    """Markdown tables of a result (the profiles' operator tables too, unless profiles=False)."""
    env = result["env"]
    hw = env.get("gpu", env["cpu"] + f", {env['cpu_threads']} threads")
    lines = [
        f"{env['date_utc']}, {hw}, torch {env['torch']}, autocast {env['autocast']}, "
        f"model {result['config']['model']}, median of {result['config']['repeats']} runs (min-max)",
        "",
        "| step | batch | img/s | ms/step (min-max) | x vanilla time | speedup vs loop | peak MiB | CPU util | semantics |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["train_step"]:
        if "error" in r:
            lines.append(
                f"| {r['case']} | {r['batch']} | failed: {r['error'][:120]} | | | | | | {r['semantics']} |"
            )
            continue
        lines.append(
            f"| {r['case']} | {r['batch']} | {r['img_per_s']:.1f} | {1e3 * r['median_s']:.0f} "
            f"({1e3 * r['min_s']:.0f}-{1e3 * r['max_s']:.0f}) | {r['x_vanilla_time']:.1f} | "
            f"{r['speedup_vs_loop']:.2f} | {r['peak_mem_mb']} | {r['cpu_util']:.2f} | {r['semantics']} |"
        )
    p = result.get("pgd20_eval")
    if p is not None:  # older JSONs have no best-run ratio
        best = (
            f", of best runs {p['ours_vs_torchattacks_speed_best']:.2f}"
            if "ours_vs_torchattacks_speed_best" in p
            else ""
        )
        lines += [
            "",
            f"PGD-20 linf eval, batch {p['batch']}: ours {p['ours']['img_per_s']:.1f} img/s, torchattacks "
            f"{p['torchattacks']['img_per_s']:.1f} img/s (ratio of medians {p['ours_vs_torchattacks_speed']:.2f}{best}, "
            f"{p['ours'].get('runs', '?')} runs each; identical pixels {100 * p['same_pixels_frac']:.1f}%)",
        ]
    else:
        lines += [""]
    g = result.get("app_grid")
    lines += (
        []
        if g is None
        else [
            f"App grid ({g['models']} models x {g['targets']} targets, L2 eps {g['eps_l2']}, {g['steps']} steps): "
            f"clean grid {1e3 * g['first_frame_s']:.0f} ms, first PGD step {1e3 * g['first_step_s']:.0f} ms, "
            f"total {g['total_s']:.2f} s"
        ]
    )
    if "approx_error" in result:
        a = result["approx_error"]
        for mode in ("train", "eval"):
            m = a[mode]
            lines.append(
                f"{a['impl']} gradient error ({mode}-mode BN, batch {a['batch']}, {a['draws']} draws): "
                f"cosine to exact {m['cos_to_exact_per_draw']:.3f}, relative error per draw "
                f"{m['rel_err_per_draw']:.2f}, of their mean {m['rel_err_of_mean']:.2f}"
            )
    for name, why in result["skipped"].items():
        lines.append(f"Skipped {name}: {why}")
    prof = result.get("profile", {}) if profiles else {}
    for impl in (i for i in result["config"].get("profile", ()) if i in prof):
        lines += [
            "",
            f"Profile of one `{impl}` step, batch {prof['batch']}, by {prof['sorted_by']}:",
            "",
            prof[impl],
        ]
    return "\n".join(lines)
