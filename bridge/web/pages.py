"""The web UI: server-rendered pages over the same routes' data; forms, no scripts.

Pages: the runs list (filters, paging), a run (its graph, nodes, errors,
timeline, context and actions), the DLQ (replay), and the login form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from bridge.errors import DeadLetterError
from bridge.web.auth import COOKIE, Auth
from bridge.web.dag import layout

__all__ = ["add_pages"]

_env = Environment(
    loader=PackageLoader("bridge.web", "templates"), autoescape=select_autoescape(["html"])
)
STATUSES = ("pending", "running", "waiting", "paused", "completed", "failed", "cancelled")
PAGE = 25


def _html(name: str, code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**context), status_code=code)


def add_pages(
    app: FastAPI,
    services: Any,
    auth: Auth,
    *,
    page_user: Callable[[Request], None],
    act: Callable[[str, str, dict[str, Any]], dict[str, Any]],
) -> None:
    """Add the pages to ``app`` (``act`` is the JSON API's action, shared)."""
    guarded = [Depends(page_user)]

    @app.get("/login", include_in_schema=False)
    def login_form() -> HTMLResponse:
        return _html("login.html", basic=auth.settings.user is not None)

    @app.post("/login", include_in_schema=False)
    def login(token: str = Form(""), user: str = Form(""), password: str = Form("")) -> Response:
        session = auth.session(token=token, user=user, password=password)
        if session is None:
            return _html("login.html", 401, basic=auth.settings.user is not None, wrong=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict")
        return response

    @app.get("/", include_in_schema=False, dependencies=guarded)
    def runs_page(
        status: str | None = None, blueprint: str | None = None, page: int = 0
    ) -> HTMLResponse:
        found = services.queries.runs(
            status=status or None,
            blueprint=blueprint or None,
            limit=PAGE + 1,
            offset=page * PAGE,
        )
        return _html(
            "runs.html",
            runs=found[:PAGE],
            more=len(found) > PAGE,
            page=page,
            status=status or "",
            blueprint=blueprint or "",
            statuses=STATUSES,
        )

    @app.get("/runs/{run_id}", include_in_schema=False, dependencies=guarded)
    def run_page(run_id: str, message: str = "") -> HTMLResponse:
        view = services.queries.run(run_id)
        if view is None:
            return _html("missing.html", 404, what=f"run {run_id}")
        record = services.queries.record(run_id)
        graph = layout(record.snapshot if record else {}, view["nodes"])
        return _html(
            "run.html",
            run=view,
            graph=graph,
            timeline=services.queries.timeline(run_id),
            context=services.queries.context(run_id),
            node_ids=[b["id"] for b in graph.boxes] if graph else list(view["nodes"]),
            message=message,
        )

    @app.post("/runs/{run_id}/actions/{action}", include_in_schema=False, dependencies=guarded)
    def run_action(
        run_id: str,
        action: str,
        node: str = Form(""),
        name: str = Form(""),
        reason: str = Form(""),
    ) -> Response:
        body: dict[str, Any] = {"from": [node] if node else [], "name": name}
        if reason:
            body["reason"] = reason
        try:
            act(run_id, action, body)
            message = f"{action} requested"
        except HTTPException as exc:
            message = f"{action} refused: {exc.detail}"
        return RedirectResponse(f"/runs/{run_id}?message={message}", status_code=303)

    @app.get("/dlq", include_in_schema=False, dependencies=guarded)
    def dlq_page(message: str = "") -> HTMLResponse:
        return _html("dlq.html", letters=services.dlq.read(), message=message)

    @app.post("/dlq/replay", include_in_schema=False, dependencies=guarded)
    def dlq_replay(ref: str = Form("")) -> Response:
        try:
            pool = services.dlq.read()
            chosen = [services.dlq.find(ref, pool)] if ref else pool
            done = services.dlq.replay(chosen)
            message = f"replayed {', '.join(d.ref for d in done) or 'nothing'}"
        except DeadLetterError as exc:
            message = f"replay refused: {exc}"
        return RedirectResponse(f"/dlq?message={message}", status_code=303)
