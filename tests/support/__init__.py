"""Helpers shared by the tests and the scripts in benchmarks/.

benchmarks/ imports them; the tests never import benchmarks/. The conftest.py files hold
only fixtures, which take their helpers from here.
"""

import os

# Neither the tests nor the benchmarks that use these helpers ever reach the Hugging Face
# Hub; set on import, before any helper loads transformers or diffusers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
