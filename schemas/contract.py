"""Schema contracts: a versioned YAML file that says how a legacy record is laid out and
what its fields mean. From it come the decoder/encoder, validation, the pydantic model
and the JSON Schema. The YAML is read into pydantic config models (data); `Contract` is
the runtime object built from them once.

    contract: card_txn
    version: 1
    record:
      format: copybook            # copybook | fixed_width
      copybook: copybooks/CARDTXN.cpy
      record_name: CARD-TXN       # which 01 record is the detail (when there are several)
      encoding: cp037
      record_format: F            # F | V | VB | D
      header:  {when: {start: 1, length: 1, equals: "H"}, record_name: CARD-HDR}
      trailer: {when: {start: 1, length: 1, equals: "T"}, record_name: CARD-TRL,
                control: {count: TRL-COUNT, sum: {TXN-AMOUNT: TRL-AMOUNT-TOTAL}}}
    fields:
      TXN-AMOUNT: {required: true, min: 0}
      COUNTRY:    {pattern: "^[A-Z]{2}$"}
      PAN:        {pii: mask}         # personal data: clear | mask | hash | drop (true: mask)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.codepages import CodePage, canonical_name, code_page
from schemas.copybook import check_limits, load_copybook, parse_copybook
from schemas.decoder import DecodedBatch, RecordDecoder, column_by_path
from schemas.errors import ContractError
from schemas.fields import DecodeOptions
from schemas.layout import (
    DEFAULT_LIMITS,
    USAGE_WORDS,
    Elementary,
    Group,
    Layout,
    Limits,
    Node,
    Picture,
    assign_offsets,
)
from schemas.records import DEFAULT_BATCH_SIZE, Framing, ReadPosition
from schemas.reject_rate import DEFAULT_REJECT_LIMIT, RejectLimit, guard_rejects
from schemas.stream import DecodedChunk, Reject, decode_file
from schemas.yaml_loader import load_yaml

# --------------------------------------------------------------------------- config models


# What a field marked pii becomes wherever data leaves the gateway (gateway.governance.pii)
PiiAction = Literal["clear", "mask", "hash", "drop"]
PII_ACTIONS: tuple[str, ...] = ("clear", "mask", "hash", "drop")

class _Strict(BaseModel):
    # NaN and infinities are never a bound, an allowed value or a size: refuse `.nan` / `.inf`
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class FieldSpec(_Strict):
    """An explicit field (instead of a copybook): a PIC and usage, or a type and length."""

    name: str
    pic: str | None = None
    usage: str = "DISPLAY"
    type: Literal["string", "integer", "decimal"] | None = None
    length: int | None = Field(default=None, ge=1)
    digits: int | None = Field(default=None, ge=1, le=38)
    scale: int = Field(default=0, ge=0, le=37)
    offset: int | None = Field(default=None, ge=0)
    sign: Literal["leading", "trailing", "leading_separate", "trailing_separate"] | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> FieldSpec:
        if self.pic is None and self.type is None:
            raise ValueError(f"field {self.name}: give `pic` (and `usage`) or `type` with `length`")
        if self.usage.upper() not in USAGE_WORDS:
            raise ValueError(f"field {self.name}: unknown usage {self.usage!r}")
        return self

    def picture(self) -> str:
        if self.pic:
            return self.pic
        if self.type == "string":
            if not self.length:
                raise ValueError(f"field {self.name}: type string needs `length`")
            return f"X({self.length})"
        digits = self.digits or self.length
        if not digits:
            raise ValueError(f"field {self.name}: type {self.type} needs `digits` or `length`")
        ints = digits - self.scale
        return f"S9({ints})" + (f"V9({self.scale})" if self.scale else "")


class When(_Strict):
    """Record-type discriminator: bytes [start, start+length) (1-based start) equal a literal."""

    start: int | None = Field(default=None, ge=1)
    offset: int | None = Field(default=None, ge=0)
    length: int = Field(ge=1)
    equals: str | list[str]

    @model_validator(mode="after")
    def _one_position(self) -> When:
        if (self.start is None) == (self.offset is None):
            found = "both" if self.start is not None else "neither"
            raise ValueError(f"give `start` (1-based) or `offset` (0-based) of the bytes to compare, found {found}")
        return self

    @property
    def zero_based(self) -> int:
        if self.offset is not None:
            return self.offset
        assert self.start is not None  # _one_position: one of the two is given
        return self.start - 1


class Control(_Strict):
    count: str | None = None  # trailer field holding the number of detail records
    sum: dict[str, str] = Field(default_factory=dict)  # detail field -> trailer field with its total
    on_mismatch: Literal["reject_file", "warn"] = "reject_file"


class RecordTypeSpec(_Strict):
    when: When
    record_name: str | None = None  # a 01 record of the contract's copybook
    copybook: str | None = None
    fields: list[FieldSpec] | None = None
    control: Control | None = None


class RdwSpec(_Strict):
    endian: Literal["big", "little"] | None = None
    includes_header: bool | None = None


class LimitsConfig(_Strict):
    """`record.limits`: how large a record, a PIC item, an OCCURS expansion and a text line
    may be; checked before anything that size is allocated (defaults: `Limits`)."""

    record_bytes: int = Field(default=DEFAULT_LIMITS.record_bytes, ge=1)
    field_bytes: int = Field(default=DEFAULT_LIMITS.field_bytes, ge=1)
    occurs: int = Field(default=DEFAULT_LIMITS.occurs, ge=1)
    line_bytes: int = Field(default=DEFAULT_LIMITS.line_bytes, ge=1)

    def limits(self) -> Limits:
        return Limits(**self.model_dump())


class RecordConfig(_Strict):
    format: Literal["copybook", "fixed_width"] = "copybook"
    copybook: str | None = None
    record_name: str | None = None
    fields: list[FieldSpec] | None = None
    encoding: str = "cp037"
    record_format: Literal["F", "V", "VB", "D"] = "F"
    record_length: int | None = Field(default=None, ge=1)
    rdw: RdwSpec = Field(default_factory=RdwSpec)
    trim: Literal["both", "left", "right", "none"] = "both"
    float_format: Literal["ibm", "ieee", "ibm-le", "ieee-le"] = "ibm"
    control_chars: Literal["drop", "keep"] = "drop"  # ascii/utf-8 text: bytes 0x00-0x1F (as Cobrix: drop)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    header: RecordTypeSpec | None = None
    trailer: RecordTypeSpec | None = None

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        return canonical_name(v)

    @model_validator(mode="after")
    def _layout_source(self) -> RecordConfig:
        if self.format == "copybook" and not self.copybook:
            raise ValueError("record.format copybook needs record.copybook (a path)")
        if self.format == "fixed_width" and not self.fields:
            raise ValueError("record.format fixed_width needs record.fields")
        return self


class FieldRules(_Strict):
    required: bool = False
    min: Decimal | None = None
    max: Decimal | None = None
    pattern: str | None = None
    enum: list[str | int | float] | None = Field(default=None, alias="enum")
    # personal data: `true` (masked wherever data leaves the gateway) or the policy itself,
    # `clear | mask | hash | drop` (gateway.governance.pii); normalised to `pii` + `pii_policy`
    pii: bool = False
    pii_policy: PiiAction | None = None
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _pii_policy(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("pii"), str):
            data = dict(data)
            action = data["pii"]
            if action not in PII_ACTIONS:
                raise ValueError(f"pii: expected true, false or one of {', '.join(PII_ACTIONS)}, found {action!r}")
            data["pii"], data["pii_policy"] = True, action
        return data

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)  # the fast path (schemas.patterns) reads the pattern with Python's parser
            except re.error as exc:
                raise ValueError(f"pattern {v!r} does not compile: {exc}") from None
            try:  # validation runs RE2 (Arrow's match_substring_regex), which refuses more
                pc.match_substring_regex(pa.nulls(1, pa.string()), v)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"pattern {v!r} does not compile for RE2, the engine validation runs: "
                                 f"{str(exc).removeprefix('Invalid regular expression: ')} (lookaround and "
                                 "backreferences are not supported)") from None
        return v


class ModelSection(_Strict):
    """The keys `model:` may hold; what is under `features` and `outputs` is checked by
    gateway.features and gateway.outputs, with the rest of the scoring setup."""

    name: str | None = None
    version: int | str | None = None
    description: str | None = None
    features: Any = None
    outputs: Any = None


class ContractConfig(_Strict):
    contract: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    version: int = Field(ge=1)
    description: str | None = None
    record: RecordConfig
    fields: dict[str, FieldRules] = Field(default_factory=dict)
    model: dict[str, Any] | None = None  # the scoring section (issue 3 builds on it)
    fallback: list[dict[str, Any]] | None = None

    @field_validator("model")
    @classmethod
    def _known_model_keys(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        # kept a plain mapping for its readers; its keys are checked like everywhere else
        if v is not None:
            ModelSection.model_validate(v)
        return v


# --------------------------------------------------------------------------- runtime


@dataclass(frozen=True)
class RecordSpec:
    """What the codecs need for one record layout: layout, code page, framing, options."""

    layout: Layout
    page: CodePage
    framing: Framing
    options: DecodeOptions

    @classmethod
    def from_layout(cls, layout: Layout, *, encoding: str = "cp037", record_format: str = "F",
                    record_length: int | None = None, rdw_endian: str | None = None,
                    rdw_includes_header: bool | None = None, trim: str = "both",
                    float_format: str = "ibm", control_chars: str = "drop",
                    limits: Limits = DEFAULT_LIMITS) -> RecordSpec:
        page = code_page(encoding)
        length = record_length or layout.record_length
        if length > limits.record_bytes:
            raise ContractError(f"record length {length:,} is over the record limit of {limits.record_bytes:,} "
                                "bytes (record.limits.record_bytes, --max-record-bytes)")
        width = length if record_format == "F" else max(length, layout.record_length)
        framing = Framing(record_format, width, rdw_endian, rdw_includes_header, pad_byte=page.space,
                          max_line_bytes=limits.line_limit(width))
        return cls(layout, page, framing, DecodeOptions(trim=trim, float_format=float_format,
                                                        keep_control_chars=control_chars == "keep"))

    def decoder(self) -> RecordDecoder:
        return RecordDecoder(self.layout, self.page, self.options)

    def decode_file(self, path: str | os.PathLike[str], batch_size: int = DEFAULT_BATCH_SIZE, *,
                    reject_limit: RejectLimit = DEFAULT_REJECT_LIMIT,
                    decoder: RecordDecoder | None = None) -> Iterator[DecodedChunk]:
        """`decoder`: another decoder of this layout (one reporting every REDEFINES view, say);
        the reject rate counts only the errors of each record's own view."""
        chunks = decode_file(path, decoder or self.decoder(), self.framing, batch_size,
                             first_chunk_records=reject_limit.first_chunk())
        return guard_rejects(chunks, reject_limit, f"{path} (layout {self.layout.name})")


@dataclass
class RecordType:
    role: str  # header | trailer
    spec: RecordSpec
    offset: int
    literals: list[bytes]
    control: Control | None = None

    def matches(self, matrix: np.ndarray) -> np.ndarray:
        n = len(self.literals[0])
        window = matrix[:, self.offset: self.offset + n]
        hit = np.zeros(matrix.shape[0], dtype=bool)
        for lit in self.literals:
            hit |= (window == np.frombuffer(lit, dtype=np.uint8)[None, :]).all(axis=1)
        return hit


@dataclass
class ControlReport:
    """Header/trailer content and the control-total verdict for one file."""

    header: dict[str, Any] | None = None
    trailer: dict[str, Any] | None = None
    details: int = 0
    sums: dict[str, Decimal] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"control": {"ok": self.ok, "details": self.details, "checked": self.checked,
                            "problems": self.problems, "header": self.header, "trailer": self.trailer}}

    def running_totals(self) -> dict[str, Any]:
        """What a resumed read needs of the records before its start (for a checkpoint):
        header and trailer as read so far, the detail count and the sums (exact, as text)."""
        return {"header": self.header, "trailer": self.trailer, "details": self.details,
                "sums": {k: str(v) for k, v in self.sums.items()}}

    @classmethod
    def resumed(cls, totals: dict[str, Any]) -> ControlReport:
        return cls(header=totals.get("header"), trailer=totals.get("trailer"), details=int(totals["details"]),
                   sums={k: Decimal(v) for k, v in totals.get("sums", {}).items()})


class Contract:
    """A loaded, validated contract."""

    def __init__(self, config: ContractConfig, base_dir: Path, source: str = "<contract>") -> None:
        self.config = config
        self.base_dir = base_dir
        self.source = source
        rec = config.record
        self.limits = rec.limits.limits()
        self.layout = self._layout(rec.copybook, rec.fields, rec.record_name)
        self.spec = self._spec(self.layout)
        self.header = self._record_type("header", rec.header, self.spec)
        self.trailer = self._record_type("trailer", rec.trailer, self.spec)
        self.rules = self._bind_rules()

    # ---- identity
    @property
    def name(self) -> str:
        return self.config.contract

    @property
    def version(self) -> int:
        return self.config.version

    # ---- construction
    def _layout(self, copybook: str | None, fields: list[FieldSpec] | None, record_name: str | None) -> Layout:
        if fields:
            return layout_from_fields(fields, self.limits)
        assert copybook is not None
        path = (self.base_dir / copybook).resolve()
        if not path.is_file():
            raise ContractError(f"{self.source}: copybook {copybook} not found (looked in {path})")
        layout = load_copybook(path, limits=self.limits)
        return select_record(layout, record_name) if record_name else layout

    def _spec(self, layout: Layout, **overrides: Any) -> RecordSpec:
        rec = self.config.record
        kw: dict[str, Any] = dict(encoding=rec.encoding, record_format=rec.record_format,
                                  record_length=rec.record_length, rdw_endian=rec.rdw.endian,
                                  rdw_includes_header=rec.rdw.includes_header, trim=rec.trim,
                                  float_format=rec.float_format, control_chars=rec.control_chars,
                                  limits=self.limits)
        kw.update(overrides)
        return RecordSpec.from_layout(layout, **kw)

    def _record_type(self, role: str, cfg: RecordTypeSpec | None, detail: RecordSpec) -> RecordType | None:
        """A header/trailer type read with the detail spec's code page and framing."""
        if cfg is None:
            return None
        rec = self.config.record
        if cfg.fields:
            layout = layout_from_fields(cfg.fields, self.limits)
        else:
            layout = self._layout(cfg.copybook or rec.copybook, None, cfg.record_name)
        spec = replace(detail, layout=layout)
        literals = cfg.when.equals if isinstance(cfg.when.equals, list) else [cfg.when.equals]
        try:
            encoded = [detail.page.encode_text(s) for s in literals]
        except ValueError as exc:
            raise ContractError(f"{self.source}: record.{role}.when.equals: {exc}") from None
        if any(len(e) != cfg.when.length for e in encoded):
            raise ContractError(f"{self.source}: record.{role}.when: `equals` must be {cfg.when.length} bytes long")
        if cfg.control:
            for name in [cfg.control.count, *cfg.control.sum.values()]:
                if name:
                    _find(layout, name, f"record.{role}.control")
            for name in cfg.control.sum:
                _find(self.layout, name, f"record.{role}.control.sum")
        return RecordType(role, spec, cfg.when.zero_based, encoded, cfg.control)

    def _bind_rules(self) -> dict[str, tuple[Elementary, FieldRules]]:
        bound: dict[str, tuple[Elementary, FieldRules]] = {}
        for name, rules in self.config.fields.items():
            node = _find(self.layout, name, "fields")
            if not isinstance(node, Elementary):
                raise ContractError(f"{self.source}: fields.{name}: constraints apply to elementary fields, "
                                    f"{node.name} is a group")
            if any(a.occurs for a in (node, *node.ancestors())):
                raise ContractError(f"{self.source}: fields.{name}: constraints on OCCURS items are not supported")
            if (rules.min is not None or rules.max is not None) and node.is_text:
                raise ContractError(f"{self.source}: fields.{name}: min/max need a numeric field, "
                                    f"{node.name} is PIC {node.picture.text if node.picture else '?'}")
            if node.path in bound:  # TXN-PAN and TXN_PAN: one field, and the second would replace the first
                first = next(k for k in self.config.fields if _find(self.layout, k, "fields").path == node.path)
                raise ContractError(f"{self.source}: fields.{name}: names the same field as fields.{first} "
                                    f"({node.path}); give its constraints once")
            bound[node.path] = (node, rules)
        for node in self.layout.elementary():  # 88-level names become allowed values
            if (node.conditions and node.path not in bound and not node.in_redefines
                    and not any(a.occurs for a in (node, *node.ancestors()))):
                bound[node.path] = (node, FieldRules())
        return bound

    # ---- codec entry points
    def record_spec(self, **overrides: Any) -> RecordSpec:
        return self._spec(self.layout, **overrides) if overrides else self.spec

    def decode_file(self, path: str | os.PathLike[str], spec: RecordSpec | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, *, start: ReadPosition | None = None,
                    report: ControlReport | None = None, reject_limit: RejectLimit = DEFAULT_REJECT_LIMIT,
                    name: str | None = None, records: int | None = None) -> Iterator[DecodedChunk]:
        """Detail records that pass decoding and validation; rejects alongside. Header and
        trailer records are split off by their discriminator and checked at the end:
        `report` (pass one to read it) then holds the control totals verdict. A resumed read
        passes the chunk end it resumes at (`start`) and the report of the records before it. A reject
        rate beyond `reject_limit` stops the read (InputFormatError naming the file as
        `name`, default its path). `records`: stop after this many (a partition of a
        fixed-length file; the control totals are then the caller's to combine and check)."""
        from schemas.validate import validate_chunk

        spec = spec or self.spec
        if spec is not self.spec:  # options overridden: header/trailer follow the same code page
            self.header = self._record_type("header", self.config.record.header, spec)
            self.trailer = self._record_type("trailer", self.config.record.trailer, spec)
        decoder = spec.decoder()
        report = report if report is not None else ControlReport()
        # the encoding was sniffed on the first chunk when the read began
        def validated() -> Iterator[DecodedChunk]:
            for dc in decode_file(path, _SplitDecoder(self, decoder, report), spec.framing, batch_size,
                                  check_encoding=start is None, start=start,
                                  first_chunk_records=reject_limit.first_chunk() if start is None else None,
                                  records=records):
                validate_chunk(self, dc)
                yield dc

        shown = f"{name or path} (contract {self.name} v{self.version})"
        yield from guard_rejects(validated(), reject_limit, shown)
        if records is None:
            self._finish_control(report)

    def _finish_control(self, report: ControlReport) -> None:
        if self.trailer is None or self.trailer.control is None:
            return
        ctl = self.trailer.control
        if report.trailer is None:
            report.problems.append("trailer record missing: control totals cannot be checked")
            return
        if ctl.count:
            want = _lookup(report.trailer, _find(self.trailer.spec.layout, ctl.count, "control").path)
            report.checked.append("count")
            if want is None or int(want) != report.details:
                report.problems.append(f"record count: trailer {ctl.count} says {want}, file has {report.details}")
        for detail_field, trailer_field in ctl.sum.items():
            want = _lookup(report.trailer, _find(self.trailer.spec.layout, trailer_field, "control").path)
            got = report.sums.get(detail_field, Decimal(0))
            report.checked.append(f"sum {detail_field}")
            if want is None or Decimal(str(want)) != got:
                report.problems.append(f"hash total of {detail_field}: trailer {trailer_field} says {want}, "
                                       f"records add up to {got}")

    def rejects_file(self, report: ControlReport | None) -> bool:
        """Whether a file read with this `report` is rejected whole (its control totals
        do not match and the trailer says `on_mismatch: reject_file`)."""
        ctl = self.trailer.control if self.trailer else None
        return bool(report and not report.ok and ctl and ctl.on_mismatch == "reject_file")

    def file_report(self, report: ControlReport | None) -> list[str]:
        import json

        r = report
        if r is None or (self.header is None and self.trailer is None):
            return []
        return [json.dumps(r.to_json(), default=str, ensure_ascii=False)]

    # ---- documents
    def pydantic_model(self) -> type[BaseModel]:
        from schemas.docs import pydantic_model

        return pydantic_model(self)

    def json_schema(self) -> dict[str, Any]:
        return self.pydantic_model().model_json_schema()


class _SplitDecoder:
    """Wraps the detail decoder: routes header/trailer rows to their own layouts and
    accumulates control totals; the table it returns holds the detail records only."""

    def __init__(self, contract: Contract, detail: RecordDecoder, report: ControlReport) -> None:
        self.contract = contract
        self.detail = detail
        self.report = report
        self.layout = detail.layout

    def decode(self, matrix: np.ndarray, lengths: np.ndarray | None = None) -> DecodedBatch:
        c = self.contract
        control = np.zeros(matrix.shape[0], dtype=bool)
        for rt in (c.header, c.trailer):
            if rt is None:
                continue
            hit = rt.matches(matrix)
            for row in np.flatnonzero(hit):
                one = rt.spec.decoder().decode(matrix[row: row + 1], None if lengths is None else lengths[row: row + 1])
                setattr(self.report, rt.role, one.table.to_pylist()[0])
            control |= hit
        if not control.any():
            batch = self.detail.decode(matrix, lengths)
        else:
            keep = np.flatnonzero(~control)
            batch = self.detail.decode(matrix[keep], None if lengths is None else lengths[keep])
            for e in batch.errors:
                e.rows = keep[e.rows]
            batch = DecodedBatch(batch.table, batch.errors)
            batch.source_rows = keep
        self.report.details += batch.num_rows
        ctl = c.trailer.control if c.trailer else None
        if ctl:
            for name in ctl.sum:
                col = column_by_path(batch.table, _find(self.layout, name, "control").path)
                total = pc.sum(col).as_py()
                if total is not None:
                    self.report.sums[name] = self.report.sums.get(name, Decimal(0)) + Decimal(str(total))
        return batch


def _find(layout: Layout, name: str, where: str) -> Node:
    try:
        return layout.find(name)
    except ContractError as exc:
        raise ContractError(f"{where}: {exc}") from None


def _lookup(record: dict[str, Any], path: str) -> Any:
    parts = path.split(".")
    while parts and parts[0] not in record:
        parts = parts[1:]
    value: Any = record
    for p in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(p)
    return value


def select_record(layout: Layout, record_name: str) -> Layout:
    """The layout of one 01 record of a multi-record copybook, at offset 0."""
    want = record_name.replace("-", "_").upper()
    for child in layout.root.children:
        if child.key.upper() == want:
            root = Group(name="ROOT", level=0, children=[child])
            child.parent = root
            child.redefines = None
            child.redefined = False
            assign_offsets(root)
            return Layout(root=root, name=child.key)
    names = ", ".join(c.name for c in layout.root.children)
    raise ContractError(f"record {record_name} is not a 01 record of the copybook (it has {names})")


def layout_from_fields(fields: list[FieldSpec], limits: Limits = DEFAULT_LIMITS) -> Layout:
    """A flat layout from explicit fields; given offsets leave FILLER gaps, overlaps fail."""
    root = Group(name="ROOT", level=0)
    pos = 0
    filler = 0
    for spec in fields:
        try:
            pic = Picture.parse(spec.picture(), limits)
        except (ContractError, ValueError) as exc:
            raise ContractError(f"record.fields.{spec.name}: {exc}") from None
        node = Elementary(name=spec.name, level=1, picture=pic, usage=USAGE_WORDS[spec.usage.upper()])
        if spec.sign:
            node.sign_leading = spec.sign.startswith("leading")
            node.sign_separate = spec.sign.endswith("separate")
        if spec.offset is not None:
            if spec.offset < pos:
                raise ContractError(f"record.fields.{spec.name}: offset {spec.offset} overlaps the previous "
                                    f"field, which ends at {pos}")
            if spec.offset > pos:
                filler += 1
                gap = Elementary(name="FILLER", level=1, picture=Picture.parse(f"X({spec.offset - pos})", limits))
                gap.parent = root
                root.children.append(gap)
        node.parent = root
        root.children.append(node)
        assign_offsets(root)
        if spec.length is not None and spec.pic is not None and node.size != spec.length:
            raise ContractError(f"record.fields.{spec.name}: PIC {spec.pic} {spec.usage} takes {node.size} bytes, "
                                f"length says {spec.length}")
        pos = root.size
    assign_offsets(root)
    check_limits(root, limits, "record.fields")
    return Layout(root=root, name="RECORD")


def load_contract(path: str | os.PathLike[str], *, limits: dict[str, int] | None = None) -> Contract:
    """The contract at `path`: layout, fields and every section's shape checked. The
    scoring sections (`model:`, `fallback:`) are compiled by the gateway's expression engine,
    which schemas must not import: whatever scores or pipelines loads through
    `gateway.contract_scoring.load_scoring_contract`, which calls this and then checks them.
    `limits`: entries of `record.limits` to override (command-line options)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ContractError(f"cannot read contract {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ContractError(f"contract {p}: expected UTF-8 YAML text; byte {exc.start} is not UTF-8") from None
    return parse_contract(text, base_dir=p.parent, source=str(p), limits=limits)


def parse_contract(text: str, *, base_dir: Path | None = None, source: str = "<contract>",
                   limits: dict[str, int] | None = None) -> Contract:
    raw = load_yaml(text, source, ContractError)
    if not isinstance(raw, dict):
        raise ContractError(f"{source}: expected a YAML mapping with contract, version, record; "
                            f"found {type(raw).__name__}")
    try:
        config = ContractConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key (a misspelling would be ignored, so it is refused)"
        raise ContractError(f"{source}: {loc}: {msg}{more}") from None
    if limits:
        config.record.limits = config.record.limits.model_copy(update=limits)
    return Contract(config, base_dir or Path.cwd(), source)


__all__ = ["Contract", "ContractConfig", "RecordSpec", "Reject", "load_contract", "parse_contract",
           "parse_copybook"]
