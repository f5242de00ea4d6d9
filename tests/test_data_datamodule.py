"""M3DDMDataModule: batches from shards in 2 workers, video2dataset shards, corrupt samples, setup errors."""

import io
import json
import tarfile
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers.logger import Logger

from data_prep.sharding import ShardOptions, VideoItem, write_shards
from lightning_m3ddm.data.datamodule import M3DDMDataModule, resolve_shards
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, write_synthetic_video
from lightning_m3ddm.video.decode import center_crop_plan, decode_frames

CARPHONE = Path(__file__).parent / "data" / "carphone_176x144_30fps_120f.mp4"
TINY = dict(resolution=(48, 64), num_frames=16, num_global_frames=4, shuffle_buffer=4, pin_memory=False)


def _tar(path: Path, samples: list[dict]) -> Path:
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            key = sample.pop("__key__")
            for ext, data in sample.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dm")
    items = []
    for i in range(6):
        path = write_synthetic_video(root / "videos" / f"v{i}.mp4", SyntheticVideoSpec(width=96, height=64, num_frames=40, fps=24, seed=i))
        items.append(VideoItem(str(path), f"synthetic_{i}", caption=f"scene {i}"))
    short = write_synthetic_video(root / "videos" / "short.mp4", SyntheticVideoSpec(width=64, height=48, num_frames=9, seed=9))
    items += [VideoItem(str(short), "short"), VideoItem(str(CARPHONE), "carphone")]
    write_shards(items, ShardOptions(output=root / "shards", shard_size=2, progress=False))

    good = CARPHONE.read_bytes()
    v2d = _tar(root / "v2d-00000.tar", [
        {"__key__": "000000000", "mp4": good, "txt": b"a man on the phone in a car",
         "json": json.dumps({"url": "https://example.invalid/a.mp4", "key": "000000000", "status": "success",
                             "error_message": None, "duration": 4.0}).encode()},
        {"__key__": "000000001", "mp4": (root / "videos" / "v0.mp4").read_bytes(), "txt": b"synthetic pan",
         "json": b'{"status": "success", "caption": "from json"}'},
    ])
    corrupt = _tar(root / "corrupt-000000.tar", [
        {"__key__": "ok1", "mp4": good},
        {"__key__": "truncated", "mp4": good[: len(good) // 3]},
        {"__key__": "nothing", "json": b"{}"},
        {"__key__": "garbage", "mp4": b"\x00" * 500},
        {"__key__": "ok2", "mp4": (root / "videos" / "v1.mp4").read_bytes()},
    ])
    cut = root / "cut-000000.tar"  # a shard truncated inside its second sample's video
    with tarfile.open(v2d) as tar:
        second = next(m for m in tar.getmembers() if m.name == "000000001.mp4")
    cut.write_bytes(Path(v2d).read_bytes()[: second.offset_data + second.size // 2])
    return dict(root=root, shards=str(root / "shards" / "shard-*.tar"), v2d=str(v2d), corrupt=str(corrupt), cut=str(cut))


def _check_batch(batch: dict, b: int, f: int = 16, g: int = 4, h: int = 48, w: int = 64) -> None:
    assert batch["video"].shape == (b, f, 3, h, w) and batch["masked_video"].shape == (b, f, 3, h, w)
    assert batch["mask"].shape == (b, f, 1, h, w) and batch["global_frames"].shape == (b, g, 3, h, w)
    assert batch["fps"].shape == (b,) and batch["fps"].dtype == torch.long
    assert ((batch["fps"] >= 1) & (batch["fps"] <= 30)).all()
    assert len(batch["key"]) == b and len(batch["caption"]) == b
    for name in ("video", "masked_video", "global_frames"):
        assert batch[name].dtype == torch.float32
        assert batch[name].min() >= -1 and batch[name].max() <= 1
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    hidden = batch["mask"].bool().expand_as(batch["video"])
    assert batch["masked_video"][hidden].eq(-1).all()
    assert torch.equal(batch["masked_video"][~hidden], batch["video"][~hidden])
    for i in range(b):
        context = batch["mask"][i, :, 0].flatten(1).sum(1) > 0  # frames that are not given whole
        if context.any():
            spatial = batch["mask"][i, int(context.nonzero()[0])].bool()  # (1, H, W)
            assert batch["global_frames"][i][spatial.expand(g, 3, -1, -1)].eq(-1).all()
            if not spatial.all():
                assert batch["global_frames"][i][~spatial.expand(g, 3, -1, -1)].ne(-1).any()


@pytest.mark.timeout(180)
def test_batches_from_shards_in_two_workers(data):
    # Decode in this process first: forked workers must not inherit a scaler thread pool (deadlock).
    decode_frames(CARPHONE, [0], plan=center_crop_plan(144, 176, 48, 64))
    dm = M3DDMDataModule(train_shards=data["shards"], batch_size=2, num_workers=2, **TINY)
    dm.setup("fit")
    assert len(dm.train_urls) == 4
    batches = list(dm.train_dataloader())
    assert len(batches) >= 3  # 8 videos, 4 shards split over 2 workers, full batches only
    keys = [k for batch in batches for k in batch["key"]]
    assert len(keys) == len(set(keys)) and set(keys) <= {f"synthetic_{i}" for i in range(6)} | {"short", "carphone"}
    for batch in batches:
        _check_batch(batch, 2)
        assert batch["num_skipped"] == 0
    captions = {k: c for batch in batches for k, c in zip(batch["key"], batch["caption"])}
    assert all(c == f"scene {k[-1]}" for k, c in captions.items() if k.startswith("synthetic"))


def test_short_video_is_padded_with_its_last_frame(data):
    dm = M3DDMDataModule(val_shards=data["shards"], batch_size=8, num_workers=0, **TINY)
    batch = next(iter(dm.val_dataloader()))
    i = batch["key"].index("short")
    video = batch["video"][i]
    assert torch.equal(video[9:], video[8:9].expand(7, -1, -1, -1))  # 9 frames, then copies of the last
    assert batch["fps"][i] == 24


def test_video2dataset_shards_are_read_as_they_are(data):
    dm = M3DDMDataModule(val_shards=data["v2d"], batch_size=4, num_workers=0, **TINY)
    batches = list(dm.val_dataloader())
    assert len(batches) == 1
    _check_batch(batches[0], 2)
    assert batches[0]["key"] == ["000000000", "000000001"]
    assert batches[0]["caption"] == ["a man on the phone in a car", "from json"]  # json caption wins over txt


def test_validation_is_deterministic(data):
    dm = M3DDMDataModule(val_shards=data["shards"], batch_size=3, num_workers=0, **TINY)
    first, second = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert [b["key"] for b in first] == [b["key"] for b in second]
    for a, b in zip(first, second):
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["video"], b["video"]) and torch.equal(a["fps"], b["fps"])


def test_training_epochs_draw_new_augmentations(data):
    dm = M3DDMDataModule(train_shards=data["shards"], batch_size=2, num_workers=0, **TINY)
    loader = dm.train_dataloader()
    epochs = [{k: m for b in loader for k, m in zip(b["key"], b["mask"])} for _ in range(2)]
    common = set(epochs[0]) & set(epochs[1])
    assert common and any(not torch.equal(epochs[0][k], epochs[1][k]) for k in common)


def test_corrupt_samples_are_skipped_and_counted(data):
    dm = M3DDMDataModule(val_shards=[data["corrupt"], data["cut"], data["v2d"]], batch_size=2, num_workers=0, **TINY)
    batches = list(dm.val_dataloader())
    keys = [k for b in batches for k in b["key"]]
    # 3 bad samples in the first shard; the cut shard keeps its first sample, loses the broken one
    assert keys == ["ok1", "ok2", "000000000", "000000000", "000000001"]
    assert sum(b["num_skipped"] for b in batches) == 4  # 3 samples + 1 damaged shard
    for batch in batches:
        dm.on_before_batch_transfer(batch, 0)
        assert "num_skipped" not in batch
    assert dm.skipped_samples == 4


class _Recorder(Logger):
    def __init__(self):
        super().__init__()
        self.metrics = []

    name, version = "recorder", 0

    @property
    def experiment(self):
        return None

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.append(dict(metrics))


class _Probe(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def training_step(self, batch, batch_idx):
        assert "num_skipped" not in batch
        self.seen += batch["key"]
        return (self.weight - batch["video"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_skipped_samples_reach_the_trainer_loggers(data):
    dm = M3DDMDataModule(train_shards=data["corrupt"], batch_size=1, num_workers=0, shuffle_buffer=0,
                         **{k: v for k, v in TINY.items() if k != "shuffle_buffer"})
    recorder, model = _Recorder(), _Probe()
    trainer = L.Trainer(max_epochs=1, logger=recorder, accelerator="cpu", enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, datamodule=dm)
    assert sorted(model.seen) == ["ok1", "ok2"]
    assert dm.skipped_samples == 3
    assert max(m["data/skipped_samples"] for m in recorder.metrics if "data/skipped_samples" in m) == 3


def test_resampled_shards_give_a_fixed_epoch_length(data):
    dm = M3DDMDataModule(train_shards=data["shards"], batch_size=2, num_workers=0, resampled=True,
                         samples_per_epoch=10, **TINY)
    batches = list(dm.train_dataloader())
    assert len(batches) == 5
    _check_batch(batches[0], 2)


def test_pipe_urls_stream_through_a_shell_command(data):
    dm = M3DDMDataModule(val_shards=f"pipe:cat {data['v2d']}", batch_size=2, num_workers=0, **TINY)
    assert next(iter(dm.val_dataloader()))["key"] == ["000000000", "000000001"]


def test_shard_specs_are_resolved(data, tmp_path):
    shards = sorted(Path(data["shards"]).parent.glob("shard-*.tar"))
    brace = str(shards[0].parent / "shard-{000000..000003}.tar")
    assert resolve_shards(brace) == [str(s) for s in shards]
    assert resolve_shards([str(shards[0]), data["shards"]]) == [str(shards[0])] + [str(s) for s in shards]
    assert resolve_shards(f"{shards[1]}::{data['v2d']}") == [str(shards[1]), data["v2d"]]
    assert resolve_shards("pipe:aws s3 cp s3://bucket/x-{0..2}.tar -") == [f"pipe:aws s3 cp s3://bucket/x-{i}.tar -" for i in range(3)]
    assert resolve_shards(f"file://{shards[0]}") == [str(shards[0])]


def test_setup_errors_are_clear(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="train_shards: .*nowhere.*matches no shard"):
        M3DDMDataModule(train_shards=str(tmp_path / "nowhere-*.tar")).setup("fit")
    with pytest.raises(FileNotFoundError, match="matches no shard"):
        M3DDMDataModule(train_shards=str(tmp_path / "s-{000..004}.tar")).setup("fit")
    with pytest.raises(ValueError, match="no shards given"):
        M3DDMDataModule(train_shards=[]).setup("fit")
    with pytest.raises(ValueError, match="samples_per_epoch"):
        M3DDMDataModule(train_shards=data["shards"], resampled=True)


def test_validation_is_not_split_by_rank_but_training_is():
    """Sharded collectives need equal batch counts per rank: every rank reads every
    validation shard, while training shards are split (or resampled)."""
    from lightning_m3ddm.data.augmentation import AugmentationConfig
    from lightning_m3ddm.data.clips import ClipConfig
    from lightning_m3ddm.data.datamodule import ClipStream

    urls = [f"s{i}.tar" for i in range(3)]
    val = ClipStream(urls, ClipConfig(), AugmentationConfig(), 2, train=False)
    assert [val.rank_shards(0, r, 4) for r in range(4)] == [urls] * 4
    train = ClipStream(urls, ClipConfig(), AugmentationConfig(), 2, train=True)
    split = [train.rank_shards(0, r, 2) for r in range(2)]
    assert sorted(split[0] + split[1]) == urls and not set(split[0]) & set(split[1])
