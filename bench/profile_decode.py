"""Profile single-request decoding of the embedded model with the torch profiler; print where time goes.

Usage: .venv/bin/python -m bench.profile_decode
"""

import threading

from torch.profiler import ProfilerActivity, profile

from commons import Message, Settings
from palaver.engine.loading import load_model


def main() -> None:
    family = load_model(Settings()).family
    params = Settings(temperature=0, max_new_tokens=32).generation_defaults()
    prompt = family.build_prompt([Message("user", "Tell me about the sea.")], 32)
    family.generate(prompt, params, threading.Event())  # warm up
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        family.generate(prompt, params, threading.Event())
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    weights = sum(p.numel() * p.element_size() for p in family.model.parameters())
    print(f"weights read per decoded token: {weights / 1e6:.0f} MB (float32)")


if __name__ == "__main__":
    main()
