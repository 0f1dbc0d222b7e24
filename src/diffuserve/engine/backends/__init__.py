"""Runtimes below the engine's queue, one module each; heavy imports stay inside them."""
