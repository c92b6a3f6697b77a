#!/usr/bin/env bash
# Re-quantise the embedded model with llama.cpp's own llama-quantize, built from the same source as llama-server
# (after bench/llama_server.sh, seconds), and print the file's path. Usage: bench/llama_quantize.sh Q4_K_M
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:-Q4_K_M}
SERVER=$(bench/llama_server.sh)
BIN=$(dirname "$SERVER")
DIR=${LLAMA_SERVER_DIR:-.bench-llama-server}
SOURCE=$(.venv/bin/python -c "from palaver.engine.model_sources import embedded_gguf_path; print(embedded_gguf_path())")
OUT="$DIR/SmolLM2-135M-Instruct.$KIND.gguf"
if [ ! -f "$OUT" ]; then
  [ -x "$BIN/llama-quantize" ] || cmake --build "$BIN/.." --target llama-quantize -j"$(nproc)" >&2
  # The embedded file is Q4_1: requantising it is what a user's Q4_K_M of the same model holds, near enough.
  LD_LIBRARY_PATH="$BIN" "$BIN/llama-quantize" --allow-requantize "$SOURCE" "$OUT.part" "$KIND" >&2
  mv "$OUT.part" "$OUT"
fi
echo "$OUT"
