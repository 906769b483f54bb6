"""Errors raised by the telephony package."""

from __future__ import annotations


class TelephonyError(Exception):
    pass


class DialFailed(TelephonyError):
    """An outbound call did not connect. `reason`: busy, no_answer, rejected, timeout, auth_failed, unreachable..."""

    def __init__(self, reason: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(f"{reason}{f' ({status})' if status else ''}{f': {detail}' if detail else ''}")
        self.reason = reason
        self.status = status
        self.detail = detail


class CallEnded(TelephonyError):
    """The call ended (hung up, cancelled, timed out) before or during the operation."""

    def __init__(self, reason: str | None) -> None:
        super().__init__(f"call ended: {reason}")
        self.reason = reason
