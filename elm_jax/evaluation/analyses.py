"""The work of `python -m elm_jax.analyze` (see its docstring): the paper's
token-randomness and attention analyses as JSON, PNG and TensorBoard.

Imported by the command only after its flags parse: jax, flax and
matplotlib take seconds to import, and `--help` needs none of them.
"""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from absl import logging

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from elm_jax import atomic_files, checkpointing, metrics, tokens  # noqa: E402
from elm_jax.data import pipeline  # noqa: E402
from elm_jax.evaluation import analysis  # noqa: E402
from elm_jax.train.stages import make_stage  # noqa: E402
from elm_jax.train import frozen_tokenizer  # noqa: E402


def _write_json(path: str, obj: Any) -> None:
  atomic_files.write_text(path, json.dumps(obj, indent=1))


def _save_figure(fig, path: str) -> None:
  atomic_files.write_with(path, lambda f: fig.savefig(f, format="png", dpi=100,
                                                      bbox_inches="tight"))
  plt.close(fig)


def eval_images(tok: frozen_tokenizer.FrozenTokenizer, num_images: int, batch_size: int = 250):
  """(uint8 images [N, S, S, 3], int labels [N]): the first N of the tokenizer's eval split."""
  data = tok.config.data
  loader = pipeline.make_loader(source=data.source, path=data.path, name=data.name,
                                split=data.eval_split, image_size=data.image_size,
                                global_batch_size=min(batch_size, num_images), train=False,
                                seed=0, num_classes=data.num_classes)
  images, labels = [], []
  for batch in loader:
    keep = batch["mask"] > 0
    images.append(batch["image"][keep])
    labels.append(batch["label"][keep])
    if sum(len(x) for x in images) >= num_images:
      break
  return np.concatenate(images)[:num_images], np.concatenate(labels)[:num_images]


def code_ids(tok: frozen_tokenizer.FrozenTokenizer, images: np.ndarray, num_subcodes: int,
             batch_size: int = 250, patch: int = 1) -> np.ndarray:
  """Thresholded sub-code ids [N, (h/p)*(w/p), n] of uint8 images."""
  encode = jax.jit(lambda p, x: frozen_tokenizer.sample_subcodes(
      frozen_tokenizer.probabilities(tok.model, p, x), num_subcodes, None, patch))
  return np.concatenate([np.asarray(encode(tok.params, images[i:i + batch_size]))
                         for i in range(0, len(images), batch_size)])


def token_randomness(tokenizer: str, num_images: int, out_dir: str,
                     num_subcodes: int = 0, seed: int = 0) -> dict:
  tok = frozen_tokenizer.load(tokenizer, flag="--tokenizer")
  frozen_tokenizer.require_binary(tok, tokenizer, "the token-randomness analysis")
  k = tok.bits
  n = num_subcodes or (k // 8 if k % 8 == 0 else 1)
  vocab = 2 ** tokens.check_split(k, n)
  images, _ = eval_images(tok, num_images)
  ids = code_ids(tok, images, n)                  # [N, L, n]
  image_seq = ids.reshape(len(ids), -1)           # raster order, sub-codes in place
  corpus_name, text = analysis.stdlib_corpus()
  text_seq = analysis.text_bytes(text, image_seq.shape[1])
  uniform = np.random.default_rng(seed).integers(0, vocab, image_seq.shape)
  results = {
      f"image tokens ({os.path.basename(os.path.normpath(tokenizer))}, {n}x{k // n} bits)":
          analysis.token_kl(image_seq, vocab),
      f"text bytes ({corpus_name})": analysis.token_kl(text_seq, 256),
      "uniform random (same count)": analysis.token_kl(uniform, vocab),
  }
  os.makedirs(out_dir, exist_ok=True)
  _write_json(os.path.join(out_dir, "token_randomness.json"), results)
  fig, ax = plt.subplots(figsize=(7, 3.5))
  width = 0.8 / len(results)
  for i, (name, r) in enumerate(results.items()):
    ax.bar(np.arange(2) + i * width, [r["unigram_kl"], r["bigram_kl"]], width,
           label=f"{name}, V={int(r['vocab_size'])}")
  ax.set_xticks(np.arange(2) + width * (len(results) - 1) / 2, ["unigram", "bigram"])
  ax.set_ylabel("KL from uniform (nats)")
  ax.set_title("Token randomness")
  ax.legend(fontsize=7)
  _save_figure(fig, os.path.join(out_dir, "token_randomness.png"))
  for name, r in results.items():
    logging.info("%s: unigram KL %.4f, bigram KL %.4f nats (%d tokens, V=%d)", name,
                 r["unigram_kl"], r["bigram_kl"], r["tokens"], r["vocab_size"])
  return results


def load_generator(workdir: str):
  """(stage, EMA params, step) of the latest checkpoint of an AR/MLM run."""
  run = checkpointing.load_run(workdir, "generator", "--generator")
  return make_stage(run.config), run.state["ema_params"], run.step


def unscanned(model, params) -> tuple[Any, dict]:
  """(model, params) with one Attention per layer: a scanned model's stacked
  'layers' params are split into layers_0 .. layers_{L-1} (same function)."""
  if not model.scan_layers:
    return model, params
  per_layer = model.layer_params(params)
  params = {k: v for k, v in params.items() if k != "layers"}
  params.update({f"layers_{i}": p for i, p in enumerate(per_layer)})
  return model.clone(scan_layers=False), params


def attention(generator: str, num_images: int, out_dir: str,
              query_cell: tuple[int, int] | None = None) -> dict:
  stage, params, step = load_generator(generator)
  model, params = unscanned(stage.model, params)  # e.g. the imagenet configs
  images, labels = eval_images(stage.tokenizer, num_images)
  ids = code_ids(stage.tokenizer, images, model.num_subcodes,
                 patch=stage.patch)  # [N, L, n]
  inputs = ids[:, :-1] if model.causal else ids
  weights = np.asarray(jax.jit(lambda p, t, l: analysis.attention_weights(model, p, t, l))(
      params, jnp.asarray(inputs), jnp.asarray(labels, jnp.int32)))  # [layers, B, H, S, T]
  positions = analysis.grid_positions(model, weights.shape[-1])
  g = model.grid_size
  query = query_cell or (g // 2, g // 2)
  per_layer = analysis.mean_attention_distance(weights, positions)
  per_head = np.stack([analysis.mean_attention_distance(weights[:, :, h:h + 1], positions)
                       for h in range(weights.shape[2])], axis=1)  # [layers, H]
  maps = analysis.attention_map(weights, positions, query, g)      # [layers, g, g]
  results = {"generator": os.path.abspath(generator), "step": step, "images": len(images),
             "causal": model.causal, "grid": g, "query_cell": list(query),
             "mean_distance_per_layer": per_layer.tolist(),
             "mean_distance_per_head": per_head.tolist()}
  os.makedirs(out_dir, exist_ok=True)
  _write_json(os.path.join(out_dir, "attention.json"), results)

  layers = len(per_layer)
  fig, axes = plt.subplots(1, layers + 1, figsize=(2.6 * (layers + 1), 2.8))
  for i in range(layers):
    axes[i].imshow(maps[i], cmap="viridis")
    axes[i].scatter([query[1]], [query[0]], marker="x", color="red", s=20)
    axes[i].set_title(f"layer {i}: {per_layer[i]:.2f} cells", fontsize=8)
    axes[i].axis("off")
  axes[-1].plot(range(layers), per_layer, marker="o")
  axes[-1].set_xlabel("layer")
  axes[-1].set_ylabel("mean attention distance (cells)")
  _save_figure(fig, os.path.join(out_dir, "attention.png"))

  writer = metrics.create_writer(out_dir)
  for i, d in enumerate(per_layer):
    writer.write_scalars(i, {"analysis/attention_distance": float(d)})
  scaled = maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)
  writer.write_images(step, {f"analysis/attention_map_layer_{i}": scaled[i][None, ..., None]
                             for i in range(layers)})
  writer.flush()
  writer.close()
  logging.info("mean attention distance per layer (cells): %s",
               ", ".join(f"{d:.2f}" for d in per_layer))
  return results
