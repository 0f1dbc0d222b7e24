"""Ways to deploy the application beyond one process."""
