"""The PII policy: what a field the contract marks `pii` becomes wherever data leaves the
gateway (every sink's records, fixed-width records' bytes, dead letters, review items,
audit records, reports).

    clear   the value as read (a pipeline opts a field into it: the legacy side may need
            the key back)
    mask    format-preserving: a 13-19 character value (a card number) keeps its first 6
            and last 4 characters (what PCI DSS allows to be shown), anything else keeps
            only its length; the rest becomes `*`
    hash    HMAC-SHA256 of the value under a secret key, hex: equal values give equal
            hashes, so joins still work, and without the key a hash cannot be reversed by
            trying every card number (what an unkeyed hash of a 16-digit number allows)
    drop    the field is left out (in a fixed-width record its bytes become spaces)

The contract says `pii: true` (mask) or the action (`pii: hash`); a pipeline overrides
per field (`pii: {TXN-PAN: clear}` in gateway.yaml), and the manifest says what applied.
Columns are transformed column-wise (pyarrow compute); hashing calls HMAC once per
distinct value.

Rejects never quote a pii field's bytes or value whatever the policy (schemas.stream,
schemas.validate), and logs never carry record values (gateway.logs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.arrow_buffers import one_array
from schemas.contract import PII_ACTIONS, PiiAction
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from schemas.contract import Contract
    from schemas.layout import Elementary

log = logging.getLogger("lgw.pii")

MASK_CHAR = "*"
KEY_FILE = "pii-hmac.key"
_PAN_LENGTHS = (13, 19)  # ISO/IEC 7812 card numbers: first 6 and last 4 may be shown


@dataclass(frozen=True)
class PiiField:
    """One field the policy changes: its column name, action and where its bytes lie."""

    column: str
    action: PiiAction
    offset: int
    size: int
    text: bool  # PIC X: its bytes can be masked in place in a fixed-width record


@dataclass
class PiiPolicy:
    """Build once per pipeline (`policy_for`); `apply` per batch of records."""

    fields: dict[str, PiiField] = field(default_factory=dict)  # column -> what happens to it
    declared: dict[str, PiiAction] = field(default_factory=dict)  # every pii field's action, `clear` included
    key: bytes | None = None
    space: int = 0x20  # the code page's space (a dropped field's bytes in a fixed-width record)
    star: int = 0x2A  # the code page's `*`
    encode: Any = None  # str -> bytes in the record's code page

    @property
    def active(self) -> bool:
        """Some field leaves other than as read."""
        return bool(self.fields)

    def describe(self) -> dict[str, str]:
        """What applied to each pii field (the manifest's `pii`)."""
        return dict(sorted(self.declared.items()))

    # ------------------------------------------------------------------ columns
    def apply(self, table: pa.Table) -> pa.Table:
        """The records as they may leave the gateway."""
        if not self.fields:
            return table
        for name, f in self.fields.items():
            if name not in table.column_names:
                continue
            if f.action == "drop":
                table = table.drop_columns([name])
                continue
            i = table.column_names.index(name)
            column = one_array(table.column(i))
            changed = mask_values(column) if f.action == "mask" else self.hash_values(column)
            table = table.set_column(i, pa.field(name, pa.string()), changed)
        return table

    def hash_values(self, column: pa.Array) -> pa.Array:
        """HMAC-SHA256 (hex) of each value's text; nulls stay null. Once per distinct value."""
        if self.key is None:
            raise ConfigError("pii: hash needs a key: set LGW_PII_KEY (or LGW_PII_KEY_FILE)")
        text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
        encoded = pc.dictionary_encode(text)
        key = self.key
        digests = [None if v is None else hmac.new(key, v.encode(), hashlib.sha256).hexdigest()
                   for v in encoded.dictionary.to_pylist()]
        return pa.array(digests, pa.string()).take(encoded.indices)

    # ------------------------------------------------------------------ record bytes
    def redact_raw(self, matrix: np.ndarray) -> np.ndarray:
        """Fixed-width records (rows of bytes, the layout's offsets) with each pii field's
        bytes changed as its column is: masked in place, the hash's first characters, or
        spaces for a dropped one. A copy; `matrix` is not changed."""
        if not self.fields or matrix.size == 0:
            return matrix
        out = np.array(matrix, dtype=np.uint8, copy=True)
        width = out.shape[1]
        for f in self.fields.values():
            lo, hi = f.offset, min(f.offset + f.size, width)
            if lo >= hi:
                continue
            if f.action == "drop" or not f.text:
                out[:, lo:hi] = self.space
            elif f.action == "mask":
                keep = _kept_ranges(f.size)
                mask = np.ones(f.size, dtype=bool)
                for a, b in keep:
                    mask[a:b] = False
                cols = lo + np.flatnonzero(mask[: hi - lo])
                out[:, cols] = self.star
            else:  # hash: the digest's first `size` hex characters, in the record's code page
                out[:, lo:hi] = self._hashed_bytes(out[:, lo:hi])
        return out

    def _hashed_bytes(self, values: np.ndarray) -> np.ndarray:
        """Once per distinct value (as `hash_values`): the digest of its text without padding."""
        assert self.key is not None
        distinct, inverse = np.unique(values, axis=0, return_inverse=True)
        pad = bytes([self.space])
        width = values.shape[1]
        hashed = np.frombuffer(b"".join(
            self.encode(hmac.new(self.key, bytes(v).strip(pad), hashlib.sha256).hexdigest()[:width].ljust(width))
            for v in distinct), dtype=np.uint8).reshape(len(distinct), width)
        return hashed[np.asarray(inverse).reshape(-1)]

    def redact_message(self, value: bytes, payload: str) -> bytes:
        """A message as its dead letter carries it: a copybook record with its pii bytes
        changed in place (a short one as far as it reaches), a JSON one member by member."""
        if not self.fields:
            return value
        if payload == "json":
            return self.redact_json(value)
        row = np.frombuffer(value, dtype=np.uint8).reshape(1, len(value))
        return self.redact_raw(row).tobytes()

    def redact_json(self, payload: bytes) -> bytes:
        """A JSON message with its pii members changed as the columns are; a message that
        is not a JSON object cannot be told apart field by field and is withheld (empty)."""
        if not self.fields:
            return payload
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return b""
        if not isinstance(doc, dict):
            return b""
        for name, f in self.fields.items():
            for key in [k for k in doc if _same_name(k, name)]:
                value = doc[key]
                if f.action == "drop":
                    del doc[key]
                elif value is not None:
                    arr = pa.array([str(value)], pa.string())
                    doc[key] = (mask_values(arr) if f.action == "mask" else self.hash_values(arr))[0].as_py()
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _same_name(key: str, column: str) -> bool:
    return key.replace("-", "_").upper() == column.upper()


def _kept_ranges(length: int) -> list[tuple[int, int]]:
    if _PAN_LENGTHS[0] <= length <= _PAN_LENGTHS[1]:
        return [(0, 6), (length - 4, length)]
    return []


def mask_values(column: pa.Array) -> pa.Array:
    """Format-preserving masks, column-wise: a 13-19 character value keeps its first 6 and
    last 4 characters, any other keeps its length only; nulls stay null."""
    text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
    text = pc.utf8_rtrim_whitespace(text)
    masked = _mask_ascii(text)
    if masked is not None:
        return masked
    length = pc.utf8_length(text)
    pan = pc.and_(pc.greater_equal(length, _PAN_LENGTHS[0]), pc.less_equal(length, _PAN_LENGTHS[1]))
    stars_all = pc.binary_repeat(MASK_CHAR, length)
    middle = pc.binary_repeat(MASK_CHAR, pc.max_element_wise(pc.subtract(length, 10), 0))
    shown = pc.binary_join_element_wise(pc.utf8_slice_codeunits(text, 0, 6), middle,
                                        pc.utf8_slice_codeunits(text, -4), "")
    return pc.if_else(pan, shown, stars_all).cast(pa.string())


def _mask_ascii(text: pa.Array) -> pa.Array | None:
    """`mask_values` over the string buffer with numpy, for ASCII text (a character is a
    byte), the card numbers of a mainframe file: 0.02 s per million values against 0.3 s
    for the compute-kernel chain. None: not that case (the kernels handle it)."""
    if text.type != pa.string() or text.offset != 0 or len(text) == 0:
        return None
    validity, offsets_buf, data_buf = text.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=len(text) + 1)
    first, last = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buf, dtype=np.uint8)[first:last] if data_buf is not None else np.zeros(0, np.uint8)
    if data.size and int(data.max()) >= 0x80:
        return None
    out = data.copy()
    lengths = np.diff(offsets)
    pan = (lengths >= _PAN_LENGTHS[0]) & (lengths <= _PAN_LENGTHS[1])
    star = ord(MASK_CHAR)
    width = int(lengths[0])
    if out.size and (lengths == width).all():  # fixed-width text: one slice of a 2-D view
        rows = out.reshape(len(text), width)
        if pan[0]:
            rows[:, 6:width - 4] = star
        else:
            rows[:] = star
    elif out.size:
        owner = np.repeat(np.arange(len(text)), lengths)
        at = np.arange(out.size) - (offsets[:-1] - first)[owner]
        shown = pan[owner] & ((at < 6) | (at >= lengths[owner] - 4))
        out[~shown] = star
    return pa.Array.from_buffers(pa.string(), len(text), [validity, pa.py_buffer(offsets - first), pa.py_buffer(out)],
                                 null_count=text.null_count)


def policy_for(contract: Contract, overrides: Mapping[str, str] | None = None, *,
               key: bytes | None = None, key_source: Any = None) -> PiiPolicy:
    """The policy of a pipeline: the contract's `pii` rules, then the pipeline's
    `overrides` (field name as the contract or the output names it -> action). `key`: the
    HMAC key, else `key_source()` is called when some field is hashed."""
    by_name: dict[str, tuple[Elementary, PiiAction]] = {}
    for node, rules in contract.rules.values():
        if rules.pii:
            by_name[node.key] = (node, rules.pii_policy or "mask")
    for name, action in (overrides or {}).items():
        if action not in PII_ACTIONS:
            raise ConfigError(f"pii.{name}: expected one of {', '.join(PII_ACTIONS)}, found {action!r}")
        node = _field(contract, name)
        by_name[node.key] = (node, action)  # type: ignore[assignment]
    page = contract.spec.page
    policy = PiiPolicy(space=page.space, star=page.encode_text(MASK_CHAR)[0], encode=page.encode_text)
    for column, (node, action) in by_name.items():
        policy.declared[column] = action
        if action != "clear":
            policy.fields[column] = PiiField(column, action, node.offset, node.size, node.is_text)
    if any(f.action == "hash" for f in policy.fields.values()):
        policy.key = key if key is not None else (key_source or pii_key)()
    return policy


def _field(contract: Contract, name: str) -> Elementary:
    from schemas.layout import Elementary

    wanted = name.replace("-", "_").upper()
    for node in contract.layout.elementary():
        if isinstance(node, Elementary) and (node.key.upper() == wanted or node.path.upper() == name.upper()):
            return node
    known = ", ".join(n.name for n in contract.layout.elementary() if not n.is_filler)
    raise ConfigError(f"pii: field {name!r} is not in contract {contract.name}; its fields: {known}")


def pii_key() -> bytes:
    """LGW_PII_KEY (or its _FILE), else the key file in the data directory, made once
    (random, 0600, never through a planted link). Replicas that must hash alike share
    the variable: a key file is this machine's own."""
    from gateway.secret_keys import machine_key
    from gateway.settings import load_settings, secret

    return machine_key(secret(load_settings().pii_key), KEY_FILE, "pii hash key", "LGW_PII_KEY")


__all__ = ["KEY_FILE", "MASK_CHAR", "PiiField", "PiiPolicy", "mask_values", "pii_key", "policy_for"]
