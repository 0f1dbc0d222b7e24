"""A GGUF file of a tiny pipeline's transformer, written offline with the ``gguf`` package:
its 2-D weights quantised to Q8_0 (those whose rows are whole 32-value blocks), the rest
kept in float32, under diffusers' own key names (which diffusers' single-file loader
takes as they are)."""

from __future__ import annotations

import json
from pathlib import Path


def write_gguf_transformer(pipeline_folder: Path, path: Path) -> Path:
    """``path``: the transformer of the pipeline saved in ``pipeline_folder`` as GGUF."""
    import diffusers
    import gguf
    import numpy as np

    index = json.loads((pipeline_folder / "model_index.json").read_text())
    class_name = index["transformer"][1]
    model = getattr(diffusers, class_name).from_pretrained(pipeline_folder,
                                                           subfolder="transformer")
    writer = gguf.GGUFWriter(str(path), arch="diffuserve-test")
    for name, tensor in model.state_dict().items():
        data = tensor.float().numpy()
        if data.ndim == 2 and data.shape[-1] % 32 == 0:
            writer.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
