"""Sections of BENCHMARKS.md: several targets write into the one file (`make bench`, `make bench-peers`),
each its own sections, and none may drop another's.

A section is a ``## `` heading line and everything up to the next ``# `` or ``## `` heading (or the end).
"""
from __future__ import annotations

import os
from pathlib import Path

# Written by `make bench-peers`; `make bench` rewrites the rest of the file and carries this over.
PEERS_HEADING = "## Peer model servers (`make bench-peers`)"
OTHER_TARGETS_SECTIONS = (PEERS_HEADING,)


def _is_boundary(line: str) -> bool:
    return line.startswith("# ") or line.startswith("## ")


def _span(lines: list[str], heading: str) -> tuple[int, int] | None:
    """[start, end) of the section headed exactly ``heading`` in ``lines``; None when absent."""
    for start, line in enumerate(lines):
        if line.rstrip() == heading:
            end = start + 1
            while end < len(lines) and not _is_boundary(lines[end]):
                end += 1
            return start, end
    return None


def section_text(document: str, heading: str) -> str | None:
    """The section headed ``heading`` (heading line included, trailing newline kept), or None."""
    lines = document.splitlines(keepends=True)
    span = _span(lines, heading)
    return None if span is None else "".join(lines[span[0]:span[1]])


def replace_section(document: str, heading: str, section: str) -> str:
    """``document`` with the section headed ``heading`` replaced by ``section`` (which starts with that
    heading), or with ``section`` appended after a blank line when there is none yet. Everything else is
    kept byte for byte."""
    if not section.startswith(heading):
        raise ValueError(f"the new section must start with its heading {heading!r}")
    section = section.rstrip("\n") + "\n"
    lines = document.splitlines(keepends=True)
    span = _span(lines, heading)
    if span is None:
        body = document.rstrip("\n")
        return f"{body}\n\n{section}" if body else section
    start, end = span
    before, after = "".join(lines[:start]), "".join(lines[end:])
    return before + section + ("\n" + after if after else "")


def carry_sections(new_document: str, old_document: str, headings: tuple[str, ...]) -> str:
    """``new_document`` with the sections ``headings`` of ``old_document`` carried over: what one target
    writes keeps what the others wrote."""
    for heading in headings:
        kept = section_text(old_document, heading)
        if kept is not None:
            new_document = replace_section(new_document, heading, kept)
    return new_document


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
