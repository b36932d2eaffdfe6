"""The one table renderer: rich on a terminal, aligned plain text anywhere else; sizes as text.

Used for the CLI's summaries (``launch``, ``status``) and for the preflight's
version-mismatch table, which travels inside an error message and so is
always plain text.
"""

from __future__ import annotations

import click


def fmt_bytes(n: int) -> str:
    """``1.5 GiB``: one decimal, binary units (dask's ``format_bytes`` prints two)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def aligned(rows: list[list[str]], right: set[int] = frozenset(), indent: str = "") -> list[str]:
    """Rows of cells as lines, every column as wide as its widest cell.

    ``right``: column indexes aligned right (numbers). Trailing blanks are cut.
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [(indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                for i, (c, w) in enumerate(zip(r, widths)))).rstrip() for r in rows]


def show(console, headers: list[str], rows: list[list[str]], right: set[int] = frozenset(),
         styles: dict[int, str] | None = None) -> None:
    """Print one table: rich if ``console`` is given, aligned plain text otherwise.

    ``right``: column indexes aligned right (numbers); ``styles``: row index -> rich style.
    """
    if console is None:
        for line in aligned([headers, *rows], right, indent="  "):
            click.echo(line)
        return
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for i, h in enumerate(headers):
        t.add_column(h, justify="right" if i in right else "left",
                     overflow="fold", no_wrap=i < len(headers) - 1)
    for i, r in enumerate(rows):
        t.add_row(*r, style=(styles or {}).get(i))
    console.print(t)
