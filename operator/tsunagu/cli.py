"""The `tsunagu` command: run | plan | simulate | probe | calibrate.

Each subcommand lives in `tsunagu.commands.<name>` and exposes `add_arguments(parser)` and
`execute(args) -> int`; it is imported only when chosen, so `tsunagu plan` never loads Kopf.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "run": "start the operator",
    "plan": "plan TrainingJobs offline from YAML files (no cluster needed)",
    "simulate": "replay a workload trace through tsunagu and baseline policies",
    "probe": "run the inter-region latency probe exporter",
    "calibrate": "fit a workload's sensitivity to RTT from a CSV of observed throughput",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="tsunagu", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, help_text in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(f"tsunagu.commands.{name}").add_arguments(sub)
    args = parser.parse_args(argv)
    module = importlib.import_module(f"tsunagu.commands.{args.command}")
    return int(module.execute(args))


if __name__ == "__main__":
    raise SystemExit(main())
