"""Documents derived from a contract: the pydantic model, its JSON Schema, the printed
layout table, and the `lgw contract check|schema` commands that show them."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from gateway.cli import main
from schemas.contract import Contract, load_contract
from schemas.docs import print_layout
from tests.helpers import copybook

ORDER_CPY = copybook(
    "01  ORDER-REC.",
    "    05  ORDER-ID        PIC X(10).",
    "    05  STATUS          PIC X.",
    "        88  STATUS-OPEN     VALUE 'O'.",
    "        88  STATUS-CLOSED   VALUE 'C'.",
    "    05  AMOUNT          PIC S9(7)V99 COMP-3.",
    "    05  QTY             PIC 9(4).",
    "    05  CUSTOMER.",
    "        10  NAME        PIC X(20).",
    "        10  COUNTRY     PIC X(2).",
    "    05  ITEMS           OCCURS 3.",
    "        10  SKU         PIC X(8).",
    "        10  PRICE       PIC 9(5)V99.",
    "    05  FILLER          PIC X(5).",
)

ORDER_FIELDS: dict[str, Any] = {
    "ORDER-ID": {"required": True, "pattern": "^ORD[0-9]{7}$", "description": "Order reference."},
    "AMOUNT": {"required": True, "min": 0, "max": 100000},
    "COUNTRY": {"pattern": "^[A-Z]{2}$", "pii": True},
}


def write_contract(tmp_path: Path, cpy: str, fields: dict[str, Any] | None = None,
                   name: str = "orders", **record: Any) -> Path:
    (tmp_path / "ORDER.cpy").write_text(cpy)
    doc = {"contract": name, "version": 1,
           "record": {"format": "copybook", "copybook": "ORDER.cpy", "encoding": "cp037", **record},
           "fields": fields or {}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def orders(tmp_path: Path) -> Contract:
    return load_contract(write_contract(tmp_path, ORDER_CPY, ORDER_FIELDS))


def resolve(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an Optional property, with a $ref followed."""
    if "anyOf" in prop:
        branches = [b for b in prop["anyOf"] if b.get("type") != "null"]
        prop = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if "$ref" in prop:
        prop = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]
    return prop


def packed(value: int, nbytes: int) -> bytes:
    """COMP-3: two digits a byte, sign nibble C (+) or D (-) last."""
    digits = f"{abs(value):0{nbytes * 2 - 1}d}" + ("d" if value < 0 else "c")
    return bytes.fromhex(digits)


def order_bytes(order_id: str = "ORD0000001", status: str = "O", amount_cents: int = 12345) -> bytes:
    items = "".join(f"{sku:<8}{price:07d}" for sku, price in [("SKU1", 150), ("SKU2", 99999), ("", 0)])
    return (f"{order_id:<10}{status}".encode("cp037") + packed(amount_cents, 5)
            + f"0007{'ALICE':<20}GB{items}     ".encode("cp037"))


def decode_one(contract: Contract, raw: bytes) -> dict[str, Any]:
    matrix = np.frombuffer(raw, dtype=np.uint8).reshape(1, len(raw))
    return contract.spec.decoder().decode(matrix).table.to_pylist()[0]


# --------------------------------------------------------------------------- JSON Schema


def test_json_schema_mirrors_the_decoded_record(orders: Contract) -> None:
    schema = orders.json_schema()
    props = schema["properties"]
    assert schema["title"] == "OrdersV1"
    assert schema["additionalProperties"] is False
    assert list(props) == ["ORDER_ID", "STATUS", "AMOUNT", "QTY", "CUSTOMER", "ITEMS"]  # no FILLER
    assert resolve(schema, props["ORDER_ID"]) == props["ORDER_ID"]  # required: not Optional
    assert props["ORDER_ID"]["type"] == "string"
    assert props["ORDER_ID"]["maxLength"] == 10
    assert resolve(schema, props["QTY"])["type"] == "integer"
    assert resolve(schema, props["QTY"])["maximum"] == 9999  # PIC 9(4) holds no more


def test_json_schema_nests_groups_and_makes_occurs_arrays(orders: Contract) -> None:
    schema = orders.json_schema()
    customer = resolve(schema, schema["properties"]["CUSTOMER"])
    assert customer["type"] == "object"
    assert resolve(schema, customer["properties"]["NAME"])["maxLength"] == 20
    items = resolve(schema, schema["properties"]["ITEMS"])
    assert items["type"] == "array"
    assert items["minItems"] == items["maxItems"] == 3  # fixed OCCURS 3, no DEPENDING ON
    item = resolve(schema, items["items"])
    assert set(item["properties"]) == {"SKU", "PRICE"}


def test_json_schema_carries_contract_rules(orders: Contract) -> None:
    schema = orders.json_schema()
    props = schema["properties"]
    assert schema["required"] == ["ORDER_ID", "AMOUNT"]
    assert props["ORDER_ID"]["pattern"] == "^ORD[0-9]{7}$"
    assert props["ORDER_ID"]["description"] == "Order reference."
    assert resolve(schema, props["STATUS"])["enum"] == ["O", "C"]  # from the 88 levels
    customer = resolve(schema, props["CUSTOMER"])
    country = customer["properties"]["COUNTRY"]
    assert resolve(schema, country)["pattern"] == "^[A-Z]{2}$"
    assert country["x-pii"] is True
    assert country["x-cobol"]["offset"] == 40


def test_json_schema_of_an_occurs_depending_on_allows_fewer_items(tmp_path: Path) -> None:
    cpy = copybook(
        "01  BASKET.",
        "    05  N-ITEMS     PIC 9(1).",
        "    05  ITEM        PIC X(4) OCCURS 1 TO 5 DEPENDING ON N-ITEMS.",
    )
    schema = load_contract(write_contract(tmp_path, cpy)).json_schema()
    item = resolve(schema, schema["properties"]["ITEM"])
    assert (item["minItems"], item["maxItems"]) == (1, 5)


# --------------------------------------------------------------------------- model validation


def test_model_accepts_a_decoded_record(orders: Contract) -> None:
    record = decode_one(orders, order_bytes())
    model = orders.pydantic_model()
    parsed = model.model_validate(record)
    assert parsed.model_dump(by_alias=True) == record
    assert record["AMOUNT"] == Decimal("123.45")


def test_model_rejects_a_record_that_breaks_the_contract(orders: Contract) -> None:
    record = decode_one(orders, order_bytes(status="X", amount_cents=-5))
    record["CUSTOMER"]["NAME"] = "N" * 21
    record["ITEMS"] = record["ITEMS"] + record["ITEMS"][:1]
    del record["ORDER_ID"]
    record["SURPRISE"] = 1
    with pytest.raises(ValidationError) as err:
        orders.pydantic_model().model_validate(record)
    failed = {tuple(e["loc"]) for e in err.value.errors()}
    assert failed == {("ORDER_ID",), ("STATUS",), ("AMOUNT",), ("CUSTOMER", "NAME"), ("ITEMS",), ("SURPRISE",)}


def test_model_checks_pattern_and_numeric_enum(tmp_path: Path) -> None:
    cpy = copybook(
        "01  R.",
        "    05  CODE        PIC X(2).",
        "    05  GRADE       PIC 9(2).",
        "        88  PASS    VALUE 5 THRU 10.",
        "        88  SPECIAL VALUE 42.",
        "    05  KIND        PIC 9.",
    )
    contract = load_contract(write_contract(tmp_path, cpy, {"CODE": {"pattern": "^[A-Z]+$"},
                                                            "KIND": {"enum": [1, 3]}}))
    model = contract.pydantic_model()
    model.model_validate({"CODE": "AB", "GRADE": 7, "KIND": 3})
    model.model_validate({"CODE": None, "GRADE": 42, "KIND": None})
    for bad in ({"CODE": "a1"}, {"GRADE": 11}, {"KIND": 2}):
        with pytest.raises(ValidationError):
            model.model_validate(bad)
    grade = resolve(contract.json_schema(), contract.json_schema()["properties"]["GRADE"])
    assert {"enum": [42]} in grade["allOf"][0]["anyOf"]
    assert {"minimum": 5, "maximum": 10} in grade["allOf"][0]["anyOf"]


def test_text_88_thru_range_allows_values_in_collating_order(tmp_path: Path) -> None:
    cpy = copybook(
        "01  R.",
        "    05  BAND        PIC X.",
        "        88  MIDDLE  VALUE 'B' THRU 'D'.",
    )
    model = load_contract(write_contract(tmp_path, cpy)).pydantic_model()
    model.model_validate({"BAND": "C"})
    with pytest.raises(ValidationError, match="'B' THRU 'D'"):
        model.model_validate({"BAND": "E"})


def test_unsigned_fields_reject_negative_values(orders: Contract) -> None:
    with pytest.raises(ValidationError):
        orders.pydantic_model().model_validate({"ORDER_ID": "ORD0000001", "AMOUNT": 1, "QTY": -1})


def test_keys_that_clash_with_pydantic_names_still_validate(tmp_path: Path) -> None:
    doc = {"contract": "odd", "version": 2,
           "record": {"format": "fixed_width", "encoding": "ascii",
                      "fields": [{"name": "json", "type": "string", "length": 3},
                                 {"name": "model_id", "type": "integer", "length": 4}]},
           "fields": {"json": {"required": True}}}
    path = tmp_path / "odd.yaml"
    path.write_text(yaml.safe_dump(doc))
    model = load_contract(path).pydantic_model()
    parsed = model.model_validate({"json": "abc", "model_id": 7})
    assert parsed.model_dump(by_alias=True) == {"json": "abc", "model_id": 7}
    assert model.__name__ == "OddV2"


def test_model_is_built_once_per_contract(orders: Contract, tmp_path: Path) -> None:
    assert orders.pydantic_model() is orders.pydantic_model()
    again = load_contract(tmp_path / "orders.yaml")
    assert again.pydantic_model() is not orders.pydantic_model()


# --------------------------------------------------------------------------- layout table


def test_print_layout_lists_offsets_lengths_and_constraints(orders: Contract) -> None:
    out = io.StringIO()
    print_layout(orders, out)
    text = out.getvalue()
    rows = {line.split()[1]: line.split() for line in text.splitlines() if line.strip()[:2].isdigit()}
    assert rows["AMOUNT"][:5] == ["05", "AMOUNT", "11", "5", "16"]
    assert "PIC S9(7)V99 COMP-3" in text and "decimal(9,2)" in text
    assert rows["ITEMS"][2:5] == ["42", "45", "87"]  # 3 occurrences of 15 bytes
    assert "OCCURS 3 (15 B each)" in text
    assert "88 STATUS-OPEN='O'; 88 STATUS-CLOSED='C'" in text
    assert "required; pattern ^ORD[0-9]{7}$" in text  # brackets survive: markup is off
    assert "PII" in rows["COUNTRY"]
    assert "FILLER" in rows


def test_print_layout_is_plain_text_when_not_a_terminal(orders: Contract) -> None:
    out = io.StringIO()
    print_layout(orders, out)
    text = out.getvalue()
    assert "\x1b[" not in text
    assert text.isascii()
    assert all(line == line.rstrip() for line in text.splitlines())


def test_print_layout_ends_with_a_summary_naming_header_and_trailer(tmp_path: Path) -> None:
    cpy = copybook(
        "01  HDR.",
        "    05  HDR-TYPE    PIC X.",
        "    05  HDR-DATE    PIC 9(8).",
        "    05  FILLER      PIC X(3).",
        "01  DETAIL.",
        "    05  REC-TYPE    PIC X.",
        "    05  AMOUNT      PIC 9(5)V99.",
        "    05  FILLER      PIC X(4).",
        "01  TRL.",
        "    05  TRL-TYPE    PIC X.",
        "    05  TRL-COUNT   PIC 9(6).",
        "    05  FILLER      PIC X(5).",
    )
    path = write_contract(tmp_path, cpy, record_name="DETAIL",
                          header={"when": {"start": 1, "length": 1, "equals": "H"}, "record_name": "HDR"},
                          trailer={"when": {"start": 1, "length": 1, "equals": "T"}, "record_name": "TRL",
                                   "control": {"count": "TRL-COUNT"}})
    out = io.StringIO()
    print_layout(load_contract(path), out)
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("contract orders v1: encoding cp037, record format F, record length 12 bytes")
    assert "header HDR (bytes 0-1 = 'H')" in last
    assert "trailer TRL (bytes 0-1 = 'T') control count TRL-COUNT" in last
    assert "HDR-DATE" in out.getvalue()


# --------------------------------------------------------------------------- CLI


def test_cli_contract_check_prints_the_layout(orders: Contract, capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    code = main(["contract", "check", str(tmp_path / "orders.yaml")])
    out = capsys.readouterr().out
    assert code == 0
    assert "CUSTOMER" in out and "record length 92 bytes" in out


def test_cli_contract_schema_prints_the_json_schema(orders: Contract, capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    code = main(["contract", "schema", str(tmp_path / "orders.yaml")])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == orders.json_schema()


def test_cli_contract_check_fails_on_a_bad_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_contract(tmp_path, ORDER_CPY, {"NOPE": {"required": True}})
    code = main(["contract", "check", str(path)])
    assert code == 2
    assert "NOPE" in capsys.readouterr().err
