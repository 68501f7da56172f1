"""One error type for bad user input, so the CLI can print one line and exit 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: carries the file, row and field it is about.

    ``str(err)`` is a single line ``file:row: field: message`` with the parts
    that are known; the CLI prints exactly that.
    """

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None, field: str | None = None):
        self.file = file
        self.row = row
        self.field = field
        self.message = " ".join(str(message).split())
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = str(self.file)
            if self.row is not None:
                where += f":{self.row}"
            where += ": "
        elif self.row is not None:
            where = f"row {self.row}: "
        fld = f"{self.field}: " if self.field else ""
        return f"{where}{fld}{self.message}"


def pydantic_error(exc, *, file: str | None, row: int | None = None, prefix: str = "") -> InputError:
    """Turn the first error of a pydantic ValidationError into an InputError."""
    errs = exc.errors()
    if not errs:
        return InputError(str(exc), file=file, row=row)
    e = errs[0]
    loc = ".".join(str(x) for x in e.get("loc", ()) if x != "__root__")
    field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or None)
    msg = e.get("msg", "invalid value")
    if "input" in e and not isinstance(e["input"], (dict, list)):
        msg += f" (got {e['input']!r})"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return InputError(msg + more, file=file, row=row, field=field or None)
