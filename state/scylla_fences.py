"""Fences and stall claims on Scylla: compare-and-set writes on the run row.

Both are LWTs on the run row conditional on its last LWT token (``lwt_op``) as
read: the caller reads the row (at SERIAL), decides, and the write applies
only if no conditional write came in between; otherwise it reads again and
decides again.

- ``fence`` is written only by LWT: ``advance_fence`` reads ``f`` and writes
  ``f + 1`` if the token is unchanged, so two callers never get the same fence.
- A stall is identified by the run's last progress as the reconciler saw it
  (``stalled_since`` = ``max(status_at, progress_at)``). ``progress_at`` is a
  plain column, so it cannot be part of an LWT condition; ``reconciled_at`` is
  an LWT column and is what the claim writes: a stall is claimed once
  ``reconciled_at > stalled_since``. The claim then records progress (a plain
  ``progress_at`` write among its effects), so the run's next stall starts
  from the claim. Between the LWT and that write, a second reconciler still
  sees the old progress, but the SERIAL read shows ``reconciled_at`` past it.
"""

from __future__ import annotations

from collections.abc import Sequence

from state.constants import RUN_ACTIVE
from state.errors import StateError
from state.models import OutboxMessage
from state.scylla_effects import RUN_CAS_ROUNDS, EffectsMixin, backoff
from state.scylla_rows import _check_fence, bucket_of
from state.scylla_schema import Effects, IndexMove

__all__ = ["FencesMixin"]


class FencesMixin(EffectsMixin):
    """``advance_fence`` and ``mark_reconciled``."""

    def advance_fence(self, run_id: str) -> int:
        """Advance the run's fence by one (compare-and-set) and return it; 0 for no run."""
        row = self._run_row(run_id)
        for round_ in range(RUN_CAS_ROUNDS):
            if row is None:
                return 0
            fence = (row.get("fence") or 0) + 1
            at, ts = self._now()
            if self._cas_run(row, Effects(at=at, ts=ts), fence=fence):
                return fence
            backoff(round_)
            row = self._run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: advancing its fence lost {RUN_CAS_ROUNDS} races")

    def mark_reconciled(
        self,
        run_id: str,
        *,
        stalled_since: float,
        fence: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Claim one stall of the run with the jobs it re-emits, once (see the module doc)."""
        row = self._run_row(run_id, serial=True)
        for round_ in range(RUN_CAS_ROUNDS):
            if row is None:
                return False
            _check_fence(run_id, row.get("fence"), fence)
            if row["status"] not in RUN_ACTIVE:
                return False
            progress = max(row.get("status_at") or 0.0, row.get("progress_at") or 0.0)
            if progress != stalled_since or (row.get("reconciled_at") or 0.0) > stalled_since:
                return False  # progress since, or this stall was claimed already
            at, ts = self._now()
            eff = Effects(
                at=at,
                ts=ts,
                history=(self._event("run.reconciled", None, {"jobs": len(outbox)}),),
                outbox=self._stamp(outbox, at),
                # The claim is progress: progress_at and the index hint move to now.
                index=IndexMove(
                    status=row["status"],
                    bucket=bucket_of(at),
                    old_status=row["status"],
                    old_bucket=row.get("bucket"),
                ),
            )
            if self._cas_run(row, eff, reconciled_at=at):
                return True
            backoff(round_)
            row = self._run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: claiming its stall lost {RUN_CAS_ROUNDS} races")
