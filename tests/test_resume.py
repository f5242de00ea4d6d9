"""fit --ckpt_path continues optimizer, LR schedule, EMA and counters: 2 + 2 steps == 4 steps."""

import lightning as L
import torch

from lightning_m3ddm.lit_module import M3DDMLitModule, OptimizerConfig

from test_lit_module import TINY, PixelUnshuffleAutoencoder, make_batch


class _Clips(torch.utils.data.Dataset):
    """The same clip at every step: which batch a resumed epoch starts at (a data-loader
    matter) cannot change the result, so the test sees optimizer, LR schedule, EMA and the
    per-step noise alone."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return {k: v[0] for k, v in make_batch(b=1, seed=0).items()}


def _module():
    torch.manual_seed(0)
    return M3DDMLitModule(
        unet=TINY, autoencoder=PixelUnshuffleAutoencoder(4), ema_decay=0.9, optimizer=OptimizerConfig(warmup_steps=3)
    )


def _trainer(root, max_steps):
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_checkpointing=False, default_root_dir=root, enable_model_summary=False,
    )


def _loader():
    return torch.utils.data.DataLoader(_Clips(), batch_size=1, shuffle=False)


def test_resume_continues_exactly(tmp_path):
    straight = _module()
    _trainer(tmp_path / "a", 4).fit(straight, _loader())

    first = _module()
    trainer = _trainer(tmp_path / "b", 2)
    trainer.fit(first, _loader())
    ckpt = tmp_path / "half.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    assert saved["global_step"] == 2 and any(k.startswith("ema_unet.") for k in saved["state_dict"])
    assert saved["optimizer_states"][0]["state"] and saved["lr_schedulers"][0]["last_epoch"] == 2

    resumed = _module()
    trainer = _trainer(tmp_path / "c", 4)
    trainer.fit(resumed, _loader(), ckpt_path=ckpt)
    assert trainer.global_step == 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == straight.trainer.optimizers[0].param_groups[0]["lr"]
    for name, (a, b) in {
        "unet": (straight.unet, resumed.unet),
        "ema": (straight.ema_unet, resumed.ema_unet),
    }.items():
        for (n, p), q in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"{name}.{n}")
    # and training did move the weights
    assert not torch.equal(_module().unet.conv_in.weight, resumed.unet.conv_in.weight)
