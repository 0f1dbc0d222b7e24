"""One module per group of routes; each is a thin layer over the service."""
