"""Encode Arrow tables (and JSON Lines) back into fixed-layout legacy records: the exact
inverse of `schemas.decoder.RecordDecoder`, so `decode(encode(table)) == table` for every
value the layout can hold and `encode(decode(bytes)) == bytes` for canonically written
records.

Like the decoder, the encoder works column-wise: every elementary field is encoded once
for all records and all of its OCCURS slots, as numpy arithmetic over the whole column,
and scattered into an (N, record length) byte matrix.

- `fields`: one elementary field's canonical bytes (`numbers` and `text` hold the
  per-type encoders, `encoded` what they return and the reasons a value fails);
- `records`: the walk over the layout (OCCURS, REDEFINES) that places the fields, and the
  F/V/VB/D framing;
- `jsonl`: JSON Lines read into the decoder's table shape, then encoded and framed.
"""

from schemas.encode.encoded import Encoded, Problem
from schemas.encode.fields import encode_field
from schemas.encode.jsonl import encode_jsonl
from schemas.encode.records import RecordEncoder, encode_table, frame

__all__ = ["Encoded", "Problem", "RecordEncoder", "encode_field", "encode_jsonl", "encode_table", "frame"]
