"""Who may use the web process: a bearer token, HTTP basic, or a session cookie from /login.

The cookie holds a keyed hash of the credentials, never the credentials; it is
``HttpOnly`` and ``SameSite=Strict`` (so another site cannot post a form with
it). Comparisons are constant-time. Local-only mode lets everyone in: it binds
127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from bridge.web.settings import WebSettings

__all__ = ["COOKIE", "Auth"]

COOKIE = "flowbridge_session"


class Auth:
    """Checks the credentials of a request against the web settings."""

    def __init__(self, settings: WebSettings) -> None:
        """Accept what ``settings`` configure."""
        self.settings = settings
        #: Per process: a restart signs everyone out, which is fine for an operator console.
        self._key = secrets.token_bytes(32)

    def _session_for(self, secret: str) -> str:
        return hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()

    def _secrets(self) -> list[str]:
        s = self.settings
        out = [f"token:{s.token}"] if s.token else []
        if s.user is not None and s.password is not None:
            out.append(f"basic:{s.user}:{s.password}")
        return out

    def session(self, *, token: str = "", user: str = "", password: str = "") -> str | None:
        """The cookie value for what a login form gave, or None if it is wrong."""
        given = f"token:{token}" if token else f"basic:{user}:{password}"
        for secret in self._secrets():
            if hmac.compare_digest(given.encode(), secret.encode()):
                return self._session_for(secret)
        return None

    def allows(self, authorization: str | None, cookie: str | None) -> bool:
        """Whether a request with these headers may go on."""
        if self.settings.local_only:
            return True
        if cookie:
            for secret in self._secrets():
                if hmac.compare_digest(cookie.encode(), self._session_for(secret).encode()):
                    return True
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.settings.token:
            return hmac.compare_digest(value.strip().encode(), self.settings.token.encode())
        if scheme.lower() == "basic" and self.settings.user is not None:
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return self.session(user=user, password=password) is not None
        return False
