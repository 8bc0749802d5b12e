"""Pictures of the benchmarks: the client's slots against the key's true cap over time."""

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
    title = textwrap.fill(f"{scenario.name}: {scenario.description}", 110)
    return _save(figure, title, directory / f"{scenario.name}.png", legend_height=0.45)


def _save(figure: Any, title: str, path: Path, legend_height: float) -> Path:
    """Give ``figure`` its title and one legend of every panel's labels below; save it."""
    import matplotlib.pyplot as plt

    handles: dict[str, Any] = {}
    for axis in figure.axes:
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
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, legend_height / figure.get_figheight(), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


SIDES = {"visitor": ("web app", "tab:orange"), "benchmark banana number": ("batch", "tab:blue")}
"""The shared-key benchmark's consumers of the key (prompt stems): name and colour."""


def _occupancy(tasks: list[list[Any]]) -> tuple[list[float], dict[str, list[int]]]:
    """Slots held over time by each consumer, from the tasks' ``[created, finished, stem]``."""
    events = sorted(
        [(task[0], 1, task[2]) for task in tasks] + [(task[1], -1, task[2]) for task in tasks]
    )
    held = dict.fromkeys(SIDES, 0)
    times: list[float] = []
    counts: dict[str, list[int]] = {stem: [] for stem in SIDES}
    for at, change, stem in events:
        held[stem] = held.get(stem, 0) + change
        if times and times[-1] == at:
            for key in SIDES:
                counts[key][-1] = held[key]
            continue
        times.append(at)
        for key in SIDES:
            counts[key].append(held[key])
    return times, counts


def draw_shared_key(
    rows: list[dict[str, Any]],
    name: str,
    labels: dict[str, str],
    bars: dict[str, tuple[float | None, float | None]],
    cap: int,
    caption: str,
    directory: Path = PICTURES,
) -> Path:
    """Draw one run of each setup of the shared-key benchmark; return the PNG's path.

    A row per setup: on the left each visitor's wait against its arrival, with the web app's
    p95 alone and the bar; on the right the key's slots held over time by the web app and by
    the batch (from the fake's tasks) against the key's cap, and the makespans.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(rows), 2, figsize=(14, 2.5 * len(rows) + 1.2), sharex=True, squeeze=False
    )
    alone = next((row for row in rows if row["setup"] == "alone"), None)
    for (waits, slots), row in zip(axes, rows, strict=True):
        visits = row["visits"]
        waits.scatter(
            [v[0] for v in visits],
            [v[1] for v in visits],
            s=10,
            color="tab:orange",
            label="a visitor's wait",
        )
        if alone is not None:
            waits.axhline(
                alone["p95"], color="black", linestyle="--", linewidth=1, label="p95 alone"
            )
            bar = bars.get(row["setup"], (None, None))[0]
            if bar is not None:
                waits.axhline(
                    bar * alone["p95"],
                    color="tab:red",
                    linestyle=":",
                    linewidth=1.2,
                    label="bar (p95 alone x the acceptance's ratio)",
                )
        waits.set_ylim(0, max(v[1] for v in visits) * 1.12)
        waits.set_ylabel("wait (s)")
        ratio = "" if row.get("p95_ratio") is None else f" = {row['p95_ratio']:.2f}x alone"
        waits.set_title(
            f"{labels[row['setup']]}\nwait p50 {row['p50']:.2f} s, p95 {row['p95']:.2f} s{ratio}",
            fontsize=9,
            loc="left",
        )
        times, counts = _occupancy(row["tasks"])
        bottom = [0] * len(times)
        for stem, (side, colour) in SIDES.items():
            top = [b + c for b, c in zip(bottom, counts[stem], strict=True)]
            slots.fill_between(
                times,
                bottom,
                top,
                step="post",
                color=colour,
                alpha=0.55,
                linewidth=0,
                label=f"slots held by the {side}",
            )
            bottom = top
        slots.axhline(cap, color="black", linewidth=1.5, label="key's cap")
        if row.get("makespan") is not None:
            slots.axvline(
                row["makespan"],
                color="tab:blue",
                linestyle="--",
                linewidth=1.2,
                label="batch's makespan",
            )
            slots.axvline(
                row["oracle"],
                color="tab:green",
                linestyle=":",
                linewidth=1.5,
                label="oracle's makespan",
            )
            title = (
                f"batch makespan {row['makespan']:.1f} s, oracle {row['oracle']:.1f} s "
                f"(oracle / makespan {row['efficiency']:.3f})"
            )
        else:
            title = "no batch"
        slots.set_title(title, fontsize=9, loc="left")
        slots.set_ylim(0, cap + 1.5)
        slots.set_yticks(range(0, cap + 1, 2))
        slots.set_ylabel("active-task slots")
        for axis in (waits, slots):
            axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("provider seconds since the batch started")
    return _save(figure, caption, directory / f"{name}.png", legend_height=0.5)
