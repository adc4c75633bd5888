#!/usr/bin/env bash
# The main job on embedded defaults: no services needed.
# Generates the bundled example card-transaction file (EBCDIC, header/trailer, COMP-3 amounts)
# and decodes it against its contract.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" ""
lgw="$root/.venv/bin/lgw"
out="$root/out"
mkdir -p "$out"
"$lgw" examples generate --records "${RECORDS:-10000}" --output "$out/CARDTXN.DAT"
"$lgw" decode "$out/CARDTXN.DAT" --contract "$("$lgw" examples path card_txn)" \
  --rejects "$out/CARDTXN.rejects.jsonl" > "$out/CARDTXN.jsonl"
echo "decoded $(wc -l < "$out/CARDTXN.jsonl") records into $out/CARDTXN.jsonl; first one:"
head -n 1 "$out/CARDTXN.jsonl"
