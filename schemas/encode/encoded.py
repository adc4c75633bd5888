"""What a field encoder gives back: the field's bytes for a column of values and, for
each value it could not write, a `Problem`.

Values that cannot be written (too long, too many digits, a character the code page
lacks, ...) do not stop the batch: the field is filled as if null and the problem is
reported per row, so callers can route those records to rejects.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from schemas.layout import Category, Elementary, Usage


class Problem(IntEnum):
    OK = 0
    TOO_LONG = 1
    BAD_CHAR = 2
    TOO_MANY_DIGITS = 3
    NEGATIVE_UNSIGNED = 4
    TOO_MANY_DECIMALS = 5
    NOT_A_NUMBER = 6
    OUT_OF_RANGE = 7
    UNSUPPORTED = 8


def problem_text(problem: Problem, f: Elementary) -> str:
    """The reason, as the contract author reads it, that a value of `f` was not written."""
    pic = f"PIC {f.picture.text}" if f.picture else f"USAGE {f.usage.value}"
    if problem == Problem.TOO_MANY_DIGITS:
        return f"value has more digits than {pic} holds"
    if problem == Problem.NEGATIVE_UNSIGNED:
        return f"negative value in an unsigned field ({pic})"
    if problem == Problem.TOO_MANY_DECIMALS:
        return f"value has more decimal places than {pic} holds ({max(f.scale, 0)})"
    if problem == Problem.NOT_A_NUMBER:
        return "not a finite number"
    if problem == Problem.OUT_OF_RANGE and f.category == Category.FLOAT:
        return f"value out of range for {'COMP-1' if f.usage == Usage.FLOAT else 'COMP-2'}"
    if problem == Problem.OUT_OF_RANGE:
        kind = "signed" if f.signed else "unsigned"
        return f"value out of range for a {f.size}-byte {kind} {f.usage.value} field"
    if problem == Problem.UNSUPPORTED:
        return f"{pic}: this editing is not supported by the encoder"
    return "value cannot be encoded"


@dataclass
class Encoded:
    """One field's bytes for M values, plus a Problem code per value (None: all fine).
    A value with a problem is encoded as if it were null (spaces, or zero for binary,
    packed and float fields)."""

    block: np.ndarray  # uint8 (M, size)
    problems: np.ndarray | None = None
    details: dict[int, str] | None = None  # row -> specific reason text, where it helps
