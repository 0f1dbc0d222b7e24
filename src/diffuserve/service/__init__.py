"""Requests become work for the engine and responses for clients; no FastAPI here."""
