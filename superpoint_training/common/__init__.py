"""Helpers that every stage shares (the machine a figure was measured on, ...); no commands here."""
