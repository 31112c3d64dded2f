"""One error hierarchy for the whole package.

Every message names the argument, the bad value, the allowed range and, where
there is one, the fix.  The CLI maps these to one readable line and a non-zero
exit code; the HTTP ingress maps them to 4xx responses carrying the message.
"""

from __future__ import annotations


class AetherisError(Exception):
    """Base class of every error this package raises on purpose."""

    #: HTTP status the ingress answers with.
    http_status = 500
    #: Process exit code the CLI exits with.
    exit_code = 1


class InvalidInput(AetherisError, ValueError):
    """A request or argument is outside what the engine accepts."""

    http_status = 422
    exit_code = 2


class DataError(AetherisError):
    """Market data is missing, malformed or insufficient for the request."""

    http_status = 422
    exit_code = 3


class UnknownAsset(DataError, KeyError):
    """The asset is not present in the data source."""

    http_status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotFitted(AetherisError):
    """A component was used before it was fitted."""

    exit_code = 4


class ModelNotFound(AetherisError, LookupError):
    """A registered model version does not exist or cannot be loaded."""

    http_status = 404
    exit_code = 4


class NotAvailable(AetherisError):
    """A feature that is not built yet (or not installed) was asked for."""

    http_status = 501
    exit_code = 5


class AetherisWarning(UserWarning):
    """Base class of the package's warnings."""


class DataQualityWarning(AetherisWarning):
    """Data was accepted but something in it deserves attention (gaps, repairs)."""


class FallbackWarning(AetherisWarning):
    """A component fell back to its baseline (missing or corrupt artifact, missing input)."""
