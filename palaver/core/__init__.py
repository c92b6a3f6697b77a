"""The shared vocabulary: settings, messages and replies, generation parameters, errors. Imports nothing above it."""
