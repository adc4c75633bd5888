"""Bundled example contracts, and a generator of sample data for them.

`contract_path("card_txn")` is the card-transaction contract (copybook CARDTXN.cpy: a
header, the detail records and a trailer with control totals). `generate_card_file`
writes a file for it: deterministic per seed, encoded column-wise with numpy (every
field is written for a whole chunk of records at once), streamed in chunks so a file
of millions of records needs no more memory than one chunk.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from schemas.codepages import CodePage, code_page
from schemas.contract import Contract, load_contract
from schemas.errors import ConfigError
from schemas.layout import Category, Elementary, Layout, Usage
from schemas.safefiles import create_output

__all__ = ["CHUNK_RECORDS", "card_detail_records", "contract_path", "generate_card_file"]

CHUNK_RECORDS = 100_000
_HERE = Path(__file__).resolve().parent
FILE_DATE = np.datetime64("2024-07-01")  # the business date every generated file is for


def contract_path(name: str = "card_txn") -> Path:
    """Path of a bundled contract YAML, by contract name."""
    path = _HERE / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in _HERE.glob("*.yaml")))
        raise ConfigError(f"no bundled example contract {name!r}: expected one of {known}")
    return path


# --------------------------------------------------------------------------- column writer
def _digits(magnitude: np.ndarray, width: int) -> np.ndarray:
    """Non-negative int64 (N,) -> decimal digits (N, width), most significant first."""
    if (magnitude >= 10**width).any():
        raise ValueError(f"value does not fit {width} digits")
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((magnitude[:, None] // powers[None, :]) % 10).astype(np.uint8)


# ASCII overpunch as written by IBM and Micro Focus COBOL: last digit 0-9 with its sign.
_ASCII_PUNCH_POS = np.frombuffer(b"{ABCDEFGHI", dtype=np.uint8)
_ASCII_PUNCH_NEG = np.frombuffer(b"}JKLMNOPQR", dtype=np.uint8)


class _RecordWriter:
    """Writes whole columns into an (N, record length) byte matrix at a layout's offsets."""

    def __init__(self, layout: Layout, page: CodePage) -> None:
        self.layout = layout
        self.page = page
        self.fields = {f.key: f for f in layout.elementary() if not f.is_filler}
        # ASCII byte -> byte of the same character in the target code page (text is built
        # in ASCII, then translated in one gather per field).
        self.text_lut = np.full(256, page.space, dtype=np.uint8)
        for c in range(0x20, 0x7F):
            self.text_lut[c] = page.from_unicode.get(c, page.space)

    def blank(self, n: int) -> np.ndarray:
        return np.full((n, self.layout.record_length), self.page.space, dtype=np.uint8)

    def field(self, name: str) -> Elementary:
        return self.fields[name.replace("-", "_")]

    def text(self, matrix: np.ndarray, name: str, ascii_block: np.ndarray) -> None:
        """ascii_block: (N, size) or (1, size) ASCII bytes, already padded to the field size."""
        f = self.field(name)
        matrix[:, f.offset: f.offset + f.size] = self.text_lut[ascii_block]

    def number(self, matrix: np.ndarray, name: str, unscaled: np.ndarray) -> None:
        """unscaled: int64 (N,) of the digits as stored (e.g. cents for V99)."""
        f = self.field(name)
        assert f.picture is not None and f.category == Category.NUMBER
        values = np.asarray(unscaled, dtype=np.int64)
        if not f.signed and (values < 0).any():
            raise ValueError(f"{f.name}: negative value in an unsigned field")
        if f.usage == Usage.DISPLAY:
            block = self._zoned(values, f)
        elif f.usage == Usage.PACKED:
            block = self._packed(values, f)
        elif f.usage in (Usage.BINARY, Usage.NATIVE_BINARY):
            kind = "i" if f.signed else "u"
            block = values.astype(f">{kind}{f.size}").view(np.uint8).reshape(len(values), f.size)
        else:
            raise NotImplementedError(f"{f.name}: usage {f.usage.value} is not written by the generator")
        matrix[:, f.offset: f.offset + f.size] = block

    def _zoned(self, values: np.ndarray, f: Elementary) -> np.ndarray:
        if f.sign_separate or f.sign_leading:
            raise NotImplementedError(f"{f.name}: only trailing overpunched signs are written")
        digits = _digits(np.abs(values), f.size)
        block = (digits + self.page.zero).astype(np.uint8)
        if f.signed:
            last = digits[:, -1]
            negative = values < 0
            if self.page.ebcdic:  # zone nibble C = +, D = - over the last digit (IBM zoned decimal)
                block[:, -1] = np.where(negative, 0xD0, 0xC0).astype(np.uint8) | last
            else:
                block[:, -1] = np.where(negative, _ASCII_PUNCH_NEG[last], _ASCII_PUNCH_POS[last])
        return block

    @staticmethod
    def _packed(values: np.ndarray, f: Elementary) -> np.ndarray:
        n = len(values)
        nibbles = np.empty((n, f.size * 2), dtype=np.uint8)
        nibbles[:, :-1] = _digits(np.abs(values), f.size * 2 - 1)
        # IBM preferred signs: C positive, D negative; F for unsigned fields.
        nibbles[:, -1] = np.where(values < 0, 0xD, 0xC) if f.signed else 0xF
        return (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]


def _ascii_table(words: list[str], width: int) -> np.ndarray:
    """(K, width) ASCII bytes of K short strings, blank padded (for gathers by index)."""
    return np.frombuffer(b"".join(w.ljust(width)[:width].encode("ascii") for w in words),
                         dtype=np.uint8).reshape(len(words), width)


def _ascii_digits(values: np.ndarray, width: int) -> np.ndarray:
    return _digits(values, width) + np.uint8(ord("0"))


# --------------------------------------------------------------------------- card data
# name, MCC, country, currency, channel, weight, median amount
_MERCHANTS: list[tuple[str, int, str, str, str, int, float]] = [
    ("AMAZON MKTPLACE", 5942, "US", "USD", "E", 14, 38.0),
    ("WALMART SUPERCENTER", 5411, "US", "USD", "P", 14, 62.0),
    ("SHELL OIL 57442", 5541, "US", "USD", "P", 10, 45.0),
    ("STARBUCKS 10233", 5814, "US", "USD", "P", 12, 7.5),
    ("UBER *TRIP", 4121, "US", "USD", "E", 8, 19.0),
    ("NETFLIX.COM", 4899, "US", "USD", "E", 5, 15.49),
    ("HOME DEPOT 6612", 5200, "US", "USD", "P", 6, 120.0),
    ("CVS PHARMACY 2231", 5912, "US", "USD", "P", 6, 24.0),
    ("DELTA AIR 0062", 3058, "US", "USD", "E", 2, 420.0),
    ("MARRIOTT NYC", 3509, "US", "USD", "P", 2, 310.0),
    ("TESCO STORES 2291", 5411, "GB", "GBP", "P", 3, 41.0),
    ("CAFE DE FLORE", 5812, "FR", "EUR", "P", 2, 36.0),
    ("LUFTHANSA", 3008, "DE", "EUR", "E", 1, 650.0),
    ("BOOKING.COM", 4722, "NL", "EUR", "E", 2, 280.0),
    ("TIM HORTONS 0921", 5814, "CA", "CAD", "P", 2, 9.0),
    ("ALIEXPRESS", 5999, "CN", "USD", "E", 3, 22.0),
    ("LAWSON 7-ELEVEN", 5499, "JP", "JPY", "P", 1, 12.0),
    ("GOLD SOUK BY PHONE", 5944, "AE", "AED", "M", 1, 1800.0),
]
_M_NAME = _ascii_table([m[0] for m in _MERCHANTS], 22)
_M_MCC = np.array([m[1] for m in _MERCHANTS], dtype=np.int64)
_M_COUNTRY = _ascii_table([m[2] for m in _MERCHANTS], 2)
_M_CURRENCY = _ascii_table([m[3] for m in _MERCHANTS], 3)
_M_CHANNEL = _ascii_table([m[4] for m in _MERCHANTS], 1)
_M_WEIGHT = np.array([m[5] for m in _MERCHANTS], dtype=np.float64) / sum(m[5] for m in _MERCHANTS)
_M_MEDIAN_CENTS = np.array([m[6] * 100 for m in _MERCHANTS], dtype=np.float64)
_BINS = _ascii_table(["453201", "492181", "542418", "518791"], 6) - np.uint8(ord("0"))
_CARDS = 250_000  # distinct cards a file draws from
_MAX_AMOUNT_CENTS = 99_999_999  # keeps every amount under the contract's max


def _luhn_pans(card: np.ndarray) -> np.ndarray:
    """Card index -> (N, 16) ASCII PANs: issuer BIN, 9-digit account, Luhn check digit."""
    payload = np.empty((len(card), 15), dtype=np.int64)
    payload[:, :6] = _BINS[card % len(_BINS)]
    payload[:, 6:] = _digits(card, 9)
    doubled = payload[:, 0::2] * 2  # every other digit from the rightmost payload digit
    doubled -= 9 * (doubled > 9)
    total = doubled.sum(axis=1) + payload[:, 1::2].sum(axis=1)
    pans = np.empty((len(card), 16), dtype=np.uint8)
    pans[:, :15] = payload + ord("0")
    pans[:, 15] = (10 - total % 10) % 10 + ord("0")
    return pans


def _yyyymmdd(days: np.ndarray) -> np.ndarray:
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month_start = days.astype("datetime64[M]")
    month = month_start.astype(np.int64) % 12 + 1
    day = (days - month_start).astype(np.int64) + 1
    return year * 10_000 + month * 100 + day


def _detail_chunk(writer: _RecordWriter, start: int, count: int, seed: int,
                  drift: float = 0.0) -> tuple[np.ndarray, int]:
    """Details number start+1 .. start+count: (matrix, sum of TXN-AMOUNT in cents).
    `drift` > 0 scales the amounts by 1 + 3 * drift, and changes nothing else."""
    rng = np.random.default_rng([seed, start])
    m = writer.blank(count)
    merchant = rng.choice(len(_MERCHANTS), size=count, p=_M_WEIGHT)
    writer.text(m, "TXN-REC-TYPE", _ascii_table(["D"], 1))
    txn_id = np.empty((count, 12), dtype=np.uint8)
    txn_id[:, :2] = _ascii_table(["TX"], 2)
    txn_id[:, 2:] = _ascii_digits(np.arange(start + 1, start + count + 1, dtype=np.int64), 10)
    writer.text(m, "TXN-ID", txn_id)
    writer.text(m, "TXN-PAN", _luhn_pans(rng.integers(0, _CARDS, size=count)))
    days = FILE_DATE - rng.integers(1, 4, size=count).astype("timedelta64[D]")
    writer.number(m, "TXN-DATE", _yyyymmdd(days))
    secs = rng.integers(0, 86_400, size=count)
    writer.number(m, "TXN-TIME", secs // 3600 * 10_000 + secs // 60 % 60 * 100 + secs % 60)
    writer.text(m, "MERCHANT-NAME", _M_NAME[merchant])
    writer.number(m, "MCC", _M_MCC[merchant])
    writer.text(m, "COUNTRY", _M_COUNTRY[merchant])
    writer.text(m, "CURRENCY", _M_CURRENCY[merchant])
    amount = np.rint(_M_MEDIAN_CENTS[merchant] * rng.lognormal(0.0, 0.8, size=count)
                     * (1.0 + 3.0 * drift)).astype(np.int64)
    amount = np.clip(amount, 1, _MAX_AMOUNT_CENTS)
    amount[rng.random(count) < 0.03] *= -1  # refunds
    writer.number(m, "TXN-AMOUNT", amount)
    balance = np.rint(rng.normal(150_000, 300_000, size=count)).astype(np.int64)
    writer.number(m, "BALANCE", np.clip(balance, -99_999_999, 99_999_999))
    grocery_pos = (_M_MCC[merchant] == 5411) & (rng.random(count) < 0.15)
    writer.number(m, "CASHBACK-AMOUNT", np.where(grocery_pos, rng.choice([2000, 4000, 5000], size=count), 0))
    ecom = _M_CHANNEL[merchant][:, 0] == ord("E")
    writer.number(m, "TERMINAL-ID", np.where(ecom, 0, rng.integers(10_000_000, 100_000_000, size=count)))
    writer.number(m, "AUTH-CODE", rng.integers(0, 10_000, size=count))
    writer.text(m, "CHANNEL", _M_CHANNEL[merchant])
    return m, int(amount.sum())


def _corrupt(writer: _RecordWriter, m: np.ndarray, start: int, bad_every: int) -> int:
    """Damages every `bad_every`-th detail, cycling through four kinds of damage a reject
    file must explain. TXN-AMOUNT is never touched, so the control totals still hold.
    Returns how many records were damaged."""
    number = np.arange(start + 1, start + len(m) + 1)
    rows = np.flatnonzero(number % bad_every == 0)
    kind = (number[rows] // bad_every - 1) % 4
    page = writer.page
    # 0: lowercase country (pattern violation)
    f = writer.field("COUNTRY")
    lower = np.arange(256, dtype=np.uint8)
    for c in range(ord("A"), ord("Z") + 1):
        lower[page.from_unicode[c]] = page.from_unicode[c + 32]
    r = rows[kind == 0]
    m[r, f.offset: f.offset + f.size] = lower[m[r, f.offset: f.offset + f.size]]
    # 1: packed sign nibble 0 in CASHBACK-AMOUNT (decode error)
    f = writer.field("CASHBACK-AMOUNT")
    r = rows[kind == 1]
    m[r, f.offset + f.size - 1] &= 0xF0
    # 2: a letter inside the zoned BALANCE (decode error)
    f = writer.field("BALANCE")
    m[rows[kind == 2], f.offset + 3] = page.byte_of("X")
    # 3: a channel code that is none of its 88 levels (validation)
    f = writer.field("CHANNEL")
    m[rows[kind == 3], f.offset] = page.byte_of("X")
    return len(rows)


# --------------------------------------------------------------------------- files
def _card_contract() -> Contract:
    return load_contract(contract_path("card_txn"))


def _page(contract: Contract, encoding: str | None) -> CodePage:
    return code_page(encoding or contract.config.record.encoding)


def card_detail_records(start: int, count: int, *, encoding: str | None = None, seed: int = 7,
                        bad_every: int = 0) -> np.ndarray:
    """Detail records number start+1 .. start+count as an (count, 120) uint8 matrix.

    The same (start, seed) always gives the same records; `generate_card_file` calls this
    for chunks starting at multiples of CHUNK_RECORDS."""
    contract = _card_contract()
    writer = _RecordWriter(contract.layout, _page(contract, encoding))
    matrix, _ = _detail_chunk(writer, start, count, seed)
    if bad_every:
        _corrupt(writer, matrix, start, bad_every)
    return matrix


def generate_card_file(path: str | os.PathLike[str], *, records: int, encoding: str | None = None,
                       seed: int = 7, bad_every: int = 0, drift: float = 0.0) -> dict[str, Any]:
    """Writes header + `records` details + trailer for the card_txn contract.

    The trailer's count and TXN-AMOUNT hash total cover every detail, damaged or not
    (`bad_every` = N damages every Nth detail for reject demos). `drift` (0 to 1) shifts
    the amounts up, and nothing else, for drift demos: 0.5 makes them 2.5 times as large.
    Returns a summary."""
    if records < 0:
        raise ConfigError(f"--records must be 0 or more, found {records}")
    if bad_every < 0:
        raise ConfigError(f"--bad-every must be 0 or more, found {bad_every}")
    if not 0.0 <= drift <= 1.0:
        raise ConfigError(f"--drift must be between 0 and 1, found {drift}")
    contract = _card_contract()
    page = _page(contract, encoding)
    details = _RecordWriter(contract.layout, page)
    assert contract.header is not None and contract.trailer is not None
    header = _RecordWriter(contract.header.spec.layout, page)
    trailer = _RecordWriter(contract.trailer.spec.layout, page)

    out = Path(path)
    total_cents = 0
    damaged = 0
    with create_output(out, "--output") as new:
        fh = new.fh
        h = header.blank(1)
        header.text(h, "HDR-REC-TYPE", _ascii_table(["H"], 1))
        header.text(h, "HDR-FILE-ID", _ascii_table(["CARDTXN"], 8))
        header.number(h, "HDR-FILE-DATE", _yyyymmdd(np.array([FILE_DATE])))
        header.text(h, "HDR-SOURCE-SYSTEM", _ascii_table(["CARDSYS1"], 8))
        header.number(h, "HDR-FILE-SEQ", np.array([seed % 1_000_000]))
        header.number(h, "HDR-LAYOUT-VERSION", np.array([contract.version]))
        fh.write(h.tobytes())
        for start in range(0, records, CHUNK_RECORDS):
            matrix, cents = _detail_chunk(details, start, min(CHUNK_RECORDS, records - start), seed, drift)
            if bad_every:
                damaged += _corrupt(details, matrix, start, bad_every)
            total_cents += cents
            fh.write(matrix.tobytes())
        t = trailer.blank(1)
        trailer.text(t, "TRL-REC-TYPE", _ascii_table(["T"], 1))
        trailer.number(t, "TRL-COUNT", np.array([records]))
        trailer.number(t, "TRL-AMOUNT-TOTAL", np.array([total_cents]))
        fh.write(t.tobytes())
        new.publish()
    return {
        "records": records,
        "path": str(out),
        "bytes": out.stat().st_size,
        "encoding": page.name,
        "seed": seed,
        "damaged": damaged,
        "drift": drift,
        "amount_total": f"{Decimal(total_cents).scaleb(-2):.2f}",
    }


def model_info(name: str = "fraud") -> dict[str, Any]:
    """Metadata of a bundled example model (models/NAME.json) with its file's `path`."""
    meta_path = Path(__file__).parent / "models" / f"{name}.json"
    if not meta_path.is_file():
        raise ConfigError(f"no bundled model {name!r} (looked for {meta_path})")
    meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["path"] = meta_path.with_suffix(".onnx")
    return meta
