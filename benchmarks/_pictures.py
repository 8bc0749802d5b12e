"""Pictures of the changing scenarios: the client's slots against the key's true cap."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

PICTURES = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"

LABELS = {
    "runner": "BatchRunner",
    "webapp": "300 concurrent generate() on one client",
    "gather": "gather + semaphore",
    "aiolimiter": "aiolimiter",
    "shared": "4 processes, shared RedisLimits",
    "local": "4 processes, per-process Limits",
}


def draw(scenario: Any, rows: list[dict[str, Any]], directory: Path = PICTURES) -> Path:
    """Draw one panel per contender of one run of ``scenario``; return the PNG's path.

    Each panel shows, over provider seconds since the client started: the key's cap, the
    room the neighbour leaves the client, the slots the client's tasks hold (all sampled from
    the fake), the cap the client believes in (when it is ours), and each 409 and 429.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(
        len(rows), 1, figsize=(10, 2.9 * len(rows) + 1.4), sharex=True, squeeze=False
    )
    top = max(s[3] or 0 for row in rows for s in row["timeline"]["samples"])
    for axis, row in zip(axes[:, 0], rows, strict=True):
        timeline = row["timeline"]
        samples = timeline["samples"]
        t = [s[0] for s in samples]
        active = [s[1] for s in samples]
        cap = [s[3] for s in samples]
        room = [max((s[3] or 0) - s[2], 0) for s in samples]
        axis.fill_between(t, room, cap, step="post", color="0.85", label="held by the neighbour")
        axis.step(t, cap, where="post", color="black", linewidth=1.5, label="key's cap")
        axis.fill_between(
            t, 0, active, step="post", color="tab:blue", alpha=0.45, label="client's tasks"
        )
        learned = [point for point in timeline.get("learned", []) if point[1] is not None]
        if learned:
            axis.step(
                [p[0] for p in learned],
                [p[1] for p in learned],
                where="post",
                color="tab:orange",
                linestyle="--",
                linewidth=1.5,
                label="cap the client believes",
            )
        counts = []
        for status, y, colour, label in (
            (409, -1.0, "tab:red", "409 (active-task limit)"),
            (429, -2.2, "tab:purple", "429 (rate limit)"),
        ):
            times = [r[0] for r in timeline["refusals"] if r[1] == status]
            counts.append(len(times))
            axis.scatter(times, [y] * len(times), marker="|", s=60, color=colour, label=label)
        axis.axvline(row["oracle"], color="tab:green", linestyle=":", label="oracle's makespan")
        axis.set_ylim(-3.2, top + 1.5)
        axis.set_yticks(range(0, top + 1, max(1, round(top / 5))))
        for y, text in ((-1.0, "409"), (-2.2, "429")):
            axis.text(1.005, y, text, transform=axis.get_yaxis_transform(), va="center", fontsize=7)
        axis.set_ylabel("active-task slots")
        axis.set_title(
            f"{LABELS.get(row['contender'], row['contender'])}: makespan {row['makespan']:.0f} s "
            f"(oracle {row['oracle']:.0f} s, efficiency {row['efficiency']:.2f}); "
            f"{counts[0]} 409s, {counts[1]} 429s",
            fontsize=10,
        )
        axis.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("provider seconds since the client started")
    handles: dict[str, Any] = {}
    for axis in axes[:, 0]:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(str(label), handle)
    figure.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncols=4,
        fontsize=8,
        frameon=False,
    )
    title = textwrap.fill(f"{scenario.name}: {scenario.description}", 110)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.45 / figure.get_figheight(), 1, 1))
    path = directory / f"{scenario.name}.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
