"""The built-in model's detail decoder: the subject at four times the autoencoder's size,
with the artwork's own alpha.

The autoencoder decodes 16×16×4 latents to a 64 px subject. The detail decoder reads the
autoencoder decoder's last feature map (64×64, before its output convolution, see
:func:`decoder_features`) and the 64 px picture decoded from it, and draws the subject
at 256 px, the artwork's own resolution: twice upsampled by diffusers' own decoder
blocks, it predicts the subject's colour as a correction of the 64 px picture enlarged
(an untrained decoder draws that), and the alpha channel the artwork has.

It gives the subject's straight colour and its coverage (the cut-out a transparent
background returns); an opaque image is the two composited on white (the canvas the
model was trained to draw on), or, for an edit, on the picture itself, so that an
upload's own background stays. The outline is as crisp as the alpha, which is learnt at
256 px; detail inside the subject is what the latents hold.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import UpDecoderBlock2D
from torch import nn

#: The subject starts fully opaque: what an untrained decoder's alpha logit is.
OPAQUE_LOGIT = 4.0


def decoder_features(vae: Any, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The autoencoder decoder's last feature map and its picture (in [-1, 1]) for
    ``latents`` (unscaled, as ``vae.decode`` takes them): the decoder's own forward pass,
    stopped before its output layers so that the detail decoder can read what they
    read."""
    decoder = vae.decoder
    if vae.post_quant_conv is not None:
        latents = vae.post_quant_conv(latents)
    sample = decoder.conv_in(latents)
    sample = decoder.mid_block(sample, None)
    for block in decoder.up_blocks:
        sample = block(sample, None)
    picture = decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(sample)))
    return sample, picture


class DetailDecoder(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Features (N, ``in_channels``, S, S) and picture (N, 3, S, S), both from
    :func:`decoder_features` → the subject at 4S px (:class:`Drawn`)."""

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(self, in_channels: int = 32, block_out_channels: tuple[int, ...] = (32, 16),
                 layers_per_block: int = 2, norm_num_groups: int = 8) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        blocks = []
        channels = in_channels
        for out in block_out_channels:
            blocks.append(UpDecoderBlock2D(
                in_channels=channels, out_channels=out, num_layers=layers_per_block,
                resnet_groups=norm_num_groups, add_upsample=True))
            channels = out
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(norm_num_groups, channels)
        self.conv_out = nn.Conv2d(channels, 4, kernel_size=3, padding=1)
        # Untrained, it draws the picture enlarged, (almost) fully opaque.
        nn.init.zeros_(self.conv_out.weight)
        self.conv_out.bias = nn.Parameter(torch.tensor([0.0, 0.0, 0.0, OPAQUE_LOGIT]))

    @property
    def scale(self) -> int:
        """How many times larger than its input it draws."""
        return int(2 ** len(self.config["block_out_channels"]))

    def forward(self, features: torch.Tensor, picture: torch.Tensor) -> Drawn:
        sample = features
        for block in self.up_blocks:
            sample = block(sample)
        out = self.conv_out(nn.functional.silu(self.norm_out(sample)))
        enlarged = nn.functional.interpolate(picture, scale_factor=self.scale,
                                             mode="bilinear", align_corners=False)
        return Drawn(enlarged + out[:, :3], torch.sigmoid(out[:, 3:]), enlarged)


class Drawn(NamedTuple):
    """What the detail decoder draws, in [-1, 1] (alpha in [0, 1])."""

    #: The subject's straight (not premultiplied) colour: a cut-out's colour channels.
    colour: torch.Tensor
    alpha: torch.Tensor
    #: The 64 px picture enlarged (bilinear), background and all.
    enlarged: torch.Tensor

    def on(self, background: torch.Tensor | float = 1.0) -> torch.Tensor:
        """The subject composited on ``background``: white (1, the canvas the model was
        trained on and draws on), or the picture itself (an edit keeps its background).
        The outline is as sharp as the alpha, which the 64 px picture's blurred edge
        does not limit."""
        return self.alpha * self.colour + (1 - self.alpha) * background
