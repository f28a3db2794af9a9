"""kafka-python's slow-task warnings, shown only at DEBUG.

kafka-python 3 warns "Task ... ran for 0.1xs ... It is blocking the event loop"
whenever one step of its network tasks takes over 100 ms. In the bridge that
happens when the host is busy or another thread holds the GIL (the outbox
relay, a Celery publish); it says nothing about flowbridge's or the broker's
health, and on a 2-core dev machine it fills the log. Every other kafka-python
warning is kept.
"""

from __future__ import annotations

import logging

__all__ = ["quiet_slow_task_warnings"]

#: The logger kafka-python's network selector warns through.
SELECTOR_LOGGER = "kafka.net.selector"


class _SlowTaskFilter(logging.Filter):
    """Drop the slow-task warning unless kafka-python's logging is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and "blocking the event loop" in record.getMessage():
            return logging.getLogger("kafka").isEnabledFor(logging.DEBUG)
        return True


_FILTER = _SlowTaskFilter()


def quiet_slow_task_warnings() -> None:
    """Install the filter (idempotent): called wherever a Kafka client is configured."""
    logger = logging.getLogger(SELECTOR_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
