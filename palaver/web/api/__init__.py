"""The JSON API: chat with stored conversations, the caller's conversation list, exports, and health probes."""
