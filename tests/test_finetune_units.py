"""Fine-tuning's parts without a fairseq run: metrics against scikit-learn (and over the whole
validation set, not per batch), mixup and SpecAugment, weighted sampling, the labelled dataset
and its collater on real audio files, the losses, the epoch-counted lr schedule against
SSAST's (torch's MultiStepLR), and the refusals that guard the fairseq model."""
import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from mae_ast.core import metrics
from mae_ast.core.augment import SpecAugment, mixup
from mae_ast.core.features import num_frames
from mae_ast.fairseq_plugin.classification_criterion import ClassificationCriterion
from mae_ast.fairseq_plugin.classifier_model import check_optimizer_reads_lr_scales, check_weights_stay_fp32
from mae_ast.core.metrics import multi_hot
from mae_ast.fairseq_plugin.finetuning_dataset import LabelledAudioDataset, sampling_weights
from mae_ast.fairseq_plugin.lr_scheduler import EpochStepDecay, EpochStepDecayConfig
from mae_ast.manifest import Manifest
from fairseq.logging import metrics as fairseq_metrics


# ---- metrics ----------------------------------------------------------------------------------
def fixed_scores():
    """12 clips x 4 classes: ties within a class and across clips, class 3 without positives."""
    scores = torch.tensor([
        [0.9, 0.1, 0.5, 0.2], [0.8, 0.3, 0.5, 0.2], [0.8, 0.7, 0.1, 0.9], [0.1, 0.7, 0.2, 0.2],
        [0.4, 0.4, 0.4, 0.4], [0.3, 0.9, 0.6, 0.1], [0.2, 0.2, 0.9, 0.3], [0.6, 0.6, 0.3, 0.5],
        [0.5, 0.1, 0.8, 0.7], [0.2, 0.8, 0.8, 0.6], [0.9, 0.3, 0.2, 0.1], [0.4, 0.5, 0.5, 0.0]])
    targets = torch.zeros(12, 4)
    for clip, cls in [(0, 0), (1, 0), (2, 1), (3, 1), (4, 0), (5, 1), (6, 2), (7, 0), (8, 2), (9, 1), (10, 0),
                      (11, 2), (2, 0), (9, 2)]:
        targets[clip, cls] = 1
    return scores, targets


def test_metrics_equal_sklearn_with_ties_and_a_class_without_positives():
    scores, targets = fixed_scores()
    ap, auc = metrics.average_precision(scores, targets), metrics.roc_auc(scores, targets)
    for c in range(3):
        assert ap[c].item() == pytest.approx(average_precision_score(targets[:, c], scores[:, c]), abs=1e-12)
        assert auc[c].item() == pytest.approx(roc_auc_score(targets[:, c], scores[:, c]), abs=1e-12)
    assert ap[3].isnan() and auc[3].isnan()  # sklearn warns or raises there: left out of the mean
    figures = metrics.summary(scores, targets, multi_label=True)
    assert figures["mAP"] == pytest.approx(np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in range(3)]))
    assert figures["roc_auc"] == pytest.approx(roc_auc_score(targets[:, :3], scores[:, :3], average="macro"))
    single = torch.eye(4)[[0, 1, 2, 1, 0, 3, 2, 0, 1, 2, 3, 0]]
    assert metrics.accuracy(scores, single) == pytest.approx(accuracy_score(single.argmax(1), scores.argmax(1)))


def reduce(logging_outputs):
    """What fairseq's validation does with a criterion's logging outputs: in a fresh
    aggregator, reduce each batch's (one valid_step each), then read the smoothed values."""
    with fairseq_metrics.aggregate(new_root=True) as agg:
        for output in logging_outputs:
            ClassificationCriterion.reduce_metrics([output])
        return agg.get_smoothed_values()


def test_validation_figures_are_over_the_whole_set_not_per_batch():
    scores, targets = fixed_scores()
    batches = [(0, 5), (5, 9), (9, 12)]
    outputs = [{"loss": torch.tensor(1.0), "sample_size": b - a, "scores": scores[a:b], "targets": targets[a:b]}
               for a, b in batches]
    values = reduce(outputs)
    whole = metrics.summary(scores, targets, multi_label=True)
    assert values["mAP"] == pytest.approx(whole["mAP"], abs=1e-4)
    assert values["roc_auc"] == pytest.approx(whole["roc_auc"], abs=1e-4)
    per_batch = np.nanmean([metrics.summary(scores[a:b], targets[a:b], True)["mAP"] for a, b in batches])
    assert abs(per_batch - whole["mAP"]) > 0.01, "the batches' mean differs: the test can tell them apart"
    assert "_whole_set" not in values, "the meter itself is not printed"
    assert values["loss"] == pytest.approx(3 / 12)


def test_training_logs_accuracy_from_counts_and_no_whole_set_figures():
    values = reduce([{"loss": torch.tensor(2.0), "sample_size": 4, "correct": 3},
                     {"loss": torch.tensor(1.0), "sample_size": 4, "correct": 1}])
    assert values["accuracy"] == pytest.approx(0.5) and values["loss"] == pytest.approx(3 / 8)
    assert "mAP" not in values and "roc_auc" not in values



def edge_case_scores():
    """10 clips x 4 classes, random scores with a few ties; class 0's lowest-scored clip is
    positive, class 1 has one positive, class 2 one negative, class 3 soft targets of exactly
    0.5 (negative: positive means > 0.5) beside 0.9s."""
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(10, 4, generator=g).round(decimals=1)
    targets = torch.zeros(10, 4)
    targets[scores[:, 0].argmin(), 0] = 1
    targets[[1, 4], 0] = 1
    targets[6, 1] = 1
    targets[:, 2] = 1
    targets[2, 2] = 0
    targets[[0, 3, 5], 3] = 0.5
    targets[[1, 7], 3] = 0.9
    return scores, targets


def test_metrics_equal_sklearn_at_the_edges_of_a_class():
    scores, targets = edge_case_scores()
    positives = (targets > 0.5).int()
    ap, auc = metrics.average_precision(scores, targets), metrics.roc_auc(scores, targets)
    for c in range(4):
        assert ap[c].item() == pytest.approx(average_precision_score(positives[:, c], scores[:, c]), abs=1e-12), c
        assert auc[c].item() == pytest.approx(roc_auc_score(positives[:, c], scores[:, c]), abs=1e-12), c
    assert positives[scores[:, 0].argmin(), 0] == 1 and positives[:, 1].sum() == 1 and positives[:, 2].sum() == 9


def test_single_label_summary_is_accuracy_and_map():
    scores, _ = edge_case_scores()
    labels = torch.tensor([3, 1, 2, 2, 0, 3, 1, 1, 0, 2])
    single = torch.eye(4)[labels]
    figures = metrics.summary(scores, single, multi_label=False)
    assert set(figures) == {"mAP", "accuracy"}
    assert figures["accuracy"] == pytest.approx(accuracy_score(labels, scores.argmax(1)))
    assert figures["accuracy"] != pytest.approx(float((scores.argmax(1) == labels[0]).float().mean())), "the test can tell"
    assert figures["mAP"] == pytest.approx(np.mean([average_precision_score(single[:, c], scores[:, c]) for c in range(4)]))


def test_a_set_without_any_scorable_class_reports_nan():
    scores = torch.rand(5, 3)
    figures = metrics.summary(scores, torch.zeros(5, 3), multi_label=True)
    assert np.isnan(figures["mAP"]) and np.isnan(figures["roc_auc"])

# ---- losses -----------------------------------------------------------------------------------
class _Task:
    def __init__(self, multi_label):
        self.multi_label = multi_label


def test_losses_take_soft_targets_and_label_smoothing():
    torch.manual_seed(0)
    logits, soft = torch.randn(5, 4), torch.softmax(torch.randn(5, 4), 1)
    ce = ClassificationCriterion(_Task(False), "auto", 0.0)
    assert ce.loss == "ce"
    assert ce.compute_loss(logits, soft).item() == pytest.approx(-(soft * logits.log_softmax(1)).sum().item(), rel=1e-6)
    one_hot = torch.eye(4)[[0, 1, 2, 3, 0]]
    smoothed = ClassificationCriterion(_Task(False), "ce", 0.1)
    expected = torch.nn.functional.cross_entropy(logits, one_hot.argmax(1), label_smoothing=0.1, reduction="sum")
    assert smoothed.compute_loss(logits, one_hot).item() == pytest.approx(expected.item(), rel=1e-6)
    bce = ClassificationCriterion(_Task(True), "auto", 0.2)
    assert bce.loss == "bce"
    multi = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.float)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, multi * 0.8 + 0.1) * 5  # mean x clips
    assert bce.compute_loss(logits, multi).item() == pytest.approx(expected.item(), rel=1e-6)


# ---- augmentation -----------------------------------------------------------------------------
def test_mixup_mixes_waveforms_and_targets_with_the_same_weight():
    g = torch.Generator().manual_seed(3)
    wavs = torch.randn(6, 800)
    lengths = torch.tensor([800, 400, 800, 600, 200, 800])
    wavs = wavs * (torch.arange(800)[None] < lengths[:, None])
    targets = torch.eye(3)[[0, 1, 2, 0, 1, 2]]
    mixed, new_lengths, new_targets = mixup(wavs, lengths, targets, 1.0, g)
    assert mixed.shape == wavs.shape and new_targets.shape == targets.shape
    torch.testing.assert_close(new_targets.sum(1), torch.ones(6))
    for i in range(6):
        lam = new_targets[i, targets[i].argmax()].item()  # the clip's own class keeps weight lam (> 0.5 mostly)
        others = [j for j in range(6) if j != i and torch.allclose(mixed[i], lam * wavs[i] + (1 - lam) * wavs[j], atol=1e-5)]
        assert others, f"clip {i} is lam * itself + (1 - lam) * another clip, lam from its target"
        assert new_lengths[i] == max(lengths[i], lengths[others[0]])
    untouched = mixup(wavs, lengths, targets, 0.0, g)
    assert untouched[0] is wavs and untouched[2] is targets


def test_spec_augment_masks_within_each_clip_and_keeps_shapes():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 300, 128) + 5  # no zeros of their own
    frames = torch.tensor([300, 250, 100, 40, 300, 120, 16, 200])
    out = SpecAugment(24, 96, g)(feats, frames)
    assert out.shape == feats.shape
    masked = out == 0
    for i in range(8):
        freq_masked = masked[i].all(0)  # mel bins masked in every frame
        time_masked = masked[i].all(1)  # frames masked in every bin
        assert int(freq_masked.sum()) < 24 and int(time_masked.sum()) < 96
        assert not time_masked[frames[i]:].any(), "time masks fall inside the clip's own frames"
        assert bool((masked[i] == (freq_masked[None, :] | time_masked[:, None])).all()), "whole bands only"
    assert masked.any(), "something is masked"


# ---- sampling weights and the dataset ---------------------------------------------------------
def test_sampling_weights_are_sums_of_inverse_label_frequencies():
    labels = [[0], [0], [0], [0, 1], [2]]
    weights = sampling_weights(labels, 3)
    raw = np.array([1 / 4, 1 / 4, 1 / 4, 1 / 4 + 1 / 1, 1 / 1])
    np.testing.assert_allclose(weights, raw / raw.sum())


@pytest.fixture(scope="module")
def labelled_files(tmp_path_factory):
    """Real flac files of different lengths, a manifest and labels: 3 of class 0, one each of
    1 and 2 (one with two labels), plus a listed file that is not audio."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    lengths = [16000, 9000, 12000, 16000, 20000]
    names = []
    for i, n in enumerate(lengths):
        sf.write(root / f"clip{i}.flac", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        names.append(f"clip{i}.flac")
    (root / "broken.flac").write_bytes(b"not audio at all" * 100)
    lines = [str(root)] + [f"{name}\t{n}" for name, n in zip(names, lengths)] + ["broken.flac\t16000"]
    (root / "train.tsv").write_text("\n".join(lines) + "\n")
    labels = [[0], [0], [0], [1, 0], [2], [1]]
    return root, Manifest.load(str(root / "train.tsv")), labels


def test_collater_pads_and_gives_multi_hot_targets(labelled_files):
    _, manifest, labels = labelled_files
    valid = LabelledAudioDataset(manifest, labels, 3, max_sample_size=12000, training=False)
    batch = valid.collater([valid[i] for i in range(5)])
    wavs, lengths = batch["net_input"]["wavs"], batch["net_input"]["lengths"]
    assert wavs.shape == (5, 12000) and lengths.tolist() == [12000, 9000, 12000, 12000, 12000]
    assert bool((wavs[1, 9000:] == 0).all()), "zero padding past the short clip"
    torch.testing.assert_close(batch["target"], multi_hot(labels[:5], 3))
    assert batch["target"][3].tolist() == [1.0, 1.0, 0.0]
    assert "augment_seed" not in batch, "validation batches are not augmented"
    # validation crops from the start: the first 12000 samples of the 20000-sample file
    whole, _ = sf.read(str(manifest.audio_path(4)), dtype="float32")
    torch.testing.assert_close(wavs[4], torch.from_numpy(whole[:12000]), atol=1e-4, rtol=0)


def test_training_batches_mix_and_are_reproducible(labelled_files):
    _, manifest, labels = labelled_files
    train = LabelledAudioDataset(manifest, labels, 3, max_sample_size=12000, mixup_prob=1.0, seed=5)
    a = train.collater([train[i] for i in range(5)])
    b = train.collater([train[i] for i in range(5)])
    torch.testing.assert_close(a["net_input"]["wavs"], b["net_input"]["wavs"])
    assert a["augment_seed"] == b["augment_seed"]
    assert not torch.equal(a["target"], multi_hot(labels[:5], 3)), "mixup mixed the targets"
    train.set_epoch(2)
    c = train.collater([train[i] for i in range(5)])
    assert c["augment_seed"] != a["augment_seed"], "another epoch, other draws"


def test_an_unreadable_clip_is_replaced_with_the_labels_of_the_clip_read(labelled_files, caplog):
    _, manifest, labels = labelled_files
    train = LabelledAudioDataset(manifest, labels, 3, max_sample_size=12000, max_bad_audio_fraction=1.0)
    item = train[5]  # broken.flac, labelled [1]
    assert item["bad_audio"] and item["bad_audio"][0].endswith("broken.flac")
    read = item["clip"]  # the clip whose audio the item holds
    assert read != 5 and item["labels"] == labels[read]
    assert "broken.flac" in caplog.text


def test_each_epoch_has_its_own_order_from_seed_and_epoch(labelled_files):
    _, manifest, labels = labelled_files
    plain = LabelledAudioDataset(manifest, labels, 3, max_sample_size=12000, seed=1)
    assert not plain.can_reuse_epoch_itr_across_epochs, "fairseq must ask for each epoch's order"
    orders = []
    for call, epoch in enumerate((1, 2, 3, 1)):
        plain.set_epoch(epoch)
        np.random.seed(100 + call)  # fairseq seeds numpy around ordered_indices: it must not matter
        orders.append(plain.ordered_indices())
    assert all(sorted(order) == list(range(6)) for order in orders)
    np.testing.assert_array_equal(orders[0], orders[3])
    assert not np.array_equal(orders[0], orders[1]) or not np.array_equal(orders[1], orders[2])
    sizes = np.minimum(plain.sizes, 12000)[orders[0]]
    assert list(sizes) == sorted(sizes, reverse=True), "longest first: batches of similar lengths"


def test_weighted_sampling_draws_rare_labels_more_often_and_anew_each_epoch(labelled_files):
    _, manifest, labels = labelled_files
    weighted = LabelledAudioDataset(manifest, labels, 3, max_sample_size=12000, weighted_sampling=True, seed=1)
    draws = []
    for epoch in range(1, 401):
        weighted.set_epoch(epoch)
        draws.append(weighted.ordered_indices())
    weighted.set_epoch(3)
    np.testing.assert_array_equal(weighted.ordered_indices(), draws[2])  # (seed, epoch) decide
    assert not all(np.array_equal(draws[0], d) for d in draws[1:5])
    counts = np.bincount(np.concatenate(draws), minlength=6) / (400 * 6)
    np.testing.assert_allclose(counts, weighted.weights, atol=0.02)
    label_draws = [sum(counts[i] for i in range(6) if c in labels[i]) for c in range(3)]
    assert max(label_draws) / min(label_draws) < 2.2, label_draws  # near balanced (class 0 sits beside 1)
    plain_draws = [sum(1 for clip in labels if c in clip) for c in range(3)]
    assert max(plain_draws) / min(plain_draws) == 4


# ---- the lr schedule --------------------------------------------------------------------------
@pytest.mark.parametrize("start,step,decay,warmup", [(6, 1, 0.85, 0), (10, 5, 0.5, 0), (5, 1, 0.85, 30)])
def test_epoch_step_decay_follows_ssast_multisteplr(start, step, decay, warmup):
    """SSAST: MultiStepLR(milestones=range(start, 1000, step), gamma=decay), stepped after each
    epoch; warmup raises the lr linearly over the first updates."""
    from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig

    param = torch.nn.Parameter(torch.zeros(1))
    reference = torch.optim.SGD([param], lr=1e-3)
    multistep = torch.optim.lr_scheduler.MultiStepLR(reference, list(range(start, 1000, step)), gamma=decay)
    cfg = OmegaConf.structured(EpochStepDecayConfig(warmup_updates=warmup, decay_start_epoch=start,
                                                    decay_every_epochs=step, decay=decay, lr=[1e-3]))
    schedule = EpochStepDecay(cfg, FairseqAdam(OmegaConf.structured(FairseqAdamConfig(lr=[1e-3], tpu=False)), [param]))
    updates_per_epoch = 10
    for epoch in range(1, 26):
        schedule.step_begin_epoch(epoch)
        for u in range((epoch - 1) * updates_per_epoch, epoch * updates_per_epoch):
            lr = schedule.step_update(u)
            expected = reference.param_groups[0]["lr"] * (min(1.0, u / warmup) if warmup else 1.0)
            assert lr == pytest.approx(expected, rel=1e-9), (epoch, u)
        schedule.step(epoch)
        multistep.step()


# ---- refusals ---------------------------------------------------------------------------------
def run_config(**sections):
    """A run's whole config with a model section whose parent it is (as fairseq builds them)."""
    root = OmegaConf.create({"common": {"fp16": False, "bf16": False}, "model": {"layer_decay": 0.75}, **sections})
    return root, root.model


def test_layer_decay_needs_the_composite_optimizer_with_dynamic_groups():
    _, model_cfg = run_config(optimizer={"_name": "adam"})
    with pytest.raises(ValueError, match="model.layer_decay=0.75 needs the composite optimizer.*'adam'"):
        check_optimizer_reads_lr_scales(model_cfg)
    _, model_cfg = run_config(optimizer={"_name": "composite", "dynamic_groups": False})
    with pytest.raises(ValueError, match="without dynamic_groups: true"):
        check_optimizer_reads_lr_scales(model_cfg)
    _, model_cfg = run_config(optimizer={"_name": "composite", "dynamic_groups": True})
    check_optimizer_reads_lr_scales(model_cfg)


def test_half_precision_weights_are_refused_with_the_alternatives():
    root, model_cfg = run_config()
    check_weights_stay_fp32(model_cfg)
    root.common.bf16 = True
    with pytest.raises(ValueError, match="common.bf16=true .* model.autocast_dtype=bf16"):
        check_weights_stay_fp32(model_cfg)


def test_num_frames_of_the_recipe_windows():
    """The recipes' max_sample_size are SSAST's target lengths in frames."""
    assert [int(num_frames(n)) for n in (82160, 20720, 164080)] == [512, 128, 1024]
