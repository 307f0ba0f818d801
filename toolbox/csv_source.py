"""Images named by a CSV file (`image,label` rows, as labelling tools and competitions hand
them over) as a labelled `FileSource`, with an optional train/val split column.

Rows naming files that are not there are skipped with a reason, as a folder's unreadable files
are; what makes the whole table ambiguous (a path named twice, an empty label, no column that
names files) is a one-line error instead, since training on a guess would be worse.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolbox.errors import ToolboxError, unknown_name
from toolbox.fileio import is_file
from toolbox.sources import FileSource, SkippedFile, shown_path

DEFAULT_LABEL_COLUMN = "label"
SPLIT_VALUES = {"train": False, "val": True, "valid": True, "validation": True}
PROBE_ROWS = 20  # rows looked at to find the column that names files


@dataclass
class CsvLabels:
    """A CSV's readable rows as one source, which of them are validation (`is_val`, when the
    table has a split column) and the rows left out."""

    source: FileSource
    path_column: str
    label_column: str
    is_val: np.ndarray | None = None
    skipped: list[SkippedFile] = field(default_factory=list)


def is_csv(path: str | Path) -> bool:
    """Whether `--data` names a CSV table rather than a folder or shards."""
    return str(path).lower().endswith(".csv")


def _rows(csv_file: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except FileNotFoundError:
        raise ToolboxError(f"no such CSV file: {csv_file}",
                           "pass a table with a header row, e.g. image,label") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ToolboxError(f"cannot read {csv_file}: {exc}",
                           "save it as UTF-8 CSV with a header row") from None
    if not columns:
        raise ToolboxError(f"{csv_file} is empty", "add a header row, e.g. image,label")
    return columns, rows


def _resolve(value: str, base: Path) -> Path:
    path = Path(value.strip())
    return path if path.is_absolute() else base / path


def _path_column(columns: list[str], rows: list[dict[str, str]], base: Path,
                 csv_file: Path) -> str:
    """The first column whose values name existing files (among the first rows)."""
    for column in columns:
        if any((row.get(column) or "").strip() and is_file(_resolve(row[column], base))
               for row in rows[:PROBE_ROWS]):
            return column
    raise ToolboxError(f"{csv_file}: no column names existing files under {base} "
                       f"(columns: {', '.join(columns)})",
                       "pass --path-column, or --data IMAGES_DIR with --labels FILE when the "
                       "paths are relative to another folder")


def _column(name: str, columns: list[str], flag: str, csv_file: Path) -> str:
    if name not in columns:
        raise unknown_name(f"column of {csv_file.name}", name, columns,
                           f"its columns: {', '.join(columns)}", param=flag)
    return name


def read_csv_labels(csv_file: str | Path, *, images_dir: str | Path | None = None,
                    path_column: str | None = None, label_column: str | None = None,
                    split_column: str | None = None) -> CsvLabels:
    """The labelled images `csv_file` names; relative paths are taken from `images_dir`, else
    from the CSV's own folder. Classes are the sorted distinct labels (as folder names are).

    Raises:
        ToolboxError: an unreadable table, no matching column, a path named twice, an empty
            label or split, or a split value other than train/val.
    """
    csv_file = Path(csv_file)
    columns, rows = _rows(csv_file)
    base = Path(images_dir) if images_dir is not None else csv_file.parent
    if images_dir is not None and not os.path.isdir(base):
        raise ToolboxError(f"no such images folder: {base}",
                           "--data names the folder the CSV's paths are relative to")
    paths = (_column(path_column, columns, "--path-column", csv_file) if path_column
             else _path_column(columns, rows, base, csv_file))
    labels = _column(label_column or DEFAULT_LABEL_COLUMN, columns, "--label-column", csv_file)
    split = _column(split_column, columns, "--split-column", csv_file) if split_column else None
    root = base.resolve()
    kept: list[tuple[Path, str, bool]] = []
    seen: dict[Path, int] = {}
    skipped: list[SkippedFile] = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        value = (row.get(paths) or "").strip()
        label = (row.get(labels) or "").strip()
        if not value:
            raise ToolboxError(f"{csv_file} line {line}: empty {paths!r}",
                               "give every row a file, or delete the row")
        if not label:
            raise ToolboxError(f"{csv_file} line {line}: empty label ({labels!r}) for {value}",
                               "label every row, or delete the rows you cannot label")
        path = _resolve(value, base).resolve()
        if path in seen:
            raise ToolboxError(f"{csv_file} lines {seen[path]} and {line} both name {value}",
                               "list each image once")
        seen[path] = line
        is_val = False
        if split is not None:
            word = (row.get(split) or "").strip().lower()
            if word not in SPLIT_VALUES:
                raise ToolboxError(f"{csv_file} line {line}: split {word!r} in {split!r} is "
                                   "not train or val", "use train or val in every row")
            is_val = SPLIT_VALUES[word]
        if not is_file(path):
            skipped.append(SkippedFile(shown_path(path, root), "file not found"))
            continue
        kept.append((path, label, is_val))
    if not kept:
        raise ToolboxError(f"{csv_file}: none of its {len(rows)} rows names an existing file "
                           f"under {base}", "check --path-column and where the paths start")
    classes = sorted({label for _, label, _ in kept})
    index = {name: i for i, name in enumerate(classes)}
    source = FileSource([p for p, _, _ in kept],
                        np.asarray([index[label] for _, label, _ in kept], dtype=np.int64),
                        classes, root)
    flags = np.asarray([v for _, _, v in kept], dtype=bool) if split is not None else None
    return CsvLabels(source, paths, labels, flags, skipped)
