"""The compact training-step table of a benchmark JSON, for the README and the GPU session notes."""

from __future__ import annotations


def step_table(result: dict, source: str) -> str:
    """One row per training step, one column per batch: img/s, with time against vanilla and speedup against
    loop at the largest batch (the compact table of the README and the GPU session notes)."""
    rows = [r for r in result["train_step"] if "img_per_s" in r]
    batches = sorted({r["batch"] for r in rows})
    top = batches[-1]
    env = result["env"]
    hw = env.get("gpu", env["cpu"] + f", {env['cpu_threads']} threads")
    lines = [
        f"{env['date_utc'][:10]}, {hw}, torch {env['torch']}, autocast {env['autocast']}, "
        f"{result['config']['model']}, median of {result['config']['repeats']} runs "
        f"([`{source}`]({source}))",
        "",
        "| training step | "
        + " | ".join(f"batch {b} img/s" for b in batches)
        + f" | x vanilla time ({top}) | vs the `loop` reference ({top}) | semantics |",
        "|---|" + "---|" * (len(batches) + 3),
    ]
    for case in dict.fromkeys(r["case"] for r in rows):
        by_batch = {r["batch"]: r for r in rows if r["case"] == case}
        last = by_batch.get(top, {})
        speed = lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.1f}"  # noqa: E731
        ratio = "" if case == "vanilla" else f"{last.get('speedup_vs_loop', 0):.2f}x"
        lines.append(
            f"| {case} | "
            + " | ".join(speed(by_batch[b]["img_per_s"]) if b in by_batch else "" for b in batches)
            + f" | {last.get('x_vanilla_time', 0):.1f} | {ratio} | {last.get('semantics', '')} |"
        )
    return "\n".join(lines)
