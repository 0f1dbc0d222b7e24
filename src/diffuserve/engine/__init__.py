"""Generation engine: parameters, backends, the model registry and the device workers."""
