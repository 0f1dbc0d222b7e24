"""Qwen-Image-Edit's pipelines kept small on a CPU, in tests and in test servers.

``QwenImageEditPipeline``, its inpainting variant and ``QwenImageEditPlusPipeline`` resize
every input image to about 1 MP before encoding it (and the inpainting one draws there),
whatever size is asked: each edit of a tiny random pipeline would take half a minute on
two cores. :func:`cap_qwen_edit_area` caps that area; what the server passes the
pipelines is unchanged.

Run as a module, it is ``diffuserve`` with the cap in place (``start_server(command=…)``)::

    python -m tests.support.small_qwen_edits serve --models-file models.toml
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

#: The area Qwen-Image-Edit's inputs are resized to here: 96x64.
SMALL_AREA = 96 * 64


def cap_qwen_edit_area(area: int = SMALL_AREA,
                       patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """Qwen-Image-Edit's pipelines size their inputs to at most ``area`` pixels (in the
    input's aspect) instead of about 1 MP; ``patch``: how to set the module attribute
    (``monkeypatch.setattr`` in a test, to undo it afterwards)."""
    from diffusers.pipelines.qwenimage import (
        pipeline_qwenimage_edit,
        pipeline_qwenimage_edit_inpaint,
        pipeline_qwenimage_edit_plus,
    )

    for module in (pipeline_qwenimage_edit, pipeline_qwenimage_edit_inpaint,
                   pipeline_qwenimage_edit_plus):
        original = module.calculate_dimensions

        def small(target_area: float, ratio: float, original: Any = original) -> Any:
            return original(min(target_area, area), ratio)

        patch(module, "calculate_dimensions", small)


if __name__ == "__main__":
    cap_qwen_edit_area()
    from diffuserve.cli import main

    sys.exit(main())
