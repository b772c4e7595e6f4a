"""The error types every layer of mason raises.

Each user-facing error carries a kebab-case ``reference`` (for searching and
for tests), a message that says what failed, optional ``context`` lines that
say where (a Dockerfile line, a registry URL and its error body, the last
lines of a failing RUN) and an optional ``hint`` that says what to do.
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "DiagnosticError",
    "DigestMismatchError",
    "MasonError",
    "UsageError",
]


class MasonError(Exception):
    """Base class of every error mason raises on purpose."""

    #: Process exit status the CLI uses for this error.
    exit_code: int = 1


class DiagnosticError(MasonError):
    """An error with a stable reference, a message, context lines and a hint."""

    reference: str = "mason-error"

    def __init__(
        self,
        message: str,
        *,
        reference: str | None = None,
        context: list[str] | tuple[str, ...] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reference is not None:
            self.reference = reference
        self.context = tuple(context)
        self.hint = hint

    def __str__(self) -> str:
        parts = [self.message]
        parts.extend(f"  {line}" for line in self.context)
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class UsageError(DiagnosticError):
    """The command line or an option value is wrong (exit status 2)."""

    reference = "usage-error"
    exit_code = 2


class BuildError(DiagnosticError):
    """A build step failed: a RUN exited non-zero, a source file is missing (exit 1)."""

    reference = "build-failed"


class DigestMismatchError(DiagnosticError):
    """Content did not match the digest or size it was announced with."""

    reference = "digest-mismatch"
