"""The engine: tasks in, events out; the local engine, its backends and their errors."""
