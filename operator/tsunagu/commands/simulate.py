"""`tsunagu simulate`: replay a workload trace through tsunagu and baseline policies.

Exit status: 0 on success, 2 on bad input (one line on stderr naming the file and the field).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from tsunagu.sim.errors import SimInputError
from tsunagu.sim.experiment import Experiment, ExperimentConfig, run_experiment

_TOPOLOGY_HELP = "japan (47 prefectures), small (5 regions) or a YAML FILE (see docs/simulator.md)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topology",
        default="japan",
        metavar="japan|small|FILE",
        help=f"where the GPUs are: {_TOPOLOGY_HELP} (default: japan)",
    )
    parser.add_argument(
        "--trace", metavar="FILE", help="replay this CSV/YAML trace instead of generating one"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic trace (1)")
    parser.add_argument(
        "--jobs",
        type=_positive,
        metavar="N",
        help="number of jobs (synthetic: generate N, default 300 on japan and "
        "files, 8 on small; --trace: the first N)",
    )
    parser.add_argument(
        "--load",
        type=_fraction,
        default=None,
        metavar="X",
        help="synthetic offered load over all GPUs (default 0.5)",
    )
    parser.add_argument(
        "--optimal",
        choices=("auto", "always", "never"),
        default="auto",
        help="run the exhaustive optimal policy: auto = when ≤ 10 jobs and ≤ 6 regions (default)",
    )
    parser.add_argument(
        "--classes",
        choices=("mixed",),
        help="give jobs workload classes with true sensitivities the policies are not told "
        "(mixed: three classes tenfold apart), add the tsunagu-learning policy and count budget "
        "violations in fact",
    )
    parser.add_argument(
        "--loss-budgets",
        type=_budgets,
        metavar="LIST",
        help="synthetic: the maxThroughputLoss values jobs draw from, e.g. none,0.03,0.05,0.10 "
        "(default none,0.10,0.15,0.20)",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument("--plot", metavar="DIR", help="write PNG figures into DIR")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer > 0 (got {text!r})") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be an integer > 0 (got {text!r})")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 10] (got {text!r})") from None
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 10] (got {text!r})")
    return value


def _budgets(text: str) -> tuple[float | None, ...]:
    values: list[float | None] = []
    for item in text.split(","):
        item = item.strip()
        if item.lower() == "none":
            values.append(None)
            continue
        try:
            value = float(item)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 1:
            raise argparse.ArgumentTypeError(f"must be none or numbers in [0, 1] (got {item!r})")
        values.append(value)
    return tuple(values)


def execute(args: argparse.Namespace) -> int:
    config = ExperimentConfig(
        topology=args.topology,
        trace_path=args.trace,
        seed=args.seed,
        jobs=args.jobs,
        load=args.load,
        optimal=args.optimal,
        classes=args.classes,
        loss_budgets=args.loss_budgets,
    )
    started = time.monotonic()
    try:
        experiment = run_experiment(config)
    except SimInputError as error:
        print(f"tsunagu simulate: {error}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - started
    try:
        print(experiment.json() if args.output == "json" else experiment.table(elapsed))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (e.g. `| head`) left early; that is not an error of the simulation.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces a closed stream for exit
    if args.plot:
        _plot(experiment, args.plot)
    return 0


def _plot(experiment: Experiment, directory: str) -> None:
    from tsunagu.sim.plots import write_all

    for path in write_all(directory, experiment.topology, experiment.latency, experiment.results):
        print(f"wrote {path}", file=sys.stderr)
