"""The one error type of the Dockerfile frontend."""

from __future__ import annotations

from mason.errors import DiagnosticError

__all__ = ["DockerfileError"]


class DockerfileError(DiagnosticError):
    """A Dockerfile could not be read, converted or expanded (exit status 2).

    ``message`` is BuildKit's wording where BuildKit has one. ``lines`` is
    BuildKit's location as 1-based line numbers (empty when unknown; a few
    parser-level errors keep BuildKit's off-by-one, see the golden README).
    ``line`` and ``column`` point at the first offending character
    (``column`` is 1-based, 0 when unknown), ``source_line`` is that line's
    text and ``section`` says which layer failed: ``directives``, ``parse``,
    ``instructions``, ``expand`` or ``stages``.
    """

    reference = "dockerfile-error"
    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str = "Dockerfile",
        lines: tuple[int, ...] | list[int] = (),
        column: int = 0,
        source_line: str | None = None,
        hint: str | None = None,
        section: str = "parse",
    ) -> None:
        self.file = file
        self.lines = tuple(lines)
        self.line = self.lines[0] if self.lines else 0
        self.column = column
        self.source_line = source_line
        self.section = section
        context: list[str] = []
        if self.line > 0:
            where = f"{file}:{self.line}" + (f":{column}" if column else "")
            context.append(f"at {where}")
        else:
            context.append(f"in {file}")
        if source_line is not None:
            context.append(f"{self.line:>5} | {source_line}")
        super().__init__(message, context=context, hint=hint)

    def located(self, *, file: str, source_lines: list[str] | None = None) -> DockerfileError:
        """This error with the file name and offending line filled in."""
        src = self.source_line
        if src is None and source_lines is not None and 0 < self.line <= len(source_lines):
            src = source_lines[self.line - 1]
        err = DockerfileError(
            self.message,
            file=file,
            lines=self.lines,
            column=self.column,
            source_line=src,
            hint=self.hint,
            section=self.section,
        )
        return err
