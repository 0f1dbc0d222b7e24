"""The trainer of diffuserve's built-in model (``diffuserve-emoji``), kept out of the
serving package: data preparation, autoencoder and diffusion training, export.

Run ``python -m train_builtin --help``. Install with ``pip install -e tools/train_builtin``
(it adds the ``emoji`` package, for the captions); fetching the images once needs npm.
"""
