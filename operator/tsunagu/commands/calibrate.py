"""`tsunagu calibrate`: fit a workload's sensitivity to RTT from a CSV of observed throughput.

Rows are `rttMs,throughput[,baseline]`; a first row naming the columns is allowed. Prints the
fitted model, its confidence and the trust verdict (docs/throughput.md). Exit status: 0 when the
file parsed (trusted or not), 2 on bad input with one line on stderr naming the row and column.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from tsunagu.api.profiles import ModelKind, ThroughputSample
from tsunagu.placement.calibration import Calibration, CurveFit, calibrate
from tsunagu.placement.throughput import REFERENCE_K, curve_loss, reference_loss

COLUMNS = ("rttMs", "throughput", "baseline")
# (RTT, mean observed loss, fitted loss or None, reference-curve loss)
LossRow = tuple[float, float, float | None, float]


class CsvInputError(ValueError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", required=True, metavar="FILE", help="CSV of samples")
    parser.add_argument(
        "--baseline",
        type=float,
        metavar="X",
        help="throughput next to the data (default: a row's own baseline, else the median of "
        "rows at ≤ 0.5 ms)",
    )
    parser.add_argument("--class", dest="workload_class", default="", help="class name to show")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument("--plot", metavar="PNG", help="draw the samples and the fitted curve")


def read_samples(path: str) -> tuple[list[ThroughputSample], list[int]]:
    """The samples of a CSV file and the row number of each; `CsvInputError` names the row and
    column of bad input."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CsvInputError(f"{path}: cannot be read ({error})") from None
    samples = []
    row_numbers = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0] == COLUMNS[0]:
            continue
        if len(cells) not in (2, 3):
            raise CsvInputError(
                f"{path}: row {number}: has {len(cells)} columns "
                "(needs rttMs,throughput[,baseline])"
            )
        values = [
            _number(path, number, column, cell)
            for column, cell in zip(COLUMNS[: len(cells)], cells, strict=True)
        ]
        baseline = values[2] if len(values) == 3 else None
        samples.append(ThroughputSample(rtt_ms=values[0], throughput=values[1], baseline=baseline))
        row_numbers.append(number)
    if not samples:
        raise CsvInputError(f"{path}: holds no samples")
    return samples, row_numbers


def _number(path: str, row: int, column: str, cell: str) -> float:
    try:
        # NaN and negative numbers parse: calibration ignores them and says so.
        return float(cell)
    except ValueError:
        raise CsvInputError(
            f"{path}: row {row}, column {column}: must be a number (got {cell!r})"
        ) from None


def execute(args: argparse.Namespace) -> int:
    if args.baseline is not None and not (math.isfinite(args.baseline) and args.baseline > 0):
        print("tsunagu calibrate: --baseline: must be a number > 0", file=sys.stderr)
        return 2
    try:
        samples, row_numbers = read_samples(args.file)
    except CsvInputError as error:
        print(f"tsunagu calibrate: {error}", file=sys.stderr)
        return 2
    result = calibrate(samples, args.baseline, args.workload_class)
    rows = loss_by_rtt(samples, result)
    text = (
        as_json(result, rows, row_numbers)
        if args.output == "json"
        else as_table(result, rows, row_numbers)
    )
    print(text)
    if args.plot:
        from tsunagu.commands.calibrate_plot import plot

        plot(args.plot, samples, result)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def loss_by_rtt(samples: Sequence[ThroughputSample], result: Calibration) -> list[LossRow]:
    """(RTT, mean observed loss, fitted loss, reference loss) per distinct RTT of usable rows."""
    ignored = {entry.index for entry in result.ignored}
    by_rtt: dict[float, list[float]] = {}
    for index, sample in enumerate(samples):
        baseline = sample.baseline or result.baseline
        if index in ignored or baseline is None:
            continue
        by_rtt.setdefault(round(sample.rtt_ms, 3), []).append(1 - sample.throughput / baseline)
    return [
        (
            rtt,
            sum(losses) / len(losses),
            result.fitted.loss(rtt) if result.fitted else None,
            reference_loss(rtt),
        )
        for rtt, losses in sorted(by_rtt.items())
    ]


def _model_json(fit: CurveFit | None) -> dict[str, object] | None:
    if fit is None:
        return None
    body: dict[str, object] = {"kind": fit.model.kind.value, "k": round(fit.model.k, 8)}
    if fit.model.kind == ModelKind.DataStall:
        body["hiddenRttMs"] = round(fit.model.hidden_rtt_ms, 4)
    body["rmsError"] = round(fit.rms_error, 6)
    return body


def as_json(result: Calibration, rows: Sequence[LossRow], row_numbers: Sequence[int]) -> str:
    fitted = result.fitted
    chosen = None
    if fitted is not None:
        chosen = _model_json(CurveFit(fitted.model, fitted.rms_error))
    body = {
        "workloadClass": result.workload_class,
        "baseline": result.baseline,
        "baselineSource": result.baseline_source,
        "samples": {
            "away": result.used,
            "local": result.local,
            "distinctRtts": result.distinct_rtts,
            "rttSpreadMs": round(result.rtt_spread_ms, 4),
            "ignored": [{"row": row_numbers[e.index], "reason": e.reason} for e in result.ignored],
        },
        "model": chosen,
        "confidence": round(fitted.confidence, 4) if fitted else None,
        "trusted": result.trusted,
        "untrustedBecause": list(result.untrusted_because),
        "fits": {
            "referenceCurve": _model_json(result.reference),
            "dataStall": _model_json(result.stall),
        },
        "lossByRtt": [
            {
                "rttMs": rtt,
                "observed": round(observed, 6),
                "fitted": None if fitted_loss is None else round(fitted_loss, 6),
                "reference": round(reference, 6),
            }
            for rtt, observed, fitted_loss, reference in rows
        ],
    }
    return json.dumps(body, indent=2)


def describe_model(fit: CurveFit) -> str:
    model = fit.model
    text = f"{model.kind.value} k={model.k:.5f}/ms"
    if model.kind == ModelKind.DataStall:
        text += f", hidden RTT {model.hidden_rtt_ms:.1f} ms"
    loss_15 = curve_loss(model.k, model.hidden_rtt_ms, 15.0)
    return (
        f"{text} (loss at 15 ms {loss_15:.1%}; reference curve k={REFERENCE_K:.5f}/ms: "
        f"{reference_loss(15.0):.1%}), rms error {fit.rms_error:.2%}"
    )


def as_table(result: Calibration, rows: Sequence[LossRow], row_numbers: Sequence[int]) -> str:
    fitted = result.fitted
    baseline = "none" if result.baseline is None else f"{result.baseline:.4g}"
    lines = [
        f"class       {result.workload_class or '(unnamed)'}",
        f"samples     {result.used} away from the data at {result.distinct_rtts} distinct RTTs "
        f"(spread {result.rtt_spread_ms:.1f} ms), {result.local} next to it, "
        f"{len(result.ignored)} ignored",
        f"baseline    {baseline} ({result.baseline_source})",
    ]
    if fitted is None:
        lines.append("model       none fitted: the reference curve or dataProfile stays in use")
    else:
        lines.append(f"model       {describe_model(CurveFit(fitted.model, fitted.rms_error))}")
        if result.reference is not None and result.stall is not None:
            lines.append(f"  curve fit  {describe_model(result.reference)}")
            lines.append(f"  stall fit  {describe_model(result.stall)}")
        lines.append(f"confidence  {fitted.confidence:.2f}")
    verdict = "yes" if result.trusted else "no: " + "; ".join(result.untrusted_because)
    lines.append(f"trusted     {verdict}")
    for entry in result.ignored:
        lines.append(f"ignored     row {row_numbers[entry.index]}: {entry.reason}")
    if rows:
        lines += [
            "",
            "   RTT ms  observed    fitted  reference",
            "  -------  --------  --------  ---------",
        ]
        for rtt, observed, fitted_loss, reference in rows:
            shown = "-" if fitted_loss is None else f"{fitted_loss:.1%}"
            lines.append(f"  {rtt:7.2f}  {observed:8.1%}  {shown:>8}  {reference:9.1%}")
    return "\n".join(lines)
