"""The in-process engine: loaded backends, per-model queues, one call per device."""
