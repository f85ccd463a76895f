"""Who may use the page. On this machine only (a loopback address) it is open, as it always was; on a network
address or through a public --share link anyone who finds it could upload files and use the GPU, so it asks for
a user and password: the ones given to --auth, else a random password made up at start and printed once.
--no-auth opens it anyway, as an explicit choice, with a warning."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from animator_cli.errors import InputError

DEFAULT_USER = "animator"
AUTH_HINT = "for example --auth ann:s3cret, or set ANIMATOR_UI_AUTH"


@dataclass(frozen=True)
class Access:
    """The sign-in the page asks for: ``user`` and ``password``, or none at all (``open``); ``exposed``: served
    beyond this machine (a network address or a public link)."""

    user: str | None = None
    password: str | None = None
    made_up: bool = False  # the password was generated here: print it once, nobody else knows it
    exposed: bool = False

    @property
    def open(self) -> bool:
        return self.user is None

    def check(self) -> Callable[[str, str], bool] | None:
        """Gradio's ``auth`` callable: compares in constant time, so timing tells nothing about the password."""
        if self.open:
            return None
        expected = (self.user.encode(), self.password.encode())

        def signs_in(user: str, password: str) -> bool:
            return hmac.compare_digest(user.encode(), expected[0]) & hmac.compare_digest(password.encode(), expected[1])

        return signs_in


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def parse_auth(value: str) -> tuple[str, str]:
    """``USER:PASSWORD`` (the password may contain ':'), both non-empty."""
    user, colon, password = value.partition(":")
    if not (colon and user and password):
        raise InputError("--auth must be USER:PASSWORD, both non-empty", AUTH_HINT)
    return user, password


def decide_access(host: str, share: bool, auth: str | None = None, no_auth: bool = False) -> Access:
    """The sign-in for serving on ``host`` (and a public link when ``share``): see the module docstring."""
    if auth is not None and no_auth:
        raise InputError("--auth and --no-auth contradict each other", "choose one")
    exposed = share or not is_loopback(host)
    if auth is not None:
        return Access(*parse_auth(auth), exposed=exposed)
    if no_auth or not exposed:
        return Access(exposed=exposed)
    return Access(DEFAULT_USER, secrets.token_urlsafe(16), made_up=True, exposed=True)
