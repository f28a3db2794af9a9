"""The FastAPI application: the JSON API (``/api``), webhooks, pages, ``/healthz``, ``/metrics``.

Reads go through ``Queries``, actions through ``Commands`` (checked first, as the
CLI checks them) and ``DeadLetters``. Errors are JSON: ``{"detail": "..."}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from bridge.api import Commands, DeadLetters, Queries
from bridge.errors import DeadLetterError, RunStateError
from bridge.web.auth import COOKIE, Auth
from bridge.web.metrics import WebMetrics
from bridge.web.settings import WebSettings
from bridge.web.webhooks import WebhookSettings, add_webhooks

__all__ = ["Services", "create_app"]


@dataclass
class Services:
    """What the routes use: the two halves of ``bridge.api`` and the DLQ."""

    queries: Queries
    commands: Commands
    dlq: DeadLetters


class _LoginRequired(Exception):
    """A page asked for without credentials: go to the login form."""


def create_app(
    services: Services, settings: WebSettings, webhooks: WebhookSettings | None = None
) -> FastAPI:
    """The application over ``services``, guarded as ``settings`` (and ``webhooks``) say."""
    from bridge.web.pages import add_pages

    auth = Auth(settings)
    metrics = WebMetrics()
    app = FastAPI(
        title="flowbridge",
        summary=(
            "Runs, their history and the DLQ; retry, pause, resume, cancel, signal, replay; "
            "webhook calls."
        ),
        version="1",
    )
    app.state.services = services
    app.state.auth = auth

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        metrics.request(request.method, getattr(route, "path", "other"), response.status_code)
        return response

    @app.exception_handler(_LoginRequired)
    async def to_login(request: Request, exc: _LoginRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    def api_user(request: Request) -> None:
        if not auth.allows(request.headers.get("authorization"), request.cookies.get(COOKIE)):
            raise HTTPException(
                401, "authentication required", headers={"WWW-Authenticate": "Bearer"}
            )

    def page_user(request: Request) -> None:
        if not auth.allows(request.headers.get("authorization"), request.cookies.get(COOKIE)):
            raise _LoginRequired

    def refused(exc: RunStateError | DeadLetterError) -> HTTPException:
        status = 404 if isinstance(exc, RunStateError) and exc.status is None else 409
        return HTTPException(status, str(exc))

    @app.get("/healthz", tags=["process"])
    def healthz() -> dict[str, Any]:
        """The store answers: ``{"ok": true}`` (503 otherwise)."""
        try:
            services.queries.runs(limit=1)
        except Exception as exc:
            raise HTTPException(503, f"state store unavailable: {type(exc).__name__}") from None
        return {"ok": True}

    @app.get("/metrics", tags=["process"], include_in_schema=False)
    def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    guarded = [Depends(api_user)]

    @app.get("/api/runs", tags=["runs"], dependencies=guarded)
    def runs(
        status: str | None = None,
        blueprint: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        """Runs, newest first, with filters and paging."""
        found = services.queries.runs(
            status=status, blueprint=blueprint, limit=limit + 1, offset=offset
        )
        return {"runs": found[:limit], "offset": offset, "more": len(found) > limit}

    @app.get("/api/runs/{run_id}", tags=["runs"], dependencies=guarded)
    def run(run_id: str) -> dict[str, Any]:
        """One run as JSON (its nodes; a waiting node's event and due time)."""
        view = services.queries.run(run_id)
        if view is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return view

    @app.get("/api/runs/{run_id}/timeline", tags=["runs"], dependencies=guarded)
    def timeline(run_id: str) -> list[dict[str, Any]]:
        """The run's timeline: time, node, event, attempt, error."""
        return services.queries.timeline(run_id)

    @app.get("/api/runs/{run_id}/context", tags=["runs"], dependencies=guarded)
    def context(run_id: str) -> dict[str, Any]:
        """The run's context."""
        return services.queries.context(run_id)

    def act(run_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        c = services.commands
        try:
            if action == "cancel":
                c.cancel(run_id, body.get("reason"), check=True)
            elif action == "pause":
                c.pause(run_id, check=True)
            elif action == "resume":
                c.unpause(run_id, check=True)
            elif action == "retry":
                c.retry(run_id, [str(n) for n in body.get("from") or []], check=True)
            elif action == "signal":
                if not isinstance(body.get("name"), str) or not body["name"]:
                    raise HTTPException(422, "a signal needs a 'name'")
                c.signal(run_id, body["name"], body.get("payload"), check=True)
            else:
                raise HTTPException(404, f"no action {action!r}")
        except RunStateError as exc:
            raise refused(exc) from None
        return {"run_id": run_id, action: "requested"}

    @app.post("/api/runs/{run_id}/{action}", tags=["actions"], dependencies=guarded)
    def action(
        run_id: str, action: str, body: dict[str, Any] = Body(default_factory=dict)
    ) -> dict[str, Any]:
        """Act on a run: ``cancel``, ``pause``, ``resume``, ``retry`` or ``signal``.

        Bodies: ``cancel`` ``{"reason"}``; ``retry`` ``{"from": [node ids]}`` (default: its
        failed nodes); ``signal`` ``{"name", "payload"}``. 404: no such run; 409: not now.
        """
        return act(run_id, action, body)

    @app.get("/api/dlq", tags=["dlq"], dependencies=guarded)
    def dlq(reason: str | None = None) -> list[dict[str, Any]]:
        """Dead-lettered records, oldest first."""
        return [d.json() for d in services.dlq.read(reason=reason)]

    @app.post("/api/dlq/replay", tags=["dlq"], dependencies=guarded)
    def replay(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        """Replay ``{"refs": ["P:N", ...]}`` or ``{"all": true}`` (``"dry_run"`` to look)."""
        try:
            pool = services.dlq.read()
            chosen = (
                pool
                if body.get("all")
                else [services.dlq.find(str(r), pool) for r in body.get("refs") or []]
            )
            done = services.dlq.replay(chosen, dry_run=bool(body.get("dry_run")))
        except DeadLetterError as exc:
            raise refused(exc) from None
        return {"replayed": [d.ref for d in done], "dry_run": bool(body.get("dry_run"))}

    @app.exception_handler(HTTPException)
    async def json_error(request: Request, exc: HTTPException) -> Response:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    add_webhooks(
        app,
        queries=services.queries,
        commands=services.commands,
        auth=auth,
        settings=webhooks or WebhookSettings(),
    )
    add_pages(app, services, auth, page_user=page_user, act=act)
    return app
