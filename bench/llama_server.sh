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
  # A native build compiles AMX kernels where /proc/cpuinfo lists amx_tile, and a VM that does not enable AMX state
  # kills the server at its first tile instruction: there, name every extension the CPU has instead, AMX left out.
  CPU_FLAGS=()
  if grep -qw amx_tile /proc/cpuinfo; then
    CPU_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
    for flag in avx2:AVX2 fma:FMA f16c:F16C avx512f:AVX512 avx512_vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI \
      avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
      if grep -qw "${flag%%:*}" /proc/cpuinfo; then CPU_FLAGS+=("-DGGML_${flag##*:}=ON"); fi
    done
  fi
  cmake -S "$SOURCE" -B "$SOURCE/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON "${CPU_FLAGS[@]}" >&2
  cmake --build "$SOURCE/build" --target llama-server -j"$(nproc)" >&2
fi
echo "$BINARY"
