#!/usr/bin/env bash
# Run bench.load against llama-cpp-python's server on the same embedded GGUF, for a side-by-side table.
# Its virtual env is separate, and the first run compiles llama.cpp for several minutes.
# --interrupt_requests False: by default a new request interrupts the one streaming, so concurrent
# clients would cut each other off; with it off, the server queues them, which is the fair comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LLAMACPP_VENV:-.bench-llamacpp-venv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet 'llama-cpp-python[server]'
fi
GGUF=$(.venv/bin/python -c "from palaver.engine.torch.loading import embedded_gguf_path; print(embedded_gguf_path())")
PORT=$(.venv/bin/python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$VENV/bin/python" -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$PORT" --n_ctx 4096 \
  --n_threads "$(nproc)" --interrupt_requests False > /tmp/llamacpp-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null && break
  sleep 0.5
done
.venv/bin/python -m bench.load --url "http://127.0.0.1:$PORT" --pid "$SERVER" --label "llama-cpp-python server" "$@"
