"""Tokenizer (binary autoencoder) configs.

  python -m elm_jax.main --config=configs/bae.py --workdir=/tmp/bae
  python -m elm_jax.main --config=configs/bae.py:tiny --workdir=/tmp/bae_tiny
  python -m elm_jax.main --config=configs/bae.py:imagenet,bits=20 \
      --config.data.path=$TFDS_DATA_DIR --workdir=/mnt/shared/bae20

Variants (one of): `fmnist` (default: Fashion-MNIST 32x32 -> 16x16 grid of
16-bit codes, 256 tokens as in ELM's ImageNet setup; the tokenizer of
configs/pipeline.py), `imagenet` (ELM's 256x256 BAE, docs/spec.md section 2), `tiny`
(seconds on a CPU, for tests; 8-bit codes); combined with
`quantizer=binary|vq|lfq` and `bits=K`, which win over the variant's.
"""

import ml_collections

from elm_jax.configs_lib import parse_arg

ARCH = {
    # name: (resolution, nf, ch_mult, res blocks, attention resolutions, emb_dim)
    "imagenet": (256, 128, (1, 1, 2, 2, 4), 2, (16,), 256),
    "fmnist": (32, 32, (1, 2), 1, (16,), 32),
    "tiny": (32, 32, (1, 2), 1, (16,), 32),
}


# The arguments above, with their defaults.
ARGS = dict(fmnist=False, imagenet=False, tiny=False, quantizer="binary", bits=16)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  a.exclusive("fmnist", "imagenet", "tiny")
  if a.tiny:
    a.variant(bits=8)
  name = "tiny" if a.tiny else "imagenet" if a.imagenet else "fmnist"
  res, nf, ch_mult, blocks, attn, emb = ARCH[name]
  c = ml_collections.ConfigDict()
  c.stage = "bae"
  c.seed = 0

  c.data = dict(source="fashion_mnist", path="", name="", train_split="train",
                eval_split="test", image_size=res, num_classes=10,
                worker_count=0)
  if a.imagenet:
    c.data.update(source="tfds", name="imagenet2012", eval_split="validation",
                  num_classes=1000, worker_count=8)

  c.model = dict(nf=nf, ch_mult=ch_mult, num_res_blocks=blocks,
                 attn_resolutions=attn, resolution=c.data.get_ref("image_size"),
                 emb_dim=emb, quantizer=a.quantizer,
                 bits=a.bits,
                 deterministic=False, codebook_size=16384, code_dim=8,
                 commitment_weight=0.25,
                 entropy_weight=0.1 if a.quantizer == "lfq" else 0.0,
                 style="elm", pixel_range="unit", dtype="float32")
  if a.quantizer == "vq" and (a.tiny or name == "fmnist"):
    c.model.codebook_size = 1024

  c.loss = dict(pixel="l1", pixel_weight=1.0, perceptual_weight=1.0,
                lpips_weights="", gan_weight=0.0, disc_start=30001,
                adaptive_max=1.0, disc=dict(n_layers=3, ndf=64))
  # Adam as in Binary Latent Diffusion: lr 4.5e-6 x per-device batch.
  c.optim = dict(name="adam", lr=4.5e-6 * 32, b1=0.5, b2=0.9, warmup_steps=0)
  c.disc_optim = dict(name="adam", lr=c.optim.get_ref("lr"), b1=0.5, b2=0.9)
  c.ema = dict(decay=0.995, every=10)
  c.batch_size = 256
  c.total_steps = 1_000_000
  c.log_every, c.eval_every, c.checkpoint_every = 100, 10_000, 5_000
  c.keep_checkpoints = 3
  c.eval = dict(batch_size=256, max_batches=0, full_at_end=True, use_ema=True)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.jax_disable_most_optimizations = bool(a.tiny)  # tiny: compile time dominates

  if a.imagenet:
    c.loss.update(gan_weight=0.8, disc_start=30001)
  elif a.tiny:
    c.loss.update(gan_weight=0.5, disc_start=2, disc=dict(n_layers=2, ndf=16))
    c.optim.lr = 1e-3
    c.ema = dict(decay=0.9, every=1)
    c.batch_size, c.total_steps = 8, 4
    c.log_every, c.eval_every, c.checkpoint_every = 1, 4, 2
    c.eval = dict(batch_size=16, max_batches=2, full_at_end=False, use_ema=True)
  else:  # Fashion-MNIST default: about 11 minutes of a 2-core CPU.
    # LPIPS is reported at evaluation but left out of the training loss: on
    # this CPU it doubles the step time, and the target here is PSNR. 16x16
    # cells, not 8x8: an 8x8 grid of 24-bit codes reached 21.2 dB and an rFID
    # of 82.5 against a real-image floor of about 17 (benchmarks/pipeline.md).
    # 1,200 steps of 32 images reach 26.5 dB on 1,000 test images.
    c.loss.update(perceptual_weight=0.0)
    c.optim.update(lr=2e-3, warmup_steps=100, decay="cosine")
    c.ema = dict(decay=0.99, every=1)
    c.batch_size, c.total_steps = 32, 1200
    c.log_every, c.eval_every, c.checkpoint_every = 50, 600, 600
    # The last evaluation too reads 1,000 test images (full_at_end=True: all
    # 10,000, 8 more minutes here).
    c.eval = dict(batch_size=500, max_batches=2, full_at_end=False, use_ema=True)
  # rFID (reconstructions vs inputs) beside PSNR/SSIM/LPIPS when set to the npz
  # of `python -m elm_jax.evaluation.convert_inception`; "" skips it.
  c.eval.inception_params = ""
  return c
