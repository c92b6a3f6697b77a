"""GGUF files: their metadata and tensor index, sanity checks, and the tokenizer they carry. Imports no torch."""
