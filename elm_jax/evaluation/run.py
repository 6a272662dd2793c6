"""The work of `python -m elm_jax.evaluate` (see its docstring): images and
statistics in, FID / sFID / precision / recall (or a tokenizer's rFID) out.

Imported by the command only after its flags parse: jax, flax and the
Inception take seconds to import, and `--help` needs none of them.
"""

import json
import os
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from elm_jax import atomic_files, metrics
from elm_jax.data import pipeline
from elm_jax.evaluation import extractor as extractor_lib
from elm_jax.evaluation import fid, inception, precision_recall
from elm_jax.train import frozen_tokenizer

DATASET_SOURCES = ("fashion_mnist", "tfds", "folder")
RESULT_FILE = "evaluation.json"


def load_images(path: str, limit: int = 0, what: str = "") -> np.ndarray:
  """arr_0 of an npz: uint8 [N, H, W, 3] (ADM's sample layout), the first `limit` if > 0."""
  with fid.open_npz(path, what) as data:
    if "arr_0" not in data.files:
      raise ValueError(f"{path} has no arr_0 (keys {sorted(data.files)}); save samples with "
                       "np.savez(path, images) as uint8 [N, H, W, 3].")
    images = fid.read_npz_array(data, "arr_0", path)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{path}: arr_0 is {images.dtype} {images.shape}; expected uint8 "
                     "[N, H, W, 3] (ADM layout). Convert with np.clip(np.round(x * 255), 0, "
                     "255).astype(np.uint8) from [0, 1] floats, and repeat gray channels.")
  return images[:limit] if limit > 0 else images


def _has_images(path: str) -> bool:
  """ADM's reference batches hold images (arr_0) beside their statistics: use the images."""
  with fid.open_npz(path, "--reference") as data:
    return "arr_0" in data.files


def parse_dataset(spec: str) -> tuple[str, str] | None:
  """'fashion_mnist:test' -> (source, split); None for an npz path."""
  if spec.endswith(".npz"):
    return None
  source, sep, split = spec.partition(":")
  if not sep or source not in DATASET_SOURCES or not split:
    raise ValueError(f"--reference={spec!r}: expected a .npz path or SOURCE:SPLIT with SOURCE "
                     f"in {DATASET_SOURCES}, e.g. fashion_mnist:test.")
  return source, split


def array_batches(images: np.ndarray, batch_size: int
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Full batches (the last padded with copies of image 0, mask 0): one compiled shape."""
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    mask = np.ones(batch_size, np.float32)
    if len(chunk) < batch_size:
      mask[len(chunk):] = 0
      chunk = np.concatenate([chunk, np.repeat(images[:1], batch_size - len(chunk), axis=0)])
    yield chunk, mask


def dataset_batches(source: str, split: str, image_size: int, batch_size: int, limit: int,
                    data_path: str = "", data_name: str = ""
                    ) -> tuple[Iterator[tuple[np.ndarray, np.ndarray]], int]:
  """(batches of (uint8 [b, S, S, 3], mask [b]), image count) in split order."""
  total = pipeline.num_examples(source, data_path, data_name, split)
  count = min(total, limit) if limit > 0 else total
  loader = pipeline.make_loader(source=source, path=data_path, name=data_name, split=split,
                                image_size=image_size, global_batch_size=batch_size,
                                train=False, seed=0, num_classes=2 ** 31)

  def batches():
    seen = 0
    for batch in loader:
      mask = np.asarray(batch["mask"]).copy()
      index = seen + np.arange(len(mask))
      mask[index >= count] = 0
      yield batch["image"], mask
      seen += len(mask)
      if seen >= count:
        return
  return batches(), count


def run_features(ext: extractor_lib.FeatureExtractor, batches, count: int, desc: str,
                 batch_size: int) -> None:
  for images, mask in tqdm.tqdm(batches, total=-(-count // batch_size), desc=desc,
                                unit="batch", disable=jax.process_index() != 0):
    ext.add(images, mask)


def cached_stats(cache: str, source_tag: str) -> dict | None:
  """The statistics in `cache` if it exists; an error if they were made from something else."""
  if not cache or not os.path.exists(cache):
    return None
  stats = fid.load_stats(cache)
  if str(stats["source"]) != source_tag:
    raise ValueError(f"--reference_stats={cache} holds statistics of {str(stats['source'])!r}, "
                     f"not {source_tag!r}; delete it or choose another path.")
  logging.info("Reference statistics from %s (%s)", cache, source_tag)
  return stats


def score(samples: dict, reference: dict, k: int, mesh=None) -> dict[str, float]:
  """FID, sFID and (when both sides carry pool features) precision/recall."""
  out = {"fid": fid.frechet_distance(samples["mu"], samples["sigma"], reference["mu"],
                                     reference["sigma"], samples.get("features")),
         "sfid": fid.frechet_distance(samples["mu_s"], samples["sigma_s"], reference["mu_s"],
                                      reference["sigma_s"], samples.get("spatial_features"))}
  if "features" in samples and "features" in reference:
    out.update(precision_recall.precision_recall(reference["features"], samples["features"],
                                                 k=k, mesh=mesh))
    out["num_samples"] = float(len(samples["features"]))
    out["num_reference"] = float(len(reference["features"]))
  return out


def write_results(out_dir: str, results: dict, step: int) -> None:
  """evaluation.json (atomic) and TensorBoard / metrics.jsonl scalars under eval/."""
  os.makedirs(out_dir, exist_ok=True)
  atomic_files.write_text(os.path.join(out_dir, RESULT_FILE), json.dumps(results, indent=1))
  writer = metrics.create_writer(out_dir)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in results["metrics"].items()})
  writer.flush()
  writer.close()


def _reconstructor(workdir: str):
  """uint8 images -> uint8 reconstructions by a tokenizer (EMA weights, thresholded bits)."""
  tok = frozen_tokenizer.load(workdir, flag="--reconstruct")

  @jax.jit
  def reconstruct(params, images):
    x_hat, _ = tok.model.apply({"params": params}, images.astype(jnp.float32) / 255.0,
                               train=False)
    return jnp.clip(jnp.round(x_hat * 255.0), 0, 255).astype(jnp.uint8)
  return tok, reconstruct


def evaluate(samples: str, reference: str, inception_path: str, out_dir: str,
             reference_cache: str = "", reconstruct: str = "", num_samples: int = 0,
             num_reference: int = 0, batch_size: int = 200,
             k: int = precision_recall.DEFAULT_K, image_size: int = 0,
             data_path: str = "", data_name: str = "", step: int = 0) -> dict:
  """The command's work; returns {"metrics": {...}, ...} as written to evaluation.json."""
  if bool(samples) == bool(reconstruct):
    raise ValueError("Give exactly one of --samples (an npz of images) and --reconstruct "
                     "(a tokenizer workdir).")
  if batch_size <= 0:
    raise ValueError(f"--batch_size={batch_size} must be positive.")
  if jax.process_count() > 1:
    raise ValueError("elm_jax.evaluate runs as one process (over all of its devices); start "
                     "it on a single host.")
  dataset = parse_dataset(reference)
  if reference_cache and not reference_cache.endswith(".npz"):  # before any features
    raise ValueError(f"--reference_stats={reference_cache} must end in .npz.")
  params = inception.load_params(inception_path)
  mesh = extractor_lib.default_mesh()
  fake = extractor_lib.FeatureExtractor(params, mesh)
  real = extractor_lib.FeatureExtractor(params, mesh)

  # What is compared with what (cheap checks first, features after).
  sample_stats = sample_images = tok = None
  if samples and fid.is_stats_file(samples, "--samples"):
    sample_stats = fid.load_stats(samples)
  elif samples:
    sample_images = load_images(samples, num_samples, "--samples")
    image_size = image_size or sample_images.shape[1]
  else:
    tok, recon_fn = _reconstructor(reconstruct)
    image_size = image_size or tok.config.data.image_size
  if dataset is not None:
    if not image_size:
      raise ValueError("--image_size is needed when the samples are given as statistics.")
    source, split = dataset
    batches, count = dataset_batches(source, split, image_size, batch_size, num_reference,
                                     data_path, data_name)
    tag = f"{source}:{split}:n={count}:size={image_size}"
  elif fid.is_stats_file(reference, "--reference") and not _has_images(reference):
    batches, count, tag = None, 0, f"npz:{os.path.abspath(reference)}"
  else:
    ref_images = load_images(reference, num_reference, "--reference")
    batches, count = array_batches(ref_images, batch_size), len(ref_images)
    tag = f"npz:{os.path.abspath(reference)}:n={count}"
  if tok is not None and batches is None:
    raise ValueError("--reconstruct needs reference images (a dataset split or an npz with "
                     "arr_0), not a statistics file.")
  ref_stats = fid.load_stats(reference) if batches is None else cached_stats(reference_cache, tag)

  if sample_images is not None:
    run_features(fake, array_batches(sample_images, batch_size), len(sample_images),
                 "samples", batch_size)
    sample_stats = fake.stats(f"npz:{os.path.abspath(samples)}")
  if tok is not None:
    params_tok = jax.device_put(tok.params)
    for images, mask in tqdm.tqdm(batches, total=-(-count // batch_size), unit="batch",
                                  desc="reconstructions", disable=jax.process_index() != 0):
      fake.add(np.asarray(recon_fn(params_tok, images)), mask)
      if ref_stats is None:
        real.add(images, mask)
    sample_stats = fake.stats(f"reconstructions:{os.path.abspath(reconstruct)}:{tag}")
  elif ref_stats is None:
    run_features(real, batches, count, "reference", batch_size)
  if ref_stats is None:
    ref_stats = real.stats(tag)
    if reference_cache:
      fid.save_stats(reference_cache, {k: v for k, v in ref_stats.items()
                                       if k != "spatial_features"})  # only sFID's moments
      logging.info("Cached reference statistics in %s", reference_cache)

  scores = score(sample_stats, ref_stats, k, mesh)
  results = {"metrics": scores, "samples": samples or f"reconstructions by {reconstruct}",
             "reference": tag, "inception": os.path.abspath(inception_path), "k": k}
  write_results(out_dir, results, step)
  logging.info("%s", ", ".join(f"{n}={v:.4g}" for n, v in scores.items()))
  return results
