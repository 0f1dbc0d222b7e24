"""Any Hugging Face diffusers text-to-image pipeline, from the Hub or a local folder.

One module per concern, the backend itself in :mod:`.backend`:

- :mod:`.loading`: device and dtype, the pipeline from a folder or the Hub (the
  project's own pipeline classes through the ``diffuserve.pipelines`` entry points),
  a readable paragraph for every failure;
- :mod:`.lanes`: a pipeline copy per worker and the CPU threads each call runs on;
- :mod:`.tuning`: at load, the batch size measured, torch.compile warmed (compiled by
  :mod:`diffuserve.engine.backends.compilation`), the denoiser on ONNX Runtime;
- :mod:`.calling`: requests → pipeline calls of at most a batch → images per request;
- :mod:`.previews`: the partial images a step callback offers;
- :mod:`.edits`: image-to-image and inpainting.

What differs per model family (how its latents make a preview, which edit pipeline it
takes, which arguments its ``__call__`` accepts) belongs in small adapters beside these
modules, chosen from the loaded pipeline's class and consulted by :mod:`.previews`,
:mod:`.edits` and :mod:`.calling`.
"""

from diffuserve.engine.backends.diffusers.backend import DiffusersBackend
from diffuserve.engine.backends.diffusers.calling import GRAPH_MODES
from diffuserve.engine.backends.diffusers.tuning import MAX_AUTO_BATCH

__all__ = ["GRAPH_MODES", "MAX_AUTO_BATCH", "DiffusersBackend"]
