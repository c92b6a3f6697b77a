"""The chat service: conversations taken one turn at a time and stored, and the presets that shape prompts."""
