"""tools/gpu_check.py's report: JSON and Markdown, each written whole or not at all (a run stopped at its time limit
leaves the last complete report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_text(path: Path, text: str) -> None:
    """Write `text` through a temporary file renamed into place."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def write_json(path: Path, value: Any) -> None:
    """Write `value` as indented JSON (anything JSON lacks as its string), whole or not at all."""
    write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table."""
    return [f"| {' | '.join(header)} |", "|" + " --- |" * len(header),
            *(f"| {' | '.join(str(cell) for cell in row)} |" for row in rows)]


def section(data: dict[str, Any]) -> list[str]:
    """An item's data: plain values as a list, records (configurations) as a table per set of fields."""
    plain = [f"- {key}: {value}" for key, value in data.items() if not isinstance(value, dict)]
    records = {key: value for key, value in data.items() if isinstance(value, dict)}
    blocks = [plain] if plain else []
    blocks += [table(["", *fields], [[key, *record.values()] for key, record in records.items()
                                     if tuple(record) == fields])
               for fields in dict.fromkeys(tuple(record) for record in records.values())]
    lines: list[str] = []
    for block in blocks:
        lines += [""] * bool(lines) + block
    return lines


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The report for people: the run's facts, a table of the items, then each item's data."""
    lines = ["# seg-video GPU check", "", *(f"- {key}: {value}" for key, value in meta.items()), "",
             *table(["item", "status", "summary", "seconds"],
                    [[row["name"], row["status"], row.get("summary") or "", row.get("seconds", "")] for row in rows])]
    for row in rows:
        if row.get("data"):
            lines += ["", f"## {row['name']}", "", f"{row['what']}.", "", *section(row["data"])]
    return "\n".join(lines) + "\n"


def write_report(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """report.json and report.md in `out`."""
    write_json(out / "report.json", {**meta, "items": rows})
    write_text(out / "report.md", markdown(meta, rows))
