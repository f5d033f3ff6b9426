"""One error type for everything a user can get wrong.

The CLI prints `GptsError` as a short paragraph (what went wrong, then how to fix it) and exits
non-zero without a traceback; any other exception is a bug and keeps its traceback.
"""


class GptsError(Exception):
    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}".strip())


class GptsWarning(UserWarning):
    """Something a user should know that does not stop the work (the CLI prints it as one 'Warning:' line)."""
