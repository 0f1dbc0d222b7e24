"""Training of the built-in model: data preparation now; the model and its training next.

Run ``python -m diffuserve.training --help``. Needs the ``train`` extra
(``pip install -e ".[train]"``) and, to fetch the images once, npm.
"""
