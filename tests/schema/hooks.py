"""schemathesis hooks for tests/schema/run.sh: let generated requests reach the upstream path.

Generated data alone almost never gets past the gate's early checks: a random `number` is
not a valid phone number, and a random `captcha` is never a token hCaptcha (here: its
emulator) accepts. So the 200 answers, signal-server's relayed refusals (418, 409, ...) and
the send-schedule 429s would go untested. These hooks change some requests just before they
are sent, and nothing else (the checks still judge each answer against docs/openapi.yaml):

- register: for about half of the requests whose body is an object with a string `captcha`,
  the captcha becomes a fresh token issued by the hCaptcha emulator (raw, in Signal's form,
  or behind `signalcaptcha://`); for most of those, a string `number` becomes a valid number
  (new or already used, written in one of several ways the gate folds to E.164).
- verify: when `sessionId` is a session that one of those registers got, `number` becomes that
  session's number (in some writing), and about half the time `code` becomes the code the
  signal-server emulator delivered to its inbox. Some other verify requests get such a session.

Set by run.sh: SG_SCHEMA_HCAPTCHA_URL, SG_SCHEMA_SIGNAL_URL (loopback emulators),
SG_SCHEMA_SITEKEY, SG_SCHEMA_SEED, SG_SCHEMA_HOOK_STATS (a JSON file written at exit with
what the hooks did).
"""

from __future__ import annotations

import atexit
import json
import os
import random
import threading
import urllib.parse
import urllib.request

import schemathesis

HCAPTCHA_URL = os.environ["SG_SCHEMA_HCAPTCHA_URL"].rstrip("/")
SIGNAL_URL = os.environ["SG_SCHEMA_SIGNAL_URL"].rstrip("/")
SITEKEY = os.environ["SG_SCHEMA_SITEKEY"]
STATS_PATH = os.environ.get("SG_SCHEMA_HOOK_STATS")

_rng = random.Random(int(os.environ.get("SG_SCHEMA_SEED", "0")))
_lock = threading.Lock()
# Canonical E.164 of the numbers the hooks used, and the session each register 200 returned.
_used_numbers: list[str] = []
_sessions: dict[str, str] = {}
# The writing of a number sent in a register request -> its E.164, until the answer arrives.
_pending: dict[str, str] = {}
_stats = {
    "register_tokens": 0,
    "register_numbers": 0,
    "verify_sessions": 0,
    "verify_real_codes": 0,
    "sessions_seen": 0,
    "emulator_errors": 0,
}


def _write_stats() -> None:
    if STATS_PATH:
        with open(STATS_PATH, "w", encoding="utf-8") as out:
            json.dump(_stats, out)


atexit.register(_write_stats)


def _count(name: str) -> None:
    with _lock:
        _stats[name] += 1


def _fetch_json(request: urllib.request.Request | str) -> dict:
    with urllib.request.urlopen(request, timeout=5) as answer:  # loopback emulators only
        return json.loads(answer.read())


def _issue_token() -> str | None:
    body = json.dumps({"sitekey": SITEKEY}).encode()
    request = urllib.request.Request(
        f"{HCAPTCHA_URL}/emulator/issue",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        return _fetch_json(request)["token"]
    except Exception:  # noqa: BLE001 - an unusable emulator only means less coverage
        _count("emulator_errors")
        return None


def _inbox_code(e164: str) -> str | None:
    url = f"{SIGNAL_URL}/emulator/inbox/{urllib.parse.quote(e164, safe='')}"
    try:
        codes = _fetch_json(url).get("codes") or []
    except Exception:  # noqa: BLE001
        _count("emulator_errors")
        return None
    return codes[-1] if codes else None


def _new_number(rng: random.Random) -> str:
    """A number valid by libphonenumber's rules, as canonical E.164."""
    kind = rng.randrange(4)
    if kind == 0:
        return f"+447400{rng.randrange(10**6):06d}"  # GB mobile
    if kind == 1:
        return f"+49151{rng.randrange(10**8):08d}"  # DE mobile
    if kind == 2:
        return f"+336{rng.randrange(10**8):08d}"  # FR mobile
    return f"+1202555{rng.randrange(10**4):04d}"  # US, Washington DC


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def _written(e164: str, rng: random.Random) -> str:
    """One of the writings the gate folds to the same E.164."""
    digits = e164[1:]
    style = rng.randrange(6)
    if style == 0:
        return e164
    if style == 1:
        return "00" + digits
    if style == 2:
        return "+" + " ".join(digits[i : i + 3] for i in range(0, len(digits), 3))
    if style == 3:
        return "+" + "-".join(digits[i : i + 2] for i in range(0, len(digits), 2))
    if style == 4:
        return "\uff0b" + digits  # full-width plus
    return "+" + digits.translate(ARABIC_INDIC)


def _captcha_form(token: str, rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return token
    signal_form = f"signal-hcaptcha.{SITEKEY}.registration.{token}"
    return signal_form if style == 1 else "signalcaptcha://" + signal_form


def _is_post(case, path: str) -> bool:
    return case.method.upper() == "POST" and case.path == path


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict):
        return
    if _is_post(case, "/v1/register"):
        _adjust_register(body)
    elif _is_post(case, "/v1/verify"):
        _adjust_verify(body)


def _adjust_register(body: dict) -> None:
    with _lock:
        if not isinstance(body.get("captcha"), str) or _rng.random() >= 0.5:
            return
        swap_number = isinstance(body.get("number"), str) and _rng.random() < 0.8
        if swap_number:
            reuse = _used_numbers and _rng.random() < 0.3
            e164 = _rng.choice(_used_numbers) if reuse else _new_number(_rng)
            if not reuse:
                _used_numbers.append(e164)
            written = _written(e164, _rng)
        style_rng = random.Random(_rng.random())
    token = _issue_token()
    if token is None:
        return
    body["captcha"] = _captcha_form(token, style_rng)
    _count("register_tokens")
    if swap_number:
        body["number"] = written
        # Remember the writing so that after_call can map the session back to the number.
        with _lock:
            _pending[written] = e164
        _count("register_numbers")



def _adjust_verify(body: dict) -> None:
    with _lock:
        session = body.get("sessionId")
        if not (isinstance(session, str) and session in _sessions):
            if not _sessions or _rng.random() >= 0.25:
                return
            session = _rng.choice(sorted(_sessions))
            body["sessionId"] = session
        e164 = _sessions[session]
        body["number"] = _written(e164, _rng)
        real_code = _rng.random() < 0.5
    _count("verify_sessions")
    if real_code:
        code = _inbox_code(e164)
        if code is not None:
            body["code"] = code
            _count("verify_real_codes")


@schemathesis.hook
def after_call(context, case, response):
    if not _is_post(case, "/v1/register") or response.status_code != 200:
        return
    body = case.body if isinstance(case.body, dict) else {}
    try:
        session = json.loads(response.content).get("sessionId")
    except (ValueError, AttributeError):
        return
    with _lock:
        e164 = _pending.get(body.get("number")) if isinstance(body.get("number"), str) else None
        if isinstance(session, str) and e164:
            _sessions[session] = e164
            _stats["sessions_seen"] += 1


@schemathesis.check
def retry_after_consistency(ctx, response, case):
    """What the document cannot say: on a 429 the Retry-After header and the body's retryAfter
    are the same whole number of seconds (at least 1); no other answer has Retry-After, except
    upstream_rejected, which may carry signal-server's own (at least 1)."""
    values = [v for k, v in response.headers.items() if k.lower() == "retry-after"]
    header = values[0] if values else None
    if isinstance(header, list):
        if len(header) > 1:
            raise AssertionError(f"{len(header)} Retry-After headers: {header!r}")
        header = header[0] if header else None
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    if response.status_code == 429:
        if header is None or not header.isdigit() or int(header) < 1:
            raise AssertionError(f"429 with Retry-After {header!r}, not whole seconds >= 1")
        retry_after = body.get("retryAfter") if isinstance(body, dict) else None
        if retry_after != int(header):
            raise AssertionError(f"429: Retry-After {header} but retryAfter {retry_after!r} in the body")
    elif header is not None:
        if code != "upstream_rejected":
            raise AssertionError(f"{response.status_code} {code} carries Retry-After {header!r}")
        if not header.isdigit() or int(header) < 1:
            raise AssertionError(f"upstream_rejected with Retry-After {header!r}, not whole seconds >= 1")
