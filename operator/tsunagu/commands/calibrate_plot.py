"""The figure of `tsunagu calibrate --plot`: samples, the fitted curve and the reference curve.

matplotlib (the `sim` extra) is imported only when a plot is asked for, with the Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence

from tsunagu.api.profiles import ThroughputSample
from tsunagu.placement.calibration import Calibration
from tsunagu.placement.throughput import reference_loss


def plot(path: str, samples: Sequence[ThroughputSample], result: Calibration) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ignored = {entry.index for entry in result.ignored}
    points = [
        (s.rtt_ms, 100 * (1 - s.throughput / (s.baseline or result.baseline or 1)))
        for index, s in enumerate(samples)
        if index not in ignored and (s.baseline or result.baseline)
    ]
    top = max([rtt for rtt, _ in points] + [20.0]) * 1.1
    grid = [top * i / 200 for i in range(201)]
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    axes.scatter([p[0] for p in points], [p[1] for p in points], s=14, label="samples", zorder=3)
    axes.plot(
        grid,
        [100 * reference_loss(r) for r in grid],
        "--",
        color="grey",
        label="reference curve (15 ms → 12 %)",
    )
    if result.fitted is not None:
        state = "trusted" if result.trusted else "not trusted"
        axes.plot(
            grid,
            [100 * result.fitted.loss(r) for r in grid],
            color="C3",
            label=f"fitted {result.fitted.model.kind.value} ({state})",
        )
    axes.set_xlabel("RTT to the data (ms)")
    axes.set_ylabel("throughput loss (%)")
    axes.set_title(f"calibration {result.workload_class}".strip())
    axes.legend(frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
