"""mae_ast.fairseq_log reads the json records of fairseq's training log.

``EXCERPT`` is copied verbatim from the stdout of a real run (fairseq-fixed 0.12.3.1, the tiny
16x16 model of conftest, ``common.log_interval=2``, four training clips so one update per
epoch, validation every 2 updates); the last test runs fairseq again and reads its output."""
import pytest

from mae_ast import fairseq_log
from mae_ast.fairseq_log import LogRecord, last_per_update, parse_line, read_log_file, read_records

EXCERPT = r"""[2026-11-24 04:00:53,932][fairseq_cli.train][INFO] - end of epoch 1 (average epoch stats below)
[2026-11-24 04:00:53,934][train][INFO] - {"epoch": 1, "train_loss": "15.1994", "train_loss_recon": "0.5701", "train_loss_info_nce": "9.4983", "train_bad_audio": "0", "train_wps": "0", "train_ups": "0", "train_wpb": "576", "train_bsz": "4", "train_num_updates": "1", "train_lr": "3.125e-09", "train_gnorm": "14.554", "train_clip": "100", "train_train_wall": "0", "train_wall": "1"}
[2026-11-24 04:00:53,935][fairseq.tasks.fairseq_task][INFO] - can_reuse_epoch_itr = True
[2026-11-24 04:00:53,950][fairseq.data.iterators][INFO] - grouped total_num_itrs = 1
[2026-11-24 04:00:53,952][fairseq.trainer][INFO] - begin training epoch 2
[2026-11-24 04:00:53,952][fairseq_cli.train][INFO] - Start iterating over samples
[2026-11-24 04:00:53,985][train_inner][INFO] - {"epoch": 2, "update": 2.0, "loss": "15.323", "loss_recon": "0.5739", "loss_info_nce": "9.5842", "bad_audio": "0", "wps": "9085.5", "ups": "15.69", "wpb": "576", "bsz": "4", "num_updates": "2", "lr": "6.25e-09", "gnorm": "13.457", "clip": "100", "train_wall": "0", "wall": "1"}
[2026-11-24 04:00:53,985][fairseq_cli.train][INFO] - begin validation on "valid" subset
[2026-11-24 04:00:53,986][fairseq.tasks.fairseq_task][INFO] - can_reuse_epoch_itr = True
[2026-11-24 04:00:54,030][valid][INFO] - {"epoch": 2, "valid_loss": "40.9728", "valid_loss_recon": "2.2163", "valid_loss_info_nce": "18.8094", "valid_bad_audio": "0", "valid_wps": "0", "valid_wpb": "552", "valid_bsz": "4", "valid_num_updates": "2"}
[2026-11-24 04:00:54,032][fairseq.checkpoint_utils][INFO] - Preparing to save checkpoint for epoch 2 @ 2 updates
[2026-11-24 04:00:54,032][fairseq.trainer][INFO] - Saving checkpoint to /tmp/flog/w/run/checkpoints/checkpoint_best.pt
[2026-11-24 04:00:54,044][fairseq.trainer][INFO] - Finished saving checkpoint to /tmp/flog/w/run/checkpoints/checkpoint_best.pt
[2026-11-24 04:00:54,045][fairseq.checkpoint_utils][INFO] - Saved checkpoint checkpoints/checkpoint_best.pt (epoch 2 @ 2 updates, score 40.9728) (writing took 0.013597961000016312 seconds)
[2026-11-24 04:00:54,045][fairseq_cli.train][INFO] - end of epoch 2 (average epoch stats below)
[2026-11-24 04:00:54,047][train][INFO] - {"epoch": 2, "train_loss": "15.4466", "train_loss_recon": "0.5776", "train_loss_info_nce": "9.6702", "train_bad_audio": "0", "train_wps": "5190.9", "train_ups": "9.01", "train_wpb": "576", "train_bsz": "4", "train_num_updates": "2", "train_lr": "6.25e-09", "train_gnorm": "12.359", "train_clip": "100", "train_train_wall": "0", "train_wall": "1"}
[2026-11-24 04:00:54,121][fairseq_cli.train][INFO] - Start iterating over samples
[2026-11-24 04:00:54,155][train_inner][INFO] - {"epoch": 4, "update": 4.0, "loss": "15.907", "loss_recon": "0.5839", "loss_info_nce": "10.0676", "bad_audio": "0", "wps": "6824.2", "ups": "11.85", "wpb": "576", "bsz": "4", "num_updates": "4", "lr": "1.25e-08", "gnorm": "15.677", "clip": "100", "train_wall": "0", "wall": "1"}
[2026-11-24 04:00:54,155][fairseq_cli.train][INFO] - Stopping training due to num_updates: 4 >= max_update: 4
[2026-11-24 04:00:54,155][fairseq_cli.train][INFO] - begin validation on "valid" subset
[2026-11-24 04:00:54,155][fairseq.tasks.fairseq_task][INFO] - can_reuse_epoch_itr = True
[2026-11-24 04:00:54,192][valid][INFO] - {"epoch": 4, "valid_loss": "27.2434", "valid_loss_recon": "1.262", "valid_loss_info_nce": "14.6234", "valid_bad_audio": "0", "valid_wps": "0", "valid_wpb": "552", "valid_bsz": "4", "valid_num_updates": "4", "valid_best_loss": "27.2434"}
[2026-11-24 04:00:54,192][fairseq.checkpoint_utils][INFO] - Preparing to save checkpoint for epoch 4 @ 4 updates
"""
EXCERPT_LINES = EXCERPT.splitlines()


def test_records_of_a_real_log_in_order():
    records = read_records(EXCERPT)
    assert [r.kind for r in records] == ["train", "train_inner", "valid", "train", "train_inner", "valid"]
    assert [r.values["num_updates"] for r in records] == ["1", "2", "2", "2", "4", "4"]
    assert read_records(EXCERPT_LINES) == records  # lines work as well as one string


def test_train_inner_values_are_as_fairseq_wrote_them():
    record = parse_line(EXCERPT_LINES[6])
    assert record.kind == "train_inner"
    assert record.values["epoch"] == 2 and record.values["update"] == 2.0  # json numbers
    assert record.values["loss"] == "15.323" and record.values["lr"] == "6.25e-09"  # fairseq's strings
    assert record.number("loss_recon") == 0.5739 and record.number("lr") == 6.25e-09


def test_valid_and_train_keys_lose_their_prefix_once():
    valid = parse_line(EXCERPT_LINES[9])
    assert valid.kind == "valid"
    assert valid.values["loss"] == "40.9728" and valid.number("loss_info_nce") == 18.8094
    assert not any(key.startswith("valid_") for key in valid.values)
    best = parse_line(EXCERPT_LINES[-2])
    assert best.values["best_loss"] == "27.2434"  # valid_best_loss
    train = parse_line(EXCERPT_LINES[1])
    assert train.kind == "train" and train.values["loss"] == "15.1994"
    # fairseq's "train_train_wall" (time spent in training) is the "train_wall" of train_inner records
    assert train.values["train_wall"] == "0" and train.values["wall"] == "1"
    assert set(train.values) == set(parse_line(EXCERPT_LINES[6]).values) - {"update"}


def test_other_lines_are_not_records():
    others = [line for line in EXCERPT_LINES if "] - {" not in line]
    assert len(others) == len(EXCERPT_LINES) - 6
    assert all(parse_line(line) is None for line in others)  # e.g. "... score 40.9728)" or "@ 2 updates"


def test_a_line_cut_short_is_skipped():
    cut = EXCERPT_LINES[6][:200]  # a run killed while writing its log
    assert parse_line(cut) is None
    assert [r.kind for r in read_records([cut, EXCERPT_LINES[9]])] == ["valid"]


def test_number_of_missing_or_non_numeric_values_is_none():
    record = parse_line(EXCERPT_LINES[6])
    assert record.number("loss_nonexistent") is None
    assert LogRecord("train_inner", {"loss": "nan?"}).number("loss") is None
    assert LogRecord("train_inner", {"loss": None}).number("loss") is None


def test_last_per_update_keeps_the_later_record_of_a_resumed_run():
    # a run resumed from the checkpoint at update 2 logs updates 3 and 4 again, after the first ones
    resumed = EXCERPT_LINES[6].replace('"loss": "15.323"', '"loss": "14.0"')
    records = read_records(EXCERPT_LINES + [resumed])
    inner = last_per_update(records, "train_inner")
    assert [r.values["num_updates"] for r in inner] == ["2", "4"]
    assert inner[0].values["loss"] == "14.0"
    assert [r.number("loss") for r in last_per_update(records, "valid")] == [40.9728, 27.2434]


def test_read_log_file(tmp_path):
    assert read_log_file(tmp_path / "hydra_train.log") == []  # no run yet
    log = tmp_path / "hydra_train.log"
    log.write_bytes(EXCERPT.encode() + b"\xff\xfe broken bytes\n")
    assert read_log_file(log) == read_records(EXCERPT)


@pytest.mark.slow
def test_a_real_run_logs_what_the_reader_reads(corpus, tmp_path):
    """Guards against the format changing under us: the installed fairseq's own output."""
    from conftest import fairseq_train, tiny_model_overrides

    run_dir = tmp_path / "run"
    proc = fairseq_train(corpus["manifests"], run_dir, *tiny_model_overrides(True), "task.mask_type=chunk_mask",
                         "optimization.max_update=3", "checkpoint.no_save=true", "dataset.validate_interval_updates=3")
    records = read_records(proc.stdout)
    assert records == read_log_file(run_dir / "hydra_train.log")  # stdout and the log file agree
    inner = last_per_update(records, "train_inner")
    assert [r.number("num_updates") for r in inner] == [1, 2, 3]  # common.log_interval=1
    assert {r.kind for r in records} == set(fairseq_log.KINDS)
    for record in records:
        losses = [record.number(key) for key in ("loss", "loss_recon", "loss_info_nce")]
        assert all(loss is not None and loss > 0 for loss in losses), record
        assert abs(10 * losses[1] + losses[2] - losses[0]) < 1e-2 * losses[0], record
