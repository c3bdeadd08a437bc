"""The trackers train.py logs to besides log.csv, read back with their own clients: TensorBoard's event reader, and
wandb's run file from an offline run (its protobuf records, as `wandb sync` would upload them). One short training
run writes both; each must hold the numbers log.csv holds, at the same iterations."""

import glob
import os
import struct

import pytest

from tests.helpers import ONE_THREAD, TINY_MODEL, read_log, run_script

pytest.importorskip("tensorboard", reason="--tensorboard_log needs tensorboard (pip install -r requirements-test.txt)")
pytest.importorskip("wandb", reason="--wandb_log needs wandb (pip install -r requirements-test.txt)")


@pytest.fixture(scope="module")
def logged_run(tiny_dataset, tmp_path_factory):
    """A tiny run that logged every iteration and evaluated twice, to log.csv, TensorBoard and an offline wandb."""
    tmp = tmp_path_factory.mktemp("trackers")
    env = {**ONE_THREAD, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp), "WANDB_SILENT": "true"}
    run_script("train.py", f"--dataset={tiny_dataset}", f"--out_dir={tmp / 'run'}", *TINY_MODEL, "--max_iters=4",
               "--log_interval=1", "--eval_interval=2", "--tensorboard_log=True", "--wandb_log=True",
               "--wandb_run_name=tracked", env=env)
    rows = read_log(tmp / "run")  # a row per training iteration 1-4, and one per evaluation (0, 2, 4)
    losses = logged(rows, "loss")
    assert set(losses) == {1, 2, 3, 4} and len(set(losses.values())) == 4  # distinct: equality means something
    return tmp, rows


def logged(rows, key):
    """{iteration: value} of a log.csv column where it has one."""
    return {int(r["iter"]): float(r[key]) for r in rows if r[key]}


def test_tensorboard_holds_the_scalars_of_log_csv(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, rows = logged_run
    events = EventAccumulator(str(tmp / "run" / "tensorboard")).Reload()
    for key in ("loss", "val_loss", "lr", "grad_norm"):
        ours = logged(rows, key)
        theirs = {e.step: e.value for e in events.Scalars(key)}
        assert theirs.keys() == ours.keys(), key
        assert theirs == pytest.approx(ours, rel=1e-6), key  # TensorBoard stores float32
    assert logged(rows, "val_loss").keys() == {0, 2, 4}
    assert logged(rows, "loss") != pytest.approx(logged(rows, "val_loss"))  # control: two columns that differ


def wandb_records(path):
    """The protobuf records of a wandb run file: a LevelDB-style log (a 7-byte file header, then 32 KiB blocks of
    records, each with a 7-byte header: checksum, length, and whether it is whole or the first, middle or last
    piece of one) holding wandb's own Record messages."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:7] == b":W&B\xe1\xbe\x00", "not a wandb run file (or a format this reader doesn't know)"
    pos, piece, records = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zeros: the end of what was written
            break
        piece += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(piece)
            records.append(record)
            piece = b""
    return records


def test_an_offline_wandb_run_file_holds_the_rows_of_log_csv(logged_run):
    import json

    tmp, rows = logged_run
    (path,) = glob.glob(os.path.join(tmp, "wandb", "offline-run-*", "run-*.wandb"))
    records = wandb_records(path)
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            # a key is in `key` or, in newer wandb versions, in `nested_key`
            history[r.history.step.num] = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                           for item in r.history.item}
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "tracked"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["n_layer"] == 2 and config["max_iters"] == 4  # the resolved training config
    for key in ("loss", "val_loss", "lr", "grad_norm", "tokens"):
        ours = logged(rows, key)
        theirs = {step: values[key] for step, values in history.items() if key in values}
        assert theirs == ours, key  # wandb keeps the float64 train.py logged, bit for bit
    assert set(history) == {0, 1, 2, 3, 4}
