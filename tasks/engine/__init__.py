"""The blueprint interpreter: node attempts, the graph moving forward, a run's lifecycle.

Layout (each module one role): ``attempt`` (claim, call, classify, commit one
node attempt), ``outcome`` (calling a node function and what it produced),
``failure`` (retries, fallbacks, tolerated failures), ``graph`` (successors,
joins, finishing a run), ``lifecycle`` (start, cancel, events, resumes, the
chord body), ``operate`` (an operator's pause, resume and retry), ``routing``
(which edges a result takes), ``inputs`` (a node's input, outputs by id, the
scope of expressions), ``calls`` (what a built-in may do), ``children``
(subflow child runs), ``batch`` (scatter items and gathers), ``shapes`` (join
decisions, chord regions, losers), ``scope`` (the run and attempt in hand). The engine
reaches Celery and Redis only through ``tasks.port.TaskPort``.
"""

from tasks.engine.attempt import execute_node
from tasks.engine.graph import settle_stalled
from tasks.engine.lifecycle import (
    cancel_run,
    deliver_event,
    fire_from_chord,
    resume_node,
    start_run,
)
from tasks.engine.operate import dispatch_pending, pause_run, resume_run, retry_run
from tasks.engine.scope import InlineBudget, RunScope, Step

__all__ = [
    "InlineBudget",
    "RunScope",
    "Step",
    "cancel_run",
    "deliver_event",
    "dispatch_pending",
    "execute_node",
    "fire_from_chord",
    "pause_run",
    "resume_node",
    "resume_run",
    "retry_run",
    "settle_stalled",
    "start_run",
]
