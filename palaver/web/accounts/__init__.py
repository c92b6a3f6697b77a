"""Accounts (PALAVER_AUTH): people signed in by session or key, their pages, keys and conversations, and the admin's."""
