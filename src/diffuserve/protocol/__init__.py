"""OpenAI's Images API as data: request and response models, per-name rules, errors."""
