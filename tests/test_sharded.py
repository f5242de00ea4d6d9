"""Sharded training (M3DDMShardedStrategy, FSDP2) on 2 CPU ranks with gloo.

One launch of sharded_worker.py (2 ranks, the paper configs' strategy and settings) is
checked against a single process computing the same global batch with the same random draws:
loss per rank, gradients and ``train/grad_norm`` (the global norm, before clipping); then its
sharded checkpoints: resume, consolidation, and the pretrained-weights loader.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_m3ddm import distributed
from lightning_m3ddm.checkpoints import CheckpointError
from lightning_m3ddm.distributed import consolidate_checkpoint, is_distributed_checkpoint, read_distributed_checkpoint
from lightning_m3ddm.weights import load_pretrained_unet

sys.path.insert(0, str(Path(__file__).parent))
import sharded_worker  # noqa: E402

RANKS = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    worker = Path(sharded_worker.__file__)
    result = subprocess.run(
        [sys.executable, worker.name, str(out), str(RANKS)],
        cwd=worker.parent, env=env, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(RANKS)]


def test_sharded_step_equals_one_process_on_the_global_batch(run):
    out, ranks = run
    assert ranks[0]["sharded"].startswith("FSDP")  # the UNet really was sharded
    module = sharded_worker.make_module()
    module.unet.load_state_dict(ranks[0]["initial"])
    losses = []
    for record in ranks:
        generator = torch.Generator().manual_seed(record["seeds"][0])
        losses.append(module.diffusion_loss(record["batch"], module.unet, dropout=module.condition_dropout, generator=generator))
    # the ranks drew differently and saw different clips, so equality below is not a coincidence
    assert ranks[0]["seeds"][0] != ranks[1]["seeds"][0] and not torch.equal(ranks[0]["batch"]["video"], ranks[1]["batch"]["video"])
    torch.stack(losses).mean().backward()  # FSDP averages the ranks' gradients
    for loss, record in zip(losses, ranks):
        torch.testing.assert_close(record["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in module.unet.named_parameters()}
    for record in ranks:
        assert record["grads"].keys() == grads.keys()
        for name, grad in grads.items():
            # float32 sums in another order (gloo's all-reduce, the conv backward's blocking) differ
            # by rounding of the largest terms, not of each element: the tolerance scales with the
            # tensor's largest entry. A rank left out of the average would be off by about 50%.
            atol = 1e-7 + 1e-5 * grad.abs().max().item()
            torch.testing.assert_close(record["grads"][name], grad, rtol=1e-5, atol=atol, msg=name)
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()]))
    for record in ranks:
        torch.testing.assert_close(torch.tensor(record["grad_norms"][0]), norm, rtol=1e-5, atol=0)


def test_gradients_are_clipped_at_the_global_norm(run):
    _, ranks = run
    clip = sharded_worker.CLIP
    logged, used = ranks[0]["grad_norms"], ranks[0]["clipped_norms"]
    assert len(logged) == 4 and logged == ranks[1]["grad_norms"] and used == ranks[1]["clipped_norms"]
    assert any(n > 2 * clip for n in logged)  # some steps were clipped
    for before, after in zip(logged, used):
        assert after == pytest.approx(min(before, clip), rel=1e-5)


def test_ranks_end_with_the_same_weights_and_ema(run):
    _, ranks = run
    for key in ("final_unet", "final_ema", "final_buffers"):  # buffers: BatchNorm statistics averaged
        for name, value in ranks[0][key].items():
            assert torch.equal(value, ranks[1][key][name]), name
    moved = [not torch.equal(ranks[0]["final_unet"][n], ranks[0]["initial"][n]) for n in ranks[0]["final_unet"]]
    assert sum(moved) > 0.95 * len(moved)  # (the 1x1 mid block's self-attention keys get no gradient)


def test_validation_previews_and_throughput_reach_tensorboard(run):
    out, _ = run
    (events,) = (out / "runs").glob("version_0/events.out.tfevents.*")
    tags = EventAccumulator(str(events), size_guidance={"images": 0}).Reload().Tags()
    assert {"val/loss", "train/grad_norm", "train/samples_per_sec", "train/device/flops_per_sec"} <= set(tags["scalars"])
    assert "samples/outpainting_0" in tags["images"]


def test_sharded_checkpoint_resumes_weights_ema_and_adam(run):
    out, ranks = run
    assert is_distributed_checkpoint(out / "ckpt" / "step=4.ckpt")
    assert len(list((out / "ckpt" / "step=4.ckpt").glob("*.distcp"))) == RANKS  # one shard file per rank
    resumed = torch.load(out / "resumed.pt", weights_only=False)
    assert resumed["step"] == 4
    for name, key in (("unet", "final_unet"), ("ema", "final_ema")):
        for n, value in ranks[0][key].items():
            assert torch.equal(resumed[name][n], value), f"{name}.{n}"
    for n, state in ranks[0]["adam"].items():
        assert state.keys() == resumed["adam"][n].keys() == {"exp_avg", "exp_avg_sq"}
        for k, value in state.items():
            assert torch.equal(resumed["adam"][n][k], value), f"{n}.{k}"


def test_consolidated_checkpoint_is_one_ordinary_file(run, tmp_path):
    out, ranks = run
    folder = out / "ckpt" / "step=4.ckpt"
    full_file = consolidate_checkpoint(folder, tmp_path / "full.ckpt")
    ckpt = torch.load(full_file, weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["m3ddm_unet_config"]["block_out_channels"]
    for n, value in ranks[0]["final_unet"].items():
        assert torch.equal(ckpt["state_dict"][f"unet.{n}"], value)
    assert ckpt["optimizer_states"][0]["state"]
    weights = consolidate_checkpoint(folder, tmp_path / "weights.ckpt", weights_only=True)
    slim = torch.load(weights, weights_only=True)
    assert "optimizer_states" not in slim and all(k.startswith(("unet.", "ema_unet.")) for k in slim["state_dict"])
    assert not list(tmp_path.glob(".*.tmp"))
    # the loader of `init.source: pretrained` reads the folder and the files alike: the EMA weights
    for source in (folder, full_file, weights):
        unet = load_pretrained_unet(source)
        for n, p in unet.named_parameters():
            assert torch.equal(p, ranks[0]["final_ema"][n]), f"{source.name}: {n}"


def test_consolidate_command_names_a_bad_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        distributed.main(["consolidate", str(tmp_path), str(tmp_path / "x.ckpt")])
    assert exit_info.value.code == 2 and "not a sharded checkpoint folder" in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()
    with pytest.raises(CheckpointError, match="not a sharded checkpoint"):
        read_distributed_checkpoint(tmp_path)
