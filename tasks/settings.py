"""Settings of workers, beat and the engine: typed, frozen, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from state.errors import ConfigError
from state.url import state_url_from_env

__all__ = ["Settings", "env_float", "env_int", "topic_name"]


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    """Read an integer setting, naming the variable when it is malformed."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    """Read a number setting (seconds and the like), naming the variable when it is malformed."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


#: FLOWBRIDGE_REDIS_SSL_CERT_REQS values, as redis-py and Celery name them.
SSL_CERT_REQS = ("none", "optional", "required")


def _ssl_cert_reqs(env: Mapping[str, str], redis_url: str) -> str | None:
    if not redis_url.startswith("rediss://") or "ssl_cert_reqs=" in redis_url:
        return None
    raw = env.get("FLOWBRIDGE_REDIS_SSL_CERT_REQS", "").strip().lower() or "none"
    value = raw.removeprefix("cert_")
    if value not in SSL_CERT_REQS:
        raise ConfigError(
            f"FLOWBRIDGE_REDIS_SSL_CERT_REQS={raw!r}: use one of {', '.join(SSL_CERT_REQS)}"
        )
    return value


def topic_name(prefix: str, name: str) -> str:
    """Full name of one of flowbridge's topics (``jobs``, ``events``, ``runs``, ``dlq``)."""
    return f"{prefix}flowbridge.{name}"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What every flowbridge process needs besides Kafka (the bridge adds its own)."""

    #: REDIS_URL: Celery broker, result backend, locks and outbox hints.
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: FLOWBRIDGE_REDIS_PREFIX: prepended to every Redis key (Celery's and ours).
    redis_prefix: str = ""
    #: FLOWBRIDGE_REDIS_SSL_CERT_REQS: ``none``, ``optional`` or ``required``, for a ``rediss://``
    #: REDIS_URL without ``ssl_cert_reqs`` in it; ``none`` by default, since Heroku Redis
    #: serves self-signed certificates (None: not TLS, or the URL says).
    redis_ssl_cert_reqs: str | None = None
    #: FLOWBRIDGE_STATE_URL (or SCYLLA_HOSTS/SCYLLA_KEYSPACE): where run state lives.
    state_url: str = "sqlite:///flowbridge.db"
    #: FLOWBRIDGE_SHARDS: number of ``flowbridge.shard.<n>`` queues; change only after a drain.
    shards: int = 8
    #: FLOWBRIDGE_APP: modules imported at start; they register nodes and blueprints.
    app_modules: tuple[str, ...] = ()
    #: FLOWBRIDGE_BLUEPRINTS: directories of blueprint ``*.json``/``*.yaml`` files, separated
    #: by ``os.pathsep`` (``:`` on Linux and macOS) like PYTHONPATH.
    blueprint_dirs: tuple[str, ...] = ()
    #: FLOWBRIDGE_TOPIC_PREFIX (or Heroku's KAFKA_PREFIX): prefix of topic and group names.
    topic_prefix: str = ""
    #: FLOWBRIDGE_MAX_DELIVERIES: deliveries of one attempt before the node fails.
    max_deliveries: int = 3
    #: FLOWBRIDGE_MISSING_NODE_S: a node whose ``uses`` the worker that got it has not
    #: registered is requeued this long (another worker may have it), then fails.
    missing_node_s: float = 60.0
    #: FLOWBRIDGE_VISIBILITY_TIMEOUT_S: Redis redelivers unacked tasks after this long.
    visibility_timeout_s: float = 600.0
    #: FLOWBRIDGE_UNACKED_RESTORE_S: how often workers sweep for tasks a dead worker left
    #: unacknowledged (None: kombu's default, ~100 s); they return after the visibility timeout.
    unacked_restore_s: float | None = None
    #: FLOWBRIDGE_PREFETCH: Celery's worker_prefetch_multiplier.
    prefetch: int = 4
    #: FLOWBRIDGE_METRICS_PORT: where a worker or the bridge serves Prometheus ``/metrics``
    #: (0: not served).
    metrics_port: int = 0
    #: FLOWBRIDGE_SOFT_SHUTDOWN_S: on SIGTERM/SIGQUIT, running tasks get this long to finish.
    soft_shutdown_s: float = 20.0
    #: FLOWBRIDGE_RECONCILE_INTERVAL_S: how often beat runs the reconciler.
    reconcile_interval_s: float = 30.0
    #: FLOWBRIDGE_STALLED_AFTER_S: a run with no progress for this long is stalled.
    stalled_after_s: float = 300.0
    #: FLOWBRIDGE_LEASE_S: a running node attempt's lease, renewed every third of it by its
    #: worker; the reconciler takes a node over only once its lease expired (0: no leases).
    lease_s: float = 30.0
    #: FLOWBRIDGE_DISPATCH_DEADLINE_S: a node task that left its queue this long ago without
    #: reaching a live worker is re-dispatched; beat runs that check this often (0: never).
    dispatch_deadline_s: float = 5.0
    #: FLOWBRIDGE_RETENTION_DAYS: finished runs are kept this long.
    retention_days: float = 30.0
    #: FLOWBRIDGE_CLOCK_OFFSET_S: added to the wall clock (for tests and drills of long timers).
    clock_offset_s: float = 0.0
    #: FLOWBRIDGE_ACTIVATION_CPU_S: how long one activation of workflow code may run.
    activation_cpu_s: float = 10.0
    #: FLOWBRIDGE_KW_WORKFLOW: the workflow a kafka-workflow ``new:`` message starts.
    kw_workflow: str | None = None
    #: FLOWBRIDGE_KW_RESUME_TOPIC: kafka-workflow's resume topic, consumed beside the events.
    kw_resume_topic: str = "workflow-resume"
    #: FLOWBRIDGE_KW_RESULT_TOPIC: where a run started by ``new:`` sends ``JSON(result)``
    #: (kafka-workflow's ``workflow-result``); ``off`` sends nothing.
    kw_result_topic: str | None = "workflow-result"
    #: FLOWBRIDGE_KW_ERROR_TOPIC: where it sends ``JSON(str(error))`` (``workflow-error``).
    kw_error_topic: str | None = "workflow-error"
    #: FLOWBRIDGE_WEBHOOK_BASE_URL: where the HTTP API that receives webhook calls is reached
    #: from outside; a ``webhook`` node's URL is ``<this>/webhooks/<run id>/<node id>``.
    webhook_base_url: str = "http://localhost:8000"
    #: FLOWBRIDGE_WEBHOOK_SECRET: signs webhook URLs (``?sig=``), the only credential a caller
    #: needs; None: unsigned URLs, and the web process asks for its own credentials instead.
    webhook_secret: str | None = field(default=None, repr=False)
    #: The environment these were read from, for backends that take extra options.
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default: ``os.environ``), once."""
        env = dict(os.environ if env is None else env)
        shards = env_int(env, "FLOWBRIDGE_SHARDS", 8, minimum=1)
        modules = tuple(m.strip() for m in env.get("FLOWBRIDGE_APP", "").split(",") if m.strip())
        dirs = env.get("FLOWBRIDGE_BLUEPRINTS", "").split(os.pathsep)
        prefix = env.get("FLOWBRIDGE_TOPIC_PREFIX", env.get("KAFKA_PREFIX", ""))
        redis_url = env.get("REDIS_URL", "").strip() or cls.redis_url
        return cls(
            redis_url=redis_url,
            redis_ssl_cert_reqs=_ssl_cert_reqs(env, redis_url),
            redis_prefix=env.get("FLOWBRIDGE_REDIS_PREFIX", ""),
            state_url=state_url_from_env(env),
            shards=shards,
            app_modules=modules,
            blueprint_dirs=tuple(d.strip() for d in dirs if d.strip()),
            topic_prefix=prefix,
            max_deliveries=env_int(env, "FLOWBRIDGE_MAX_DELIVERIES", 3, minimum=1),
            missing_node_s=env_float(env, "FLOWBRIDGE_MISSING_NODE_S", 60.0),
            visibility_timeout_s=env_float(
                env, "FLOWBRIDGE_VISIBILITY_TIMEOUT_S", 600.0, minimum=1.0
            ),
            prefetch=env_int(env, "FLOWBRIDGE_PREFETCH", 4, minimum=1),
            metrics_port=env_int(env, "FLOWBRIDGE_METRICS_PORT", 0),
            unacked_restore_s=(
                env_float(env, "FLOWBRIDGE_UNACKED_RESTORE_S", 0.0, minimum=1.0)
                if env.get("FLOWBRIDGE_UNACKED_RESTORE_S", "").strip()
                else None
            ),
            soft_shutdown_s=env_float(env, "FLOWBRIDGE_SOFT_SHUTDOWN_S", 20.0),
            reconcile_interval_s=env_float(
                env, "FLOWBRIDGE_RECONCILE_INTERVAL_S", 30.0, minimum=0.1
            ),
            stalled_after_s=env_float(env, "FLOWBRIDGE_STALLED_AFTER_S", 300.0, minimum=0.1),
            lease_s=env_float(env, "FLOWBRIDGE_LEASE_S", 30.0),
            dispatch_deadline_s=env_float(env, "FLOWBRIDGE_DISPATCH_DEADLINE_S", 5.0),
            retention_days=env_float(env, "FLOWBRIDGE_RETENTION_DAYS", 30.0, minimum=0.0),
            clock_offset_s=env_float(env, "FLOWBRIDGE_CLOCK_OFFSET_S", 0.0, minimum=-float("inf")),
            activation_cpu_s=env_float(env, "FLOWBRIDGE_ACTIVATION_CPU_S", 10.0, minimum=0.1),
            kw_workflow=env.get("FLOWBRIDGE_KW_WORKFLOW", "").strip() or None,
            kw_resume_topic=env.get("FLOWBRIDGE_KW_RESUME_TOPIC", "").strip() or "workflow-resume",
            kw_result_topic=_kw_topic(env, "FLOWBRIDGE_KW_RESULT_TOPIC", "workflow-result"),
            kw_error_topic=_kw_topic(env, "FLOWBRIDGE_KW_ERROR_TOPIC", "workflow-error"),
            webhook_base_url=env.get("FLOWBRIDGE_WEBHOOK_BASE_URL", "").strip()
            or cls.webhook_base_url,
            webhook_secret=env.get("FLOWBRIDGE_WEBHOOK_SECRET", "").strip() or None,
            env=env,
        )

    @property
    def max_delay_s(self) -> float:
        """Longest node timeout or retry delay: below half of Redis's visibility timeout."""
        return self.visibility_timeout_s / 2

    def topic(self, name: str) -> str:
        """Full name of one of flowbridge's topics."""
        return topic_name(self.topic_prefix, name)


def _kw_topic(env: Mapping[str, str], name: str, default: str) -> str | None:
    """A kafka-workflow output topic: unset is its default name, ``off`` is none."""
    value = env.get(name, "").strip()
    if value.lower() == "off":
        return None
    return value or default
