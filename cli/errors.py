"""Why a command stopped, as one sentence that names the service and its URL.

Every error the CLI reports is a :class:`CliError`; its ``str`` is the whole message and
``exit_status`` the process's exit status. A refused *file* is not an error: it is one
item's fate (:mod:`cli.fates`) and the command goes on with the others.
"""

from __future__ import annotations

import re

#: Exit statuses (README "Command line"): everything done; some items failed (each is
#: reported); usage error (argparse's own); a service or the environment stopped the
#: command; the wait for results timed out (the images still pending are listed).
EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_TIMED_OUT = 4

_SCOPE = re.compile(r"lacks the '?(?P<scope>[a-z_]+)'? scope")


class CliError(Exception):
    """The command cannot go on; ``str(self)`` is the message for the user."""

    exit_status = EXIT_STOPPED


class UsageError(CliError):
    """Bad input found after parsing (a missing folder, an unreadable ids file)."""

    exit_status = EXIT_USAGE


class Unreachable(CliError):
    """No HTTP answer at all: connection refused, timed out, name not resolved."""

    def __init__(self, service: str, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the {service} at {url} ({reason}); is it running? make up")
        self.service, self.url, self.reason = service, url, reason


class Refused(CliError):
    """The service answered with an error status that ends the command (401, 403, 429
    after the retries, 5xx, or a 4xx about the request as a whole)."""

    def __init__(self, service: str, url: str, status: int, detail: str, what: str) -> None:
        super().__init__(refusal_message(service, url, status, detail, what))
        self.service, self.url, self.status, self.detail, self.what = service, url, status, detail, what


def refusal_message(service: str, url: str, status: int, detail: str, what: str) -> str:
    """The sentence for an error answer: ``what`` is the request (``GET /v1/images/…``)."""
    where = f"the {service} at {url}"
    if status == 401:
        return (
            f"{where} refused the API key (401): {detail}; "
            "pass --api-key or set FACESTREAM_API_KEY (make up writes an admin key to .run/admin-key)"
        )
    if status == 403:
        m = _SCOPE.search(detail)
        if m:
            scope = m["scope"]
            return (
                f"{where} refused {what} (403): the API key lacks the '{scope}' scope; "
                f"use a key that has it (facestream keys create NAME --scopes {scope},...)"
            )
        return f"{where} refused {what} (403): {detail}"
    if status == 429:
        return f"{where} kept refusing {what} with 429 (rate limited) after the retries: {detail}"
    if status >= 500:
        return f"{where} failed {what} ({status}): {detail}"
    return f"{where} refused {what} ({status}): {detail}"


def transport_reason(exc: Exception) -> str:
    """A short reason for a request that got no answer (``connection refused``, ...)."""
    text = str(exc)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "host name not resolved"
    if type(exc).__name__.endswith("Timeout") or "timed out" in lowered:
        return "timed out"
    return re.sub(r"^\[Errno -?\d+\]\s*", "", text).strip() or type(exc).__name__
