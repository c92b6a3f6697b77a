#!/usr/bin/env bash
# Re-quantise a GGUF file (the embedded model by default) with llama.cpp's own llama-quantize, built from the same
# source as llama-server (after bench/llama_server.sh, seconds), and print the new file's path.
# Usage: bench/llama_quantize.sh Q4_K_M [SOURCE] [pure]   (pure: every tensor of the one type, no k-quant mixture)
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:-Q4_K_M}
SOURCE=${2:-$(.venv/bin/python -c "from palaver.engine.model_sources import embedded_gguf_path; print(embedded_gguf_path())")}
PURE=${3:-}
SERVER=$(bench/llama_server.sh)
BIN=$(dirname "$SERVER")
DIR=${LLAMA_SERVER_DIR:-.bench-llama-server}
STEM=$(basename "$SOURCE" .gguf)
OUT="$DIR/$STEM.$KIND${PURE:+-pure}.gguf"
if [ ! -f "$OUT" ]; then
  [ -x "$BIN/llama-quantize" ] || cmake --build "$BIN/.." --target llama-quantize -j"$(nproc)" >&2
  # The embedded file is Q4_1: requantising it is what a user's Q4_K_M of the same model holds, near enough.
  LD_LIBRARY_PATH="$BIN" "$BIN/llama-quantize" ${PURE:+--pure} --allow-requantize "$SOURCE" "$OUT.part" "$KIND" >&2
  mv "$OUT.part" "$OUT"
fi
echo "$OUT"
