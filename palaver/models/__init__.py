"""Getting models: GGUF files pulled from the Hugging Face Hub, checked, and kept in a local library."""
