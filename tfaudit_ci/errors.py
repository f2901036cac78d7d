"""One error hierarchy; each error maps to a contract exit code and says how to fix it."""

from __future__ import annotations

EXIT_USAGE = 20
EXIT_PREFLIGHT = 21
EXIT_UPLOAD = 22
EXIT_READBACK = 23
EXIT_VERIFY = 24
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class TfauditError(Exception):
    """Base error. ``summary`` is one line; ``fix`` tells the user what to do."""

    exit_code = EXIT_USAGE

    def __init__(self, summary: str, *, fix: str | None = None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.fix = fix

    def diagnostics(self) -> str:
        """A one-line, human message: what went wrong and how to fix it."""
        if self.fix:
            return f"{self.summary} (fix: {self.fix})"
        return self.summary


class ConfigError(TfauditError):
    exit_code = EXIT_USAGE


class PreflightError(TfauditError):
    exit_code = EXIT_PREFLIGHT


class UploadError(TfauditError):
    exit_code = EXIT_UPLOAD


class ReadbackError(TfauditError):
    exit_code = EXIT_READBACK


class VerifyError(TfauditError):
    exit_code = EXIT_VERIFY
