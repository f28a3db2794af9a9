"""Settings of the web process, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from state.errors import ConfigError
from tasks.settings import env_int

__all__ = ["WebSettings"]


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    """Where the web process listens and who may use it."""

    #: PORT: the port to listen on (a PaaS sets it).
    port: int = 8000
    #: FLOWBRIDGE_WEB_HOST: the address to bind (127.0.0.1 when local-only).
    host: str = "0.0.0.0"  # noqa: S104 - a PaaS routes to all interfaces; auth guards it
    #: FLOWBRIDGE_WEB_TOKEN: the bearer token (and login token) that grants access.
    token: str | None = None
    #: FLOWBRIDGE_WEB_USER / FLOWBRIDGE_WEB_PASSWORD: HTTP basic credentials, instead or as well.
    user: str | None = None
    password: str | None = None
    #: FLOWBRIDGE_WEB_LOCAL_ONLY=1: no authentication, bound to 127.0.0.1 only.
    local_only: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebSettings:
        """Read the settings; refuse to run without credentials unless local-only."""
        env = os.environ if env is None else env
        local = env.get("FLOWBRIDGE_WEB_LOCAL_ONLY", "") in ("1", "true", "yes")
        settings = cls(
            port=env_int(env, "PORT", 8000, minimum=1),
            host="127.0.0.1" if local else env.get("FLOWBRIDGE_WEB_HOST", "0.0.0.0"),  # noqa: S104
            token=env.get("FLOWBRIDGE_WEB_TOKEN") or None,
            user=env.get("FLOWBRIDGE_WEB_USER") or None,
            password=env.get("FLOWBRIDGE_WEB_PASSWORD") or None,
            local_only=local,
        )
        if (settings.user is None) != (settings.password is None):
            raise ConfigError(
                "set both FLOWBRIDGE_WEB_USER and FLOWBRIDGE_WEB_PASSWORD, or neither"
            )
        if not local and settings.token is None and settings.user is None:
            raise ConfigError(
                "the web process needs credentials: set FLOWBRIDGE_WEB_TOKEN (a bearer token) "
                "or FLOWBRIDGE_WEB_USER and FLOWBRIDGE_WEB_PASSWORD; or "
                "FLOWBRIDGE_WEB_LOCAL_ONLY=1 to serve 127.0.0.1 without authentication"
            )
        return settings
