"""The console's sign-in sessions: kept in this process's memory, named by a signed cookie.

The cookie holds a random session id and its HMAC under a key made at start-up; the session
holds the credential it was opened with, which is checked again on every request. So a session
ends when its lifetime does, when the credential stops being accepted (a token expires; a key or
secret changes, which takes a restart), when the process restarts (the key and the memory go),
or when its user signs out. A session grants the console only: the JSON API reads credentials
from headers, never from a cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import jwt
from aiohttp import web

from bridge.auth import Authenticator, Principal
from bridge.errors import AuthenticationFailed

COOKIE = "bridge_console"
LOGIN_COOKIE = "bridge_console_login"  # binds the sign-in form's CSRF token to its browser
LOGIN_FORM_S = 600  # how long a sign-in form may be left open
MAX_SESSIONS = 1000  # the oldest goes past this: memory stays bounded whatever comes
MAX_PER_CREDENTIAL = 10  # sessions one credential may hold (browsers, tabs signed in apart)
MAX_CREDENTIAL_CHARS = 8192


@dataclass(slots=True)
class Session:
    id: str
    credential: str
    principal: Principal
    expires_at: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    flashes: list[str] = field(default_factory=list)

    def pop_flashes(self) -> list[str]:
        shown, self.flashes = self.flashes, []
        return shown


def credential_headers(credential: str) -> dict[str, str]:
    """The headers a JSON API client would send with this credential: a JWT (three
    dot-separated parts) as a bearer token, anything else as an API key."""
    if credential.count(".") == 2:
        return {"Authorization": f"Bearer {credential}"}
    return {"X-API-Key": credential}


def _expiry_of(token: str) -> float:
    """A verified JWT's `exp` (the bridge's tokens must carry one)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return float(claims["exp"])


class Sessions:
    def __init__(self, authenticator: Authenticator, lifetime_s: float) -> None:
        self._auth = authenticator
        self.lifetime_s = lifetime_s
        self._key = secrets.token_bytes(32)
        self._open: OrderedDict[str, Session] = OrderedDict()

    def _sign(self, purpose: str, value: str) -> str:
        mac = hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def open(self, credential: str) -> tuple[Session, str]:
        """A session for a credential with the admin scope, and its cookie value;
        AuthenticationFailed if the credential is not accepted or lacks the scope."""
        principal = self.principal_of(credential)
        if not principal.allows("admin"):
            raise AuthenticationFailed(
                "this credential lacks the admin scope",
                description="the console needs an admin token or an API key with the admin scope",
            )
        expires_at = time.time() + self.lifetime_s
        if "Authorization" in credential_headers(credential):  # a JWT: never past its own exp
            expires_at = min(expires_at, _expiry_of(credential))
            if expires_at <= time.time():  # accepted within the leeway, but past its exp
                raise AuthenticationFailed("this token has expired; make a new one")
        session = Session(secrets.token_urlsafe(32), credential, principal, expires_at)
        # One credential's sessions past MAX_PER_CREDENTIAL: its own oldest goes, so signing in
        # again and again (a workflow-limited token, say) never signs anyone else out.
        own = [other.id for other in self._open.values() if other.credential == credential]
        for old in own[: max(0, len(own) - MAX_PER_CREDENTIAL + 1)]:
            self.close(old)
        self._open[session.id] = session
        while len(self._open) > MAX_SESSIONS:
            self._open.popitem(last=False)
        return session, f"{session.id}.{self._sign('session', session.id)}"

    def principal_of(self, credential: str) -> Principal:
        if not credential or len(credential) > MAX_CREDENTIAL_CHARS:
            raise AuthenticationFailed("enter an admin token or API key")
        return self._auth.authenticate(credential_headers(credential))

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, its credential checked again; None otherwise."""
        if not cookie:
            return None
        session_id, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac, self._sign("session", session_id)):
            return None
        session = self._open.get(session_id)
        if session is None or not self.alive(session):
            return None
        try:
            session.principal = self.principal_of(session.credential)
        except AuthenticationFailed:
            self.close(session_id)
            return None
        return session

    def alive(self, session: Session) -> bool:
        """Not signed out, not expired (nor its token): what an open event stream checks at
        each event and each second."""
        if session.expires_at <= time.time():
            self.close(session.id)
        return session.id in self._open

    def close(self, session_id: str) -> None:
        self._open.pop(session_id, None)

    def login_form(self) -> tuple[str, str]:
        """A nonce for the sign-in form's cookie, and the CSRF token the form carries."""
        nonce = secrets.token_urlsafe(32)
        return nonce, self._sign("login", nonce)

    def login_form_valid(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(token, self._sign("login", nonce))


SESSIONS: web.AppKey[Sessions] = web.AppKey("console_sessions")
