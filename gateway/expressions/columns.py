"""Finding a field's column in the table an expression runs on."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


class MissingColumn(LookupError):
    """A field the expression uses is not a column of the table it runs on."""


def column(table: pa.Table, name: str) -> Any:
    """The column for a field name: a top-level key, a dotted path through structs, or a
    key unique among the nested leaves."""
    names = table.column_names
    if name in names:
        return table.column(name)
    path = name.split(".") if "." in name else _leaf_path(table.schema, name)
    if not path or path[0] not in names:
        raise MissingColumn(name)
    col = table.column(path[0])
    for part in path[1:]:
        if not pa.types.is_struct(col.type) or col.type.get_field_index(part) < 0:
            raise MissingColumn(name)
        col = pc.struct_field(col, part)
    return col


def _leaf_path(schema: pa.Schema, name: str) -> list[str] | None:
    hits: list[list[str]] = []

    def walk(prefix: list[str], t: pa.DataType) -> None:
        for i in range(t.num_fields):
            f = t.field(i)
            if pa.types.is_struct(f.type):
                walk([*prefix, f.name], f.type)
            elif f.name == name:
                hits.append([*prefix, f.name])

    for f in schema:
        if pa.types.is_struct(f.type):
            walk([f.name], f.type)
    return hits[0] if len(hits) == 1 else None
