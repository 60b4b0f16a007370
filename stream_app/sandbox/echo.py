"""Two hostile providers, as faults: one that echoes the secrets it was sent, one that sends
numbers no lifetime or wait can hold.

``echo_answer`` answers in the dialect's own error shape with every encoding of every secret
the request carried (the refresh token, the client secret, the ``client_id:client_secret`` pair
and the ``Authorization`` header) in its free text, in extra fields, in its headers, and with
``shape="code"`` as the error code itself; ``shape="page"`` is a gateway's HTML page with a
media type made of the token. ``hostile_number_answer`` puts raw number text where
``expires_in`` or a 429's wait belongs.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from .dialects import Answer, Dialect
from .exchange import TokenRequest
from .state import Fault

_NUMBER_MARK = "__hostile_number__"


def sent_secrets(request: TokenRequest) -> list[str]:
    """Every secret in the request: the refresh token, the client secret (form or Basic), the
    decoded Basic pair and the Authorization header itself."""
    found = [request.form.get("refresh_token", ""), request.form.get("client_secret", "")]
    authorization = request.headers.get("authorization", "")
    found.append(authorization)
    if authorization[:6].lower() == "basic ":
        try:
            pair = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            pair = ""
        found += [pair, pair.partition(":")[2]]
    elif request.form.get("client_id"):
        found.append(f"{request.form['client_id']}:{request.form.get('client_secret', '')}")
    return [secret for secret in found if secret]


def encodings(secret: str) -> list[str]:
    """The ways a careless provider writes a secret back."""
    raw = secret.encode()
    return [
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        html.escape(secret),
        secret[:8],
        secret[:12],
        secret[3:15],
        secret[-10:],
    ]


def _echo(request: TokenRequest, *, ascii_only: bool = False) -> str:
    forms = [form for secret in sent_secrets(request) for form in encodings(secret)]
    if ascii_only:
        forms = [form for form in forms if form.isascii() and form.isprintable()]
    return " | ".join(forms)


def echo_answer(dialect: Dialect, fault: Fault, request: TokenRequest) -> Answer:
    echo, header_echo = _echo(request), _echo(request, ascii_only=True)
    headers = {"X-Echo": header_echo, "X-Request-Token": request.form.get("refresh_token", "")}
    if fault.shape == "page":
        token = request.form.get("refresh_token", "") or "none"
        page = f"<html><body><h1>Denied</h1><pre>{html.escape(echo)}</pre></body></html>"
        return Answer(fault.status or 401, page, headers, f"application/x-{quote(token, safe='')}")
    base = dialect.wrong_client if fault.shape == "wrong_client" else dialect.bad_grant
    www_authenticate = dict(base.headers).get("WWW-Authenticate", "Bearer")
    headers["WWW-Authenticate"] = f'{www_authenticate}, error_description="{header_echo}"'
    body = _echoing_body(base.body, echo, request, as_code=fault.shape == "code")
    return Answer(fault.status or base.status, body, {**base.headers, **headers}, base.content_type)


def _echoing_body(body: Mapping[str, Any] | str | None, echo: str, request: TokenRequest, *, as_code: bool) -> Any:
    if not isinstance(body, Mapping):
        return body if body is None else f"{body} {echo}"
    echoed: dict[str, Any] = {
        key: f"{value} {echo}" if isinstance(value, str) and key != "error" else value for key, value in body.items()
    }
    if as_code:
        token = request.form.get("refresh_token", "")
        if "error" in echoed:
            echoed["error"] = token
        else:  # Twitch: no code, only words
            echoed["message"] = token
    elif "error" in echoed:
        echoed.setdefault("error_description", echo)
    echoed |= {"echo": echo, "details": [echo], "hint": {"sent": echo}}
    return echoed


def hostile_number_answer(dialect: Dialect, fault: Fault, answer: Answer) -> Answer:
    """``answer`` (a successful refresh's, whose token is already spent) with ``fault.number``
    as its lifetimes; or, for ``shape="retry_after"``, a 429 asking to wait that long."""
    number = fault.number or ""
    if fault.shape == "retry_after":
        body = json.dumps({"message": "You are being rate limited.", "retry_after": _NUMBER_MARK})
        return Answer(429, body.replace(f'"{_NUMBER_MARK}"', number), {"Retry-After": number})
    if not isinstance(answer.body, Mapping) or answer.status != 200:
        return answer
    lifetimes = {"expires_in", "refresh_token_expires_in", *dialect.mirror_expires_in}
    marked = {key: _NUMBER_MARK if key in lifetimes else value for key, value in answer.body.items()}
    return Answer(200, json.dumps(marked).replace(f'"{_NUMBER_MARK}"', number), answer.headers)
