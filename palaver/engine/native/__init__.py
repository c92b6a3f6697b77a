"""The native step: its library's binding, loading a GGUF model onto it, and its paged-KV batch. No torch."""
