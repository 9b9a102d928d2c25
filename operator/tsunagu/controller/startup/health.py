"""`/healthz` and `/readyz`, served by the operator itself rather than by Kopf's liveness
endpoint: Kopf's answers 200 as long as its own probes run, which it did through a whole
API-server outage, and it has no notion of readiness. Here

- `/healthz` is 503 until the operator has listed the cluster and started, and again once the
  API server has not answered for longer than `--api-unreachable-seconds` (a replica cut off
  from the API server is of no use, and a restart may land it on a node that reaches it);
- `/readyz` is 200 on the leader, and on a standby whose view is synced (it can take over
  without relisting); the body says which.

The port is bound before anything else starts, so a port in use is a clear start-up error.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from tsunagu.controller.settings import HealthSettings


class Observed(Protocol):
    """What the endpoints ask the operator."""

    @property
    def leading(self) -> bool: ...

    def ready(self) -> bool: ...

    def api_unreachable_for(self) -> float: ...


class HealthServer:
    def __init__(self, settings: HealthSettings) -> None:
        self.settings = settings
        # Set once the operator has started; until then both endpoints say "starting".
        self.operator: Observed | None = None
        self._runner: web.AppRunner | None = None

    async def listen(self, port: int, host: str = "0.0.0.0") -> None:
        """Binds the port (OSError if it is taken) and serves."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def health(self) -> tuple[int, str]:
        operator = self.operator
        if operator is None:
            return 503, "starting"
        silent = operator.api_unreachable_for()
        if silent > self.settings.api_unreachable_seconds:
            return 503, f"the API server has not answered for {silent:.0f} s"
        return 200, "ok"

    def readiness(self) -> tuple[int, str]:
        operator = self.operator
        if operator is None:
            return 503, "starting"
        if operator.leading:
            return 200, "leader"
        if operator.ready():
            return 200, "standby, view synced"
        return 503, "standby, view not synced yet"

    async def _healthz(self, request: web.Request) -> web.Response:
        status, text = self.health()
        return web.Response(status=status, text=text + "\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        status, text = self.readiness()
        return web.Response(status=status, text=text + "\n")
