"""How a conversation becomes tokens: the model families, chat templates, their sandbox, and file tokenizers."""
