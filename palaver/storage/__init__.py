"""Conversation storage in a SQL database: SQLite by default, PostgreSQL by URL."""
