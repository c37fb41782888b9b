"""What every job's report shares: a table of figures and remarks, the same rows shown
as text in the terminal and as a table artifact in the Prefect UI."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

Row = dict[str, str | int]
MAX_LABEL_WIDTH = 52  # a longer label pushes its own count right, not every row's
REMARKS = ("failure", "note", "problem", "rejected")  # rows shown as remarks


def figure_rows(figures: list[tuple[str, int]]) -> list[Row]:
    return [{"item": name, "count": count, "detail": ""} for name, count in figures]


def remark_rows(kind: str, details: list[str]) -> list[Row]:
    return [{"item": kind, "count": 1, "detail": detail} for detail in details]


def render_rows(head: list[str], rows: list[Row]) -> str:
    """Figures aligned in a column, remarks (failures, problems...) one per line."""
    width = min(max((len(str(row["item"])) for row in rows), default=0), MAX_LABEL_WIDTH)
    lines = list(head)
    for row in rows:
        if row["item"] in REMARKS:
            lines.append(f"  {str(row['item']).upper()}: {row['detail']}")
        else:
            lines.append(f"  {row['item']:<{width}} {row['count']:>8}")
    return "\n".join(lines)


def publish_rows(key: str, rows: list[Row], description: str) -> None:
    """Artifact keys: lowercase letters, digits and dashes only."""
    create_table_artifact(key=key, table=rows, description=description)
