"""lightning_m3ddm: train, fine-tune, evaluate and run M3DDM video outpainting."""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names resolved lazily so `import lightning_m3ddm` stays cheap and one
# broken optional piece (e.g. a video backend) does not break the model imports.
_EXPORTS = {
    "M3DDMUNet": "lightning_m3ddm.models.unet_3d",
    "M3DDMUNetOutput": "lightning_m3ddm.models.unet_3d",
    "GlobalFrameEncoder": "lightning_m3ddm.models.global_encoder",
    "load_official_unet": "lightning_m3ddm.checkpoints",
    "inflate_from_stable_diffusion": "lightning_m3ddm.checkpoints",
    "CheckpointError": "lightning_m3ddm.checkpoints",
    "M3DDMLitModule": "lightning_m3ddm.lit_module",
    "M3DDMDataModule": "lightning_m3ddm.data.datamodule",
    "M3DDMShardedStrategy": "lightning_m3ddm.distributed",
    "consolidate_checkpoint": "lightning_m3ddm.distributed",
    "AugmentationConfig": "lightning_m3ddm.data.augmentation",
    "augment": "lightning_m3ddm.data.augmentation",
    "M3DDMPredictor": "lightning_m3ddm.predict",
    "VideoPredictDataModule": "lightning_m3ddm.predict",
    "OutpaintingWriter": "lightning_m3ddm.predict",
    "OutpaintingPipeline": "lightning_m3ddm.predict",
    "OutpaintingResult": "lightning_m3ddm.predict.pipeline",
    "export_checkpoint": "lightning_m3ddm.weights",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lightning_m3ddm' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
