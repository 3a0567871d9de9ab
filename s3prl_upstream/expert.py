"""s3prl upstream for MAE-AST: an adapter over ``mae_ast.core.extractor.extract``; no fairseq.

Reads our checkpoints and the original release's, strictly, and hub folders
(``tools/export_checkpoint.py --format hub``: config.json + model.safetensors, no pickle). ``forward(wavs)`` takes a list of
1-D 16 kHz waveforms and returns

* ``hidden_states``: the output of encoder layers 1..N (as s3prl's stock ``mae_ast`` upstream;
  not the input embedding), each (B, frames, dim): one frame every ``get_downsample_rates()``
  samples (2560 for 16x16 patches, 320 for 2x128 frames); patch models put the frequency
  patches of a time step side by side (dim = 8 x 768 for the paper's patch models);
* ``last_hidden_state``: the encoder output (``hidden_states[-1]`` for post-LN models).

Frames: at most ``len(range(0, samples, rate))`` for the longest clip, as the stock upstream.
s3prl counts that many frames as valid for each clip, up to two more than the model gives: a
clip's frames past its own are copies of its last frame, which is what s3prl's wrapper appends
to a clip alone, so every frame s3prl reads is the same alone and in any batch.
``precision="bf16"`` (or ``MAE_AST_PRECISION=bf16``) runs the encoder in bfloat16.
"""
from typing import List

import torch

try:  # inside an installed s3prl
    from s3prl.upstream.interfaces import UpstreamBase
except ImportError:  # pragma: no cover - s3prl is what calls us
    UpstreamBase = torch.nn.Module

from mae_ast.core import checkpoint
from mae_ast.core.extractor import extract
from mae_ast.core.features import SAMPLE_RATE, hop_samples
from mae_ast.core.model import inference_precision


class UpstreamExpert(UpstreamBase):
    def __init__(self, ckpt: str, model_config=None, precision: str = None, **kwargs):
        super().__init__(**kwargs)
        self.precision = inference_precision(precision)
        self.model, _ = checkpoint.load_model(ckpt, decoder=False, sample_rate=SAMPLE_RATE)

    def get_downsample_rates(self, key: str = None) -> int:
        return self.model.stride[0] * hop_samples(SAMPLE_RATE)

    def forward(self, wavs: List[torch.Tensor]):
        out = extract(self.model, wavs, precision=self.precision)
        # as the stock upstream: at most the frames s3prl counts for the longest clip
        rate = self.get_downsample_rates()
        width = min(int(out.steps.max()), len(range(0, max(len(w) for w in wavs), rate)))
        # the frames s3prl counts past each clip's own (at most two): copies of its last frame
        counted = torch.tensor([len(range(0, len(w), rate)) for w in wavs], device=out.steps.device)
        clip, frame = torch.nonzero(torch.arange(width, device=out.steps.device)[None] >= out.steps[:, None]
                                    ).unbind(1)
        keep = frame < counted[clip]
        clip, frame = clip[keep], frame[keep]

        def as_s3prl(h):  # (B, steps, D) -> (B, width, D)
            h, last = h[:, :width], h[clip, out.steps[clip] - 1]
            if h.requires_grad:  # (autograd needs the frames as they were: a copy)
                return h.index_put((clip, frame), last)
            h[clip, frame] = last  # (in place: a few frames, not a copy of the batch)
            return h

        return {"hidden_states": [as_s3prl(h) for h in out.hidden_states],
                "last_hidden_state": as_s3prl(out.output)}
