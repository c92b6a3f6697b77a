"""The transformers path: loading, GGUF blocks kept as stored, batching, its KV cache and the lean decoder."""
