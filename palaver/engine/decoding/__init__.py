"""One row's decoding: sampling, logprobs, grammar constraints, streaming text, and the prefix cache."""
