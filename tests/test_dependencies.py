"""pyproject.toml's version bounds hold the APIs the code relies on, private ones included."""

import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def requirements() -> dict[str, Requirement]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps)}


def test_installed_versions_are_within_the_declared_bounds():
    """The tests below ran on these versions: a bound widened without running them fails here."""
    for name in ("lightning", "torchmetrics", "diffusers", "av"):
        assert requirements()[name].specifier.contains(version(name), prereleases=True), name


@pytest.mark.parametrize("name, broken, floor", [("av", "13.1.0", "14.0.0"), ("diffusers", "0.32.2", "0.33.0")])
def test_floors_exclude_versions_that_break(name, broken, floor):
    """av < 14 lacks add_stream_from_template; diffusers < 0.33 calls _set_gradient_checkpointing."""
    spec = requirements()[name].specifier
    assert not spec.contains(broken) and spec.contains(floor)


def test_av_copies_streams_from_a_template():
    import av

    assert hasattr(av.container.OutputContainer, "add_stream_from_template")


def test_private_lightning_hook_is_fenced():
    """cli.py overrides LightningCLI._prepare_subcommand_parser(klass, subcommand, **kwargs)."""
    from lightning.pytorch.cli import LightningCLI

    assert requirements()["lightning"].specifier.contains("2.6.6") and not requirements()["lightning"].specifier.contains("2.7.0")
    params = list(inspect.signature(LightningCLI._prepare_subcommand_parser).parameters)
    assert params[:3] == ["self", "klass", "subcommand"]


def test_private_lightning_resume_apis_are_fenced():
    """cli.py overrides LightningCLI._parse_ckpt_path(self) (it reads --ckpt_path first);
    M3DDMDataModule reads the fit loop's resume state (is_resuming, the epoch loop's batch
    progress: ready batches, is_last_batch) to continue its data stream."""
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    assert not requirements()["lightning"].specifier.contains("2.7.0")
    assert list(inspect.signature(LightningCLI._parse_ckpt_path).parameters) == ["self"]
    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI.__init__)
    loop = L.Trainer(accelerator="cpu", logger=False).fit_loop
    assert loop.is_resuming is False
    progress = loop.epoch_loop.batch_progress
    assert progress.current.ready == 0 and progress.is_last_batch is False


def test_private_torchmetrics_lpips_is_fenced():
    """metrics.py builds _NoTrainLpips(net=..., pnet_rand=True) to load a local backbone."""
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    assert not requirements()["torchmetrics"].specifier.contains("1.10.0")
    params = inspect.signature(_NoTrainLpips.__init__).parameters
    assert "net" in params and "pnet_rand" in params
