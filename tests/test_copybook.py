"""The copybook parser: layouts, offsets and errors that name the line."""

from __future__ import annotations

import pytest

from schemas.copybook import parse_copybook
from schemas.errors import CopybookSyntaxError
from schemas.layout import Category, Elementary, Usage
from tests.helpers import copybook


def leaf(layout, name: str) -> Elementary:  # type: ignore[no-untyped-def]
    node = layout.find(name)
    assert isinstance(node, Elementary)
    return node


def test_offsets_follow_usage_sizes() -> None:
    layout = parse_copybook(copybook(
        "01  REC.",
        "    05  A     PIC X(3).",
        "    05  B     PIC S9(4) COMP.",
        "    05  C     PIC S9(9) COMP.",
        "    05  D     PIC S9(18) BINARY.",
        "    05  E     PIC S9(7)V99 COMP-3.",
        "    05  F     PIC 9(4) COMP-3U.",
        "    05  G     COMP-1.",
        "    05  H     COMP-2.",
        "    05  I     PIC S9(5) SIGN LEADING SEPARATE.",
        "    05  J     PIC 9(1) COMP.",
    ))
    sizes = {n.name: (n.offset, n.size) for n in layout.elementary()}
    assert sizes == {"A": (0, 3), "B": (3, 2), "C": (5, 4), "D": (9, 8), "E": (17, 5), "F": (22, 2),
                     "G": (24, 4), "H": (28, 8), "I": (36, 6), "J": (42, 2)}
    assert layout.record_length == 44


def test_redefines_share_bytes_and_the_longer_view_sets_the_size() -> None:
    layout = parse_copybook(copybook(
        "01  REC.",
        "    05  A     PIC X(4).",
        "    05  B     REDEFINES A PIC 9(6).",
        "    05  C     PIC X.",
    ))
    assert (leaf(layout, "B").offset, leaf(layout, "C").offset) == (0, 6)
    assert leaf(layout, "A").in_redefines and leaf(layout, "B").in_redefines


def test_occurs_depending_on_reserves_the_maximum() -> None:
    layout = parse_copybook(copybook(
        "01  REC.",
        "    05  N        PIC 9(2).",
        "    05  ITEM     OCCURS 1 TO 5 TIMES DEPENDING ON N.",
        "        10  CODE PIC X(3).",
        "    05  TAIL     PIC X.",
    ))
    item = layout.find("ITEM")
    assert (item.occurs, item.occurs_min, item.depending_on, item.size) == (5, 1, "N", 3)
    assert leaf(layout, "TAIL").offset == 17


def test_88_levels_become_allowed_values() -> None:
    layout = parse_copybook(copybook(
        "01  REC.",
        "    05  STATUS  PIC X.",
        "        88  ACTIVE   VALUE 'A'.",
        "        88  CLOSED   VALUES ARE 'C' 'X'.",
        "    05  SCORE   PIC 99.",
        "        88  GOOD     VALUE 80 THRU 99.",
    ))
    assert leaf(layout, "STATUS").conditions == {"ACTIVE": ["A"], "CLOSED": ["C", "X"]}
    assert leaf(layout, "SCORE").conditions == {"GOOD": [(80, 99)]}


def test_pictures_classify_and_scale() -> None:
    layout = parse_copybook(copybook(
        "01  REC.",
        "    05  P1  PIC S9(4)V99.",
        "    05  P2  PIC 9(3)PP.",
        "    05  P3  PIC SVPP9(3).",
        "    05  P4  PIC S9(4).9(4).",
        "    05  P5  PIC ZZZ9.99-.",
        "    05  P6  PIC A(5).",
    ))
    p = {n.name: n for n in layout.elementary()}
    assert (p["P1"].digits, p["P1"].scale, p["P1"].signed, p["P1"].size) == (6, 2, True, 6)
    assert (p["P2"].scale, p["P2"].size) == (-2, 3)
    assert (p["P3"].scale, p["P3"].size) == (5, 3)
    assert (p["P4"].category, p["P4"].scale, p["P4"].size) == (Category.EDITED, 4, 9)
    assert (p["P5"].category, p["P5"].size, p["P5"].signed) == (Category.EDITED, 8, True)
    assert p["P6"].category == Category.TEXT


def test_fixed_format_ignores_sequence_area_comments_and_column_73_on() -> None:
    text = (
        "000100 01  REC.                                                          SEQ00001\n"
        "000200*    a comment line\n"
        "000300     05  A  PIC X(2).                                              SEQ00003\n"
        "000400     05  B  PIC 9(3)                                               SEQ00004\n"
        "000500            COMP-3.                                                SEQ00005\n"
    )
    layout = parse_copybook(text)
    assert [(n.name, n.size) for n in layout.elementary()] == [("A", 2), ("B", 2)]
    assert leaf(layout, "B").usage == Usage.PACKED


def test_free_format_and_tabs_are_accepted() -> None:
    layout = parse_copybook("01 REC.\n  05 A PIC X(2).\n\t05 B PIC 9(2).\n")
    assert [n.name for n in layout.elementary()] == ["A", "B"]


def test_group_usage_is_inherited() -> None:
    layout = parse_copybook(copybook("01  REC.", "    05  AMTS COMP-3.", "        10  A PIC S9(5).",
                                     "        10  B PIC S9(3)."))
    assert [n.usage for n in layout.elementary()] == [Usage.PACKED, Usage.PACKED]


@pytest.mark.parametrize(("text", "line", "fragment"), [
    (copybook("01  REC.", "    05  A  PIC X(3)", "    05  B  PIC X."), 3, "period missing"),
    (copybook("01  REC.", "    05  A  PIC Q(3)."), 2, "unsupported picture symbol"),
    (copybook("01  REC.", "    05  A  PIC X(3) COMP-7."), 2, "unexpected word 'COMP-7'"),
    (copybook("01  REC.", "    05  A  REDEFINES NOPE PIC X."), None, "REDEFINES NOPE"),
    (copybook("01  REC.", "    05  A  PIC X(3).", "    05  B  OCCURS 3 DEPENDING ON NOPE.",
              "        10  C PIC X."), 3, "NOPE, which is not defined"),
    (copybook("01  REC.", "    05  A  PIC X(3).", "    05  G."), 3, "no PIC and no subordinate items"),
    (copybook("01  REC.", "    05  A  PIC X(3)."), None, None),
])
def test_syntax_errors_name_the_line(text: str, line: int | None, fragment: str | None) -> None:
    if fragment is None:
        parse_copybook(text)
        return
    with pytest.raises(CopybookSyntaxError) as err:
        parse_copybook(text, source="T.cpy")
    assert fragment in str(err.value)
    if line is not None:
        assert f"T.cpy:{line}:" in str(err.value)
