"""Errors of the crypto core. Each says whose input was wrong and what was expected.

All derive from ValueError so that callers handling "bad bytes from the network" in one place
(`except ValueError`) catch them, and none of them ever carries key material in its message.
"""


class CryptoError(ValueError):
    """Base of every error raised by nyx.crypto."""


class KemError(CryptoError):
    """A KEM input was malformed (wrong length, invalid encoding) or the operation is unsupported."""


class UnsupportedOperation(KemError):
    """The KEM, or the backend serving it, does not define this operation (e.g. derive for HQC)."""


class RecordError(CryptoError):
    """A record failed to open: malformed, forged, replayed, too old, or from a retired key epoch.

    `reason` is a short stable token (`malformed`, `auth`, `replay`, `too_old`, `epoch`) suitable
    for a drop counter label.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
