"""Start-up and clean-up: the operator is built, listed and started once Kopf runs, and stopped
with it. The client, checked before Kopf started (`commands/run.py`), and the health server
come through the memo."""

from __future__ import annotations

from typing import Any

import kopf

from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.settings import OperatorSettings
from tsunagu.controller.startup.health import HealthServer
from tsunagu.controller.startup.kopf_settings import configure
from tsunagu.controller.startup.operator import Operator


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_settings: OperatorSettings = memo.settings
    configure(settings, operator_settings)
    client: Kube = memo.client
    operator = Operator(operator_settings, client)
    await operator.list_everything()
    memo.operator = operator  # from here on, watch events reach it
    await operator.start()
    health: HealthServer | None = getattr(memo, "health", None)
    if health is not None:
        health.operator = operator


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    operator: Operator | None = getattr(memo, "operator", None)
    if operator is not None:
        await operator.stop()


def running(memo: kopf.Memo) -> Operator | None:
    """The operator, once started: events that arrive during start-up are covered by its lists."""
    return getattr(memo, "operator", None)
