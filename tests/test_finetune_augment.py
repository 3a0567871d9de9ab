"""SpecAugment's widths fit the clips: no time mask ever covers a whole clip (a property over
many lengths and seeds, for the base config's share of each clip and for the recipes' fixed
widths), the widths reach their bounds, and the fine-tuning task logs the widths it uses in
frames and seconds at training start."""
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from mae_ast.core.augment import MAX_SHARE, SpecAugment
from mae_ast.fairseq_plugin.finetuning_task import MAEASTFinetuningConfig, MAEASTFinetuningTask

MELS = 128
# (freq_mask, time_mask, time_share): the base config's share, the recipes' fixed widths
# (ESC-50 96, Speech Commands 48, AudioSet 192) and the largest share allowed
SETTINGS = [(48, None, 0.2), (24, 96, 0.0), (48, 48, 0.0), (48, 192, 0.0), (0, None, MAX_SHARE)]


def masked_time_frames(out: torch.Tensor) -> torch.Tensor:
    """(B, width) bool: frames zeroed in every mel bin."""
    return (out == 0).all(2)


@pytest.mark.parametrize("freq_mask,time_mask,time_share", SETTINGS)
def test_time_mask_never_covers_a_whole_clip(freq_mask, time_mask, time_share):
    # every length from 1 frame (under a token) to 3 s, then every 7th to 10 s, in batches of
    # mixed lengths, 24 seeds
    lengths = torch.cat([torch.arange(1, 301), torch.arange(301, 1025, 7)])
    widest_seen = torch.zeros(len(lengths), dtype=torch.long)
    for seed in range(24):
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(lengths), generator=g)
        for batch in order.split(128):
            frames = lengths[batch]
            # 4 mel bins keep it fast; the frequency mask (under half the bins) never hides a frame
            feats = torch.rand(len(batch), int(frames.max()), 4, generator=g) + 1  # no zeros of their own
            out = SpecAugment(freq_mask, time_mask, g, time_share=time_share)(feats, frames)
            masked = masked_time_frames(out)
            counts = masked.sum(1)
            inside = torch.arange(masked.size(1))[None] < frames[:, None]
            assert bool((counts < frames).all()), (
                f"a time mask covered a whole clip: lengths {frames[counts >= frames].tolist()[:8]} (seed {seed})")
            assert not bool((masked & ~inside).any()), "masks stay inside each clip's own frames"
            widest_seen[batch] = torch.maximum(widest_seen[batch], counts)
    bound = SpecAugment(freq_mask, time_mask, time_share=time_share).time_bound(lengths)
    assert bool((widest_seen < bound.clamp_min(1)).all()), "every width is below its clip's bound"
    assert bool((bound <= MAX_SHARE * lengths).all())
    # the widths do reach their bounds: on clips long enough for a mask, the widest of 40 draws
    # comes within 25 % of the bound (a mask that never masked would pass the first check)
    long_enough = bound >= 5
    assert bool((widest_seen[long_enough] >= 0.75 * bound[long_enough] - 1).all())


def test_widths_scale_with_the_clip_and_keep_fixed_recipe_widths_on_their_data():
    share = SpecAugment(48, None, time_share=0.2)
    assert share.time_bound(torch.tensor([98, 500, 1024])).tolist() == pytest.approx([19.6, 100.0, 204.8])
    # the recipes' published widths are unchanged on the clips they were published for
    assert SpecAugment(24, 96).time_bound(torch.tensor([500])).item() == 96  # ESC-50, 5 s
    assert SpecAugment(48, 48).time_bound(torch.tensor([98])).item() == 48  # Speech Commands, 1 s
    assert SpecAugment(48, 192).time_bound(torch.tensor([998])).item() == 192  # AudioSet, 10 s
    # and on a one-second clip AudioSet's width is held under half the clip
    assert SpecAugment(48, 192).time_bound(torch.tensor([98])).item() == 49
    with pytest.raises(ValueError, match="share"):
        SpecAugment(48, None, time_share=0.6)


def test_describe_gives_the_widths_in_frames_and_seconds():
    text = SpecAugment(48, None, time_share=0.2).describe([98] * 5 + [998], MELS)
    assert "frequency masks narrower than 48 of 128 mel bins" in text
    assert "up to 19 frames (0.19 s) on the shortest clip (98 frames, 0.98 s)" in text
    assert "199 frames (1.99 s) on the longest clip (998 frames, 9.98 s)" in text
    fixed = SpecAugment(48, 192).describe([98, 98, 998], MELS)
    assert "time masks narrower than 192 frames (1.92 s)" in fixed
    assert "up to 48 frames (0.48 s) on the shortest clip" in fixed and "2 of 3 clips" in fixed
    assert SpecAugment(0, 0).describe([98], MELS) == "SpecAugment (training): no frequency mask; no time mask"


@pytest.fixture
def one_and_ten_second_clips(tmp_path):
    """A labelled data folder: four 1 s clips and one 10 s clip, as make_manifest writes it."""
    rng = np.random.default_rng(0)
    rows = []
    for i, seconds in enumerate([1, 1, 1, 1, 10]):
        n = 16000 * seconds
        sf.write(tmp_path / f"c{i}.flac", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        rows.append((f"c{i}.flac", n, "a" if i % 2 else "b"))
    for split in ("train", "valid"):
        (tmp_path / f"{split}.tsv").write_text("\n".join([str(tmp_path)] + [f"{p}\t{n}" for p, n, _ in rows]) + "\n")
        (tmp_path / f"{split}.lbl").write_text("\n".join(label for *_, label in rows) + "\n")
    (tmp_path / "labels.csv").write_text("index,name\n0,a\n1,b\n")
    return tmp_path


def test_training_start_logs_the_widths_in_frames_and_seconds(one_and_ten_second_clips, caplog):
    base = OmegaConf.load("config/finetune/mae_ast_finetune.yaml")["task"]
    cfg = OmegaConf.merge(OmegaConf.structured(MAEASTFinetuningConfig),
                          {k: base[k] for k in ("freq_mask", "time_mask", "time_mask_share", "max_sample_size")},
                          {"data": str(one_and_ten_second_clips), "seed": 1, "train_subset": "train"})
    task = MAEASTFinetuningTask.setup_task(cfg)
    with caplog.at_level(logging.INFO, logger="mae_ast.fairseq_plugin.finetuning_task"):
        task.load_dataset("train")
        task.load_dataset("valid")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SpecAugment")]
    assert len(lines) == 1, "logged once, for the training split"
    # the base config: a share of each clip, so 1 s clips get a fifth of a second at most
    assert "up to 19 frames (0.19 s) on the shortest clip (98 frames, 0.98 s)" in lines[0]
    assert "on the longest clip (998 frames, 9.98 s)" in lines[0]
    caplog.clear()
    cfg.time_mask = 192  # AudioSet's recipe width on this data: held under half of the 1 s clips
    with caplog.at_level(logging.INFO, logger="mae_ast.fairseq_plugin.finetuning_task"):
        MAEASTFinetuningTask.setup_task(cfg).load_dataset("train")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("SpecAugment"))
    assert "up to 48 frames (0.48 s) on the shortest clip" in line and "4 of 5 clips" in line
