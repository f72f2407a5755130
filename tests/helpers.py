"""Assertions shared by the test modules."""
from __future__ import annotations

from click.testing import Result


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """A CLI failure as users should see it: non-zero exit, one line, no traceback, naming the problem."""
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
