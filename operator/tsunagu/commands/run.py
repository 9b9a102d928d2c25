"""`tsunagu run`: start the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging

from tsunagu.controller.config import add_arguments as add_operator_arguments
from tsunagu.controller.config import from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_operator_arguments(parser)


def execute(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    import tsunagu.controller.handlers  # noqa: F401 - registers the Kopf handlers

    config = from_args(args)
    kopf.configure(
        verbose=config.verbose,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    if config.metrics_port:
        start_http_server(config.metrics_port)
    liveness = f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None
    logging.getLogger("tsunagu").setLevel(logging.DEBUG if config.verbose else logging.INFO)
    if not config.verbose:
        # "Handler succeeded" for every watch event would drown what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        asyncio.run(
            kopf.operator(
                standalone=True,
                clusterwide=not config.namespaces,
                namespaces=list(config.namespaces),
                liveness_endpoint=liveness,
                memo=kopf.Memo(config=config),
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0
