"""bench/results.md holds one section per benchmark; each script replaces only its own."""

from pathlib import Path

HEADER = """\
# Benchmark results

Each section is written by one script under `bench/` (see `bench/README.md`), which replaces
only its own section when it runs again.
"""


def replace_section(path: Path, heading: str, text: str) -> None:
    """Replaces the section that starts with the line `heading`, or appends `text`."""
    old = path.read_text() if path.exists() else HEADER
    lines = old.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip() == heading), None)
    if start is None:
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        rest = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + rest if rest else "")
    path.write_text(new)
