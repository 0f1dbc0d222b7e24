"""The HTTP layer: thin routers over the service, one error envelope."""
