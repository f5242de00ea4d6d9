"""Exact resume of the training stream, and the stop on data that yields nothing."""

import io
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from lightning_m3ddm.data.datamodule import M3DDMDataModule, NoUsableDataError
from lightning_m3ddm.data.stream_progress import EpochPlan, StreamProgress, continuation_plan
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, write_synthetic_video

SMALL = dict(resolution=32, num_frames=4, num_global_frames=2, pin_memory=False, shuffle_buffer=4)


def _tar(path: Path, samples: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tar:
        for key, data in samples.items():
            info = tarfile.TarInfo(f"{key}.mp4")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict:
    """4 shards of 3 videos; one sample of shard 1 is garbage. And a folder of corrupt videos."""
    root = tmp_path_factory.mktemp("resume")
    videos = [
        write_synthetic_video(root / f"v{i}.mp4", SyntheticVideoSpec(width=32, height=32, num_frames=12, seed=i)).read_bytes()
        for i in range(11)
    ]
    for s in range(4):
        samples = {f"s{s}_{j}": videos.pop() if (s, j) != (1, 1) else b"\x00" * 300 for j in range(3)}
        _tar(root / f"train-{s:06d}.tar", samples)
    (root / "bad").mkdir()
    for s in range(2):
        _tar(root / "bad" / f"bad-{s:06d}.tar", {f"b{s}_{j}": b"\x00" * 300 for j in range(2)})
    return dict(train=str(root / "train-*.tar"), bad=str(root / "bad" / "*.tar"), bad_dir=root / "bad")


def _consume(dm: M3DDMDataModule, loader, limit: int | None = None) -> list[dict]:
    """What Lightning does with each training batch before the step: the datamodule hook."""
    out = []
    for batch in loader:
        out.append(dm.on_before_batch_transfer(batch, 0))
        if limit is not None and len(out) == limit:
            break
    return out


def _same(a: list[dict], b: list[dict]) -> None:
    assert [x["key"] for x in a] == [x["key"] for x in b]
    for x, y in zip(a, b):
        for name in ("video", "mask", "global_frames", "fps"):
            assert torch.equal(x[name], y[name]), (x["key"], name)


def test_progress_continues_after_the_last_delivered_batch():
    progress = StreamProgress.start(EpochPlan(3), num_streams=2)
    progress.record(0, samples_read=2, batches_made=1)
    progress.record(1, samples_read=3, batches_made=1)  # one corrupt sample among its first three
    progress.record(0, samples_read=4, batches_made=2)
    plan = progress.plan()
    assert plan == EpochPlan(3, first_worker=1, samples_read=(4, 3), batches_made=(2, 1))
    assert [plan.role(p, 2) for p in (0, 1)] == [1, 0] and progress.batches == 3
    saved = {"ranks": [progress.state_dict(), StreamProgress.start(EpochPlan(3), 2).state_dict()]}
    resumed, problem = continuation_plan(saved, epoch=3, rank=0, world_size=2, num_streams=2, batches_done=3)
    assert resumed == plan and problem is None
    # a saved position of an earlier epoch: that epoch had ended, the new one starts afresh
    assert continuation_plan(saved, epoch=4, rank=0, world_size=2, num_streams=2) == (EpochPlan(4), None)
    for kwargs, words in [
        (dict(world_size=4, num_streams=2), "2 rank(s), this run has 4"),
        (dict(world_size=2, num_streams=3), "2 data worker(s) per rank, this run has 3"),
        (dict(world_size=2, num_streams=2, batches_done=5), "disagrees"),
    ]:
        fresh, problem = continuation_plan(saved, epoch=3, rank=0, **kwargs)
        assert fresh == EpochPlan(3) and words in problem


@pytest.mark.timeout(240)
def test_resumed_stream_reads_the_batches_of_the_uninterrupted_one(shards):
    """2 workers, a corrupt sample, a stop after 3 batches and the epoch boundary after it."""
    make = lambda **kw: M3DDMDataModule(train_shards=shards["train"], batch_size=2, num_workers=2, **SMALL, **kw)
    straight_dm = make()
    loader = straight_dm.train_dataloader()
    epochs = [_consume(straight_dm, loader) for _ in range(2)]
    straight = epochs[0] + epochs[1]
    assert len(epochs[0]) >= 4 and [b["key"] for b in epochs[0]] != [b["key"] for b in epochs[1]]

    first_dm = make()
    head = _consume(first_dm, first_dm.train_dataloader(), limit=3)
    state = first_dm.state_dict()
    assert state["train_stream"]["ranks"][0]["next_worker"] == 1  # the next batch is worker 1's

    # persistent workers: the second epoch's plan reaches workers started for the first
    resumed_dm = make(persistent_workers=True)
    resumed_dm.load_state_dict(state)
    loader = resumed_dm.train_dataloader()
    tail = _consume(resumed_dm, loader) + _consume(resumed_dm, loader)
    _same(head + tail, straight)


@pytest.mark.timeout(60)
def test_a_folder_of_corrupt_videos_stops_fit_with_one_message(shards):
    from test_data_datamodule import _Probe

    dm = M3DDMDataModule(train_shards=shards["bad"], batch_size=1, num_workers=2, **SMALL)
    trainer = L.Trainer(max_steps=5, logger=False, accelerator="cpu", enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    start = time.monotonic()
    with pytest.raises(NoUsableDataError) as stop:
        trainer.fit(_Probe(), datamodule=dm)
    message = str(stop.value)
    assert "no usable training data" in message and "2 shard(s)" in message
    assert all(str(p) in message for p in shards["bad_dir"].glob("*.tar"))
    assert time.monotonic() - start < 60


def test_too_few_shards_for_the_ranks_is_an_error(shards):
    dm = M3DDMDataModule(train_shards=shards["train"], batch_size=1, num_workers=2, **SMALL)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=8)
    with pytest.raises(ValueError, match="4 shard.* for 8 ranks leave rank 4 and above without data"):
        dm.train_dataloader()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stop", [5, 11], ids=["mid-epoch", "epoch-end"])
def test_fit_resumed_from_a_checkpoint_trains_on_the_same_batches(shards, tmp_path, stop):
    """Through Lightning's own loops: 11 batches an epoch (one sample corrupt), checkpoints by
    ModelCheckpoint, resumed inside epoch 0 and at its last batch, run into epoch 1."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from test_data_datamodule import _Probe

    def fit(max_steps, ckpt_path=None, callbacks=()):
        model = _Probe()
        dm = M3DDMDataModule(train_shards=shards["train"], batch_size=1, num_workers=2, persistent_workers=True, **SMALL)
        trainer = L.Trainer(max_steps=max_steps, logger=False, accelerator="cpu", enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks),
                            enable_checkpointing=bool(callbacks))
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return model.seen

    every_step = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=stop, save_top_k=-1)
    straight = fit(14, callbacks=[every_step])
    assert len(straight) == 14 and len(set(straight[:11])) == 11  # epoch 0 holds 11 good samples
    assert fit(14, ckpt_path=tmp_path / "ckpt" / f"step={stop}.ckpt") == straight[stop:]
