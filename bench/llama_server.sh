#!/usr/bin/env bash
# Build llama.cpp's own C++ server from the llama.cpp that llama-cpp-python's source distribution vendors,
# once (about 15 minutes on 2 cores), and print the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${LLAMA_SERVER_DIR:-.bench-llama-server}
VERSION=0.3.36
SOURCE="$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp"
BINARY="$SOURCE/build/bin/llama-server"
if [ ! -x "$BINARY" ]; then
  mkdir -p "$DIR"
  [ -f "$DIR/llama_cpp_python-$VERSION.tar.gz" ] || \
    python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DIR" >&2
  [ -d "$SOURCE" ] || tar xzf "$DIR/llama_cpp_python-$VERSION.tar.gz" -C "$DIR"
  cmake -S "$SOURCE" -B "$SOURCE/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >&2
  cmake --build "$SOURCE/build" --target llama-server -j"$(nproc)" >&2
fi
echo "$BINARY"
