"""One error type for everything a user can get wrong.

The CLI prints `GptsError` as a short paragraph (what went wrong, then how to fix it) and exits
non-zero without a traceback; any other exception is a bug and keeps its traceback.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


class GptsError(Exception):
    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}".strip())


class GptsWarning(UserWarning):
    """Something a user should know that does not stop the work (the CLI prints it as one 'Warning:' line)."""


class LinesError(GptsError):
    """A data file whose lines are not what they must be, with the problems as data for a program to show (the
    server's 400 carries them as `errors`): {"kind", "description", "count", "lines" (the first few), "more_lines",
    "detail" (of the first line), ...}, and one line that is right (`example_line`)."""

    def __init__(self, problem: str, fix: str, problems: list[dict[str, Any]], example_line: str):
        super().__init__(problem, fix)
        self.problems, self.example_line = problems, example_line


class NotFoundError(GptsError):
    """What was named does not exist (a GPT, one of its versions or files, a conversation): the server's 404."""


class ContextTooLong(GptsError):
    """A prompt and the tokens asked for do not fit the model's context: the server's 400 context_length_exceeded."""


class ConflictError(GptsError):
    """The change clashes with what the store holds (a slug that is taken, an edit that lost a race): a 409."""


@contextmanager
def naming(names: Mapping[Any, str]) -> Iterator[None]:
    """GptsErrors raised inside speak of each temporary file gpts named (a key, a path) by the name the user knows
    it by (its value: the file uploaded, the URL downloaded)."""
    try:
        yield
    except GptsError as e:
        e.problem, e.fix = named(e.problem, names), named(e.fix, names)
        e.args = (f"{e.problem} {e.fix}".strip(),)
        raise


def named(text: str, names: Mapping[Any, str]) -> str:
    """`text` with each temporary file gpts named (a key of `names`) called by the name the user knows it by."""
    for path, name in sorted(((str(p), n) for p, n in names.items()), key=lambda p: -len(p[0])):
        text = text.replace(path, name)  # the longest first: a path may hold a shorter one
    return text
