#!/usr/bin/env bash
# The main job on embedded defaults: no services needed.
# Generates the bundled example card-transaction file (EBCDIC cp037, header/trailer with
# control totals, COMP-3 amounts), then decodes, validates and scores it with the bundled
# ONNX fraud model (in process), writing the scored records, the rejects and a summary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" ""
lgw="$root/.venv/bin/lgw"
out="$root/out"
mkdir -p "$out"
# the embedded defaults keep their state store in the data directory: the demo's own one
export LGW_DATA_DIR="${LGW_DATA_DIR:-$out/data}"
"$lgw" examples generate --records "${RECORDS:-10000}" --bad-every "${BAD_EVERY:-1000}" --output "$out/CARDTXN.DAT"
set +e
"$lgw" score --contract "$("$lgw" examples path card_txn)" --input "$out/CARDTXN.DAT" \
  --output "$out/CARDTXN.scored.jsonl" --rejects "$out/CARDTXN.rejects.jsonl" --format jsonl
status=$?
set -e
if [ "$status" -ge 2 ]; then exit "$status"; fi
echo "scored records: $out/CARDTXN.scored.jsonl ($(wc -l < "$out/CARDTXN.scored.jsonl") lines); first one:"
head -n 1 "$out/CARDTXN.scored.jsonl"
echo "rejects: $out/CARDTXN.rejects.jsonl ($(wc -l < "$out/CARDTXN.rejects.jsonl") lines)"
