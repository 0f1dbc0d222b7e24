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
- :mod:`.edits`: which edit pipeline draws an edit (inpainting, image to image,
  instruction and multi-reference edits);
- :mod:`.families`: what differs per model family (how its latents make a preview,
  which edit pipelines it has and how they take images, its guidance, negative prompt
  and prompt window), one small adapter per family chosen from the loaded pipeline's
  class and consulted by :mod:`.previews`, :mod:`.edits`, :mod:`.calling` and the
  backend. Every call's arguments pass :func:`.calling.accepted_arguments`: none that
  the pipeline's ``__call__`` does not take.
"""

from diffuserve.engine.backends.diffusers.backend import DiffusersBackend
from diffuserve.engine.backends.diffusers.calling import GRAPH_MODES
from diffuserve.engine.backends.diffusers.tuning import MAX_AUTO_BATCH

__all__ = ["GRAPH_MODES", "MAX_AUTO_BATCH", "DiffusersBackend"]
