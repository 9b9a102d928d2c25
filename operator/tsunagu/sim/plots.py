"""PNG figures of a simulation (`tsunagu simulate --plot DIR`).

matplotlib is imported only here and only when a plot is asked for, with the Agg backend so no
display is needed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tsunagu.placement.latency import LatencyMatrix
from tsunagu.placement.throughput import REFERENCE_LOSS, REFERENCE_RTT_MS, reference_loss
from tsunagu.sim.simulator import SimulationResult
from tsunagu.sim.statistics import gpu_use_by_region
from tsunagu.sim.topology import Topology

_HIGHLIGHT = "tsunagu"
# On a crowded curve only these regions get a name.
_LOSS_LABELS = ("kanagawa", "miyagi", "osaka", "hiroshima", "hokkaido", "kagoshima", "okinawa")
_STYLE = {
    "figure.dpi": 110,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titleweight": "bold",
    "font.size": 9,
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_all(
    directory: str,
    topology: Topology,
    latency: LatencyMatrix,
    results: Mapping[str, SimulationResult],
) -> list[Path]:
    """Writes every figure into `directory` (created if missing); returns the files written."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    written = []
    with plt.rc_context(_STYLE):
        written.append(latency_heatmap(plt, target / "latency_heatmap.png", topology, latency))
        written.append(loss_curve(plt, target / "loss_curve.png", topology, latency))
        written.append(jct_distribution(plt, target / "jct_distribution.png", results))
        written.append(gpu_use_over_time(plt, target / "gpu_use_by_region.png", topology, results))
    return written


def _rtt_grid(topology: Topology, latency: LatencyMatrix) -> list[list[float]]:
    names = topology.region_names()
    grid = []
    for a in names:
        row = []
        for b in names:
            link = latency.link(a, b, 0.0)
            row.append(math.nan if link is None else link.rtt_ms)
        grid.append(row)
    return grid


def latency_heatmap(plt: Any, path: Path, topology: Topology, latency: LatencyMatrix) -> Path:
    import numpy as np

    names = topology.region_names()
    grid = np.ma.masked_invalid(np.array(_rtt_grid(topology, latency)))
    size = min(11.0, 3.0 + 0.17 * len(names))
    figure, axes = plt.subplots(figsize=(size + 1.2, size))
    cmap = plt.get_cmap("magma_r").with_extremes(bad="#dddddd")
    image = axes.imshow(grid, cmap=cmap, vmin=0)
    small = len(names) <= 12
    font = 9 if small else 5.5
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=font)
    axes.set_yticks(range(len(names)), names, fontsize=font)
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    if small:
        for i, row in enumerate(grid.filled(math.nan)):
            for j, value in enumerate(row):
                if not math.isnan(value):
                    colour = "white" if value > 0.6 * float(grid.max()) else "black"
                    axes.text(
                        j, i, f"{value:.1f}", ha="center", va="center", fontsize=8, color=colour
                    )
    else:
        for a, b in (("tokyo", "fukuoka"), ("fukuoka", "tokyo")):
            if a in names and b in names:
                i, j = names.index(a), names.index(b)
                axes.add_patch(
                    plt.Rectangle(
                        (j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#00a0ff", linewidth=1.6
                    )
                )
        axes.set_xlabel(
            "the cyan squares mark Tokyo↔Fukuoka, calibrated to the 15 ms pre-test", fontsize=8
        )
    bar = figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    bar.set_label("round-trip time (ms)")
    unknown = " — grey: no declared or measured link" if grid.mask.any() else ""
    axes.set_title(f"RTT between regions of topology '{topology.name}'{unknown}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def loss_curve(plt: Any, path: Path, topology: Topology, latency: LatencyMatrix) -> Path:
    figure, axes = plt.subplots(figsize=(7.5, 4.6))
    limit = 32.0
    xs = [limit * step / 400 for step in range(401)]
    axes.plot(
        xs,
        [100 * reference_loss(x) for x in xs],
        color="#1f4e79",
        linewidth=2.2,
        label="reference model  loss = 1 − 1/(1 + rtt/110 ms)",
    )
    axes.axvline(REFERENCE_RTT_MS, color="#999999", linestyle=":", linewidth=1)
    axes.axhline(100 * REFERENCE_LOSS, color="#999999", linestyle=":", linewidth=1)
    axes.plot(
        [REFERENCE_RTT_MS],
        [100 * REFERENCE_LOSS],
        "o",
        color="#d62728",
        markersize=9,
        zorder=5,
        label="2025 APN pre-test, Tokyo–Fukuoka: 15 ms → 12 %",
    )
    names = topology.region_names()
    home = "tokyo" if "tokyo" in names else names[0]
    with_gpus = {name for name, gpus in topology.gpus_by_region().items() if gpus > 0}
    points = []
    for name in names:
        link = latency.link(home, name, 0.0)
        if name != home and name in with_gpus and link is not None and link.rtt_ms <= limit:
            points.append((link.rtt_ms, 100 * reference_loss(link.rtt_ms), name))
    points.sort()
    axes.plot(
        [point[0] for point in points],
        [point[1] for point in points],
        "s",
        color="#ff7f0e",
        markersize=5,
        zorder=4,
        label=f"regions with GPUs, seen from {home}",
    )
    labelled = {name for _, _, name in points} if len(points) <= 8 else set(_LOSS_LABELS)
    shown = [point for point in points if point[2] in labelled]
    for index, (rtt, loss, name) in enumerate(shown):
        # Alternate sides so that neighbours on the curve do not print over each other.
        above = index % 2 == 0
        axes.annotate(
            name,
            (rtt, loss),
            textcoords="offset points",
            xytext=(-10, 12) if above else (10, -16),
            ha="right" if above else "left",
            fontsize=8,
            color="#7f3f00",
            arrowprops={"arrowstyle": "-", "color": "#c08050", "linewidth": 0.6},
        )
    axes.set_xlim(0, limit)
    axes.set_ylim(0, 100 * reference_loss(limit) * 1.08)
    axes.set_xlabel("RTT between compute and data (ms)")
    axes.set_ylabel("predicted throughput loss (%)")
    axes.set_title("Throughput lost to distance from the data")
    axes.grid(alpha=0.25)
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _colours(names: Sequence[str], cmap: str = "tab10") -> dict[str, Any]:
    plt = _pyplot()
    palette = plt.get_cmap(cmap)
    return {name: palette(index % palette.N) for index, name in enumerate(names)}


def jct_distribution(plt: Any, path: Path, results: Mapping[str, SimulationResult]) -> Path:
    figure, axes = plt.subplots(figsize=(7.5, 4.6))
    colours = _colours(list(results))
    for name, result in results.items():
        hours = sorted(o.jct_seconds / 3600 for o in result.outcomes)
        if not hours:
            continue
        fractions = [(index + 1) / len(hours) for index in range(len(hours))]
        mean = sum(hours) / len(hours)
        highlight = name == _HIGHLIGHT
        axes.step(
            hours,
            fractions,
            where="post",
            color=colours[name],
            linewidth=2.6 if highlight else 1.3,
            alpha=1.0 if highlight else 0.85,
            linestyle="-" if name.startswith("tsunagu") or name == "optimal" else "--",
            label=f"{name}  (mean {mean:.1f} h)",
        )
    axes.set_xscale("log")
    axes.set_xlabel("job completion time, arrival to finish (hours, log scale)")
    axes.set_ylabel("fraction of jobs finished within")
    axes.set_ylim(0, 1.01)
    axes.set_title("Job completion time per policy (further left is better)")
    axes.grid(alpha=0.25, which="both")
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def gpu_use_over_time(
    plt: Any, path: Path, topology: Topology, results: Mapping[str, SimulationResult]
) -> Path:
    shown = [name for name in (_HIGHLIGHT, "home-only") if name in results] or list(results)[:1]
    capacity = topology.gpus_by_region()
    held: dict[str, float] = {}
    for name in shown:
        for outcome in results[name].outcomes:
            held[outcome.region] = (
                held.get(outcome.region, 0.0) + outcome.gpus * outcome.run_seconds
            )
    top = sorted(held, key=lambda region: -held[region])[:7]
    groups = [*top, "other regions"] if len(held) > len(top) else top
    colours = _colours(groups, "tab10")
    end = max((o.end_seconds for name in shown for o in results[name].outcomes), default=1.0)
    grid = [end * step / 600 for step in range(601)]
    figure, rows = plt.subplots(
        len(shown),
        1,
        figsize=(8.5, 2.9 * len(shown) + 0.6),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for axes, name in zip([row[0] for row in rows], shown, strict=True):
        series = gpu_use_by_region(results[name])
        stacks = []
        for group in groups:
            members = [group] if group in top else [r for r in series if r not in top]
            sampled = [_sample(series.get(region, []), grid) for region in members]
            stacks.append([sum(column) for column in zip(*sampled, strict=True)] or [0] * len(grid))
        hours = [t / 3600 for t in grid]
        axes.stackplot(
            hours,
            stacks,
            labels=groups,
            colors=[colours[g] for g in groups],
            alpha=0.9,
            step="post",
        )
        axes.axhline(topology.total_gpus(), color="black", linewidth=0.8, linestyle=":")
        axes.set_title(f"{name}: GPUs in use per region", loc="left", fontsize=9)
        axes.set_ylabel("GPUs")
        axes.grid(alpha=0.2)
    rows[-1][0].set_xlabel("simulated time (hours)")
    handles, labels = rows[0][0].get_legend_handles_labels()
    caps = [f"{g} ({capacity[g]})" if g in capacity else g for g in labels]
    figure.legend(
        handles,
        caps,
        loc="upper center",
        ncol=min(4, len(groups)),
        fontsize=8,
        frameon=False,
        title="region (GPUs it has); dotted line: all GPUs",
    )
    figure.tight_layout(rect=(0, 0, 1, 0.86 if len(shown) > 1 else 0.8))
    figure.savefig(path)
    plt.close(figure)
    return path


def _sample(points: Sequence[tuple[float, int]], grid: Sequence[float]) -> list[int]:
    """The step function (time, level from then on) read at each grid time."""
    times = [time for time, _ in points]
    values = []
    for when in grid:
        index = bisect.bisect_right(times, when)
        values.append(points[index - 1][1] if index else 0)
    return values
