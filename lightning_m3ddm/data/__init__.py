"""Training data for M3DDM (decoding: :mod:`lightning_m3ddm.video`): clip/global-frame selection (sampling, clips),
the paper's mask and guide-frame augmentation (augmentation), the streaming DataModule (datamodule)
and generated test videos (synthetic)."""
