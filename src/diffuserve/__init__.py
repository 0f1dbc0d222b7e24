"""diffuserve: OpenAI's Images API on local diffusion models."""

__version__ = "0.1.0"
