"""A small CNN that names the class of an image: class accuracy of conditional samples.

`class_accuracy` is the share of samples that this classifier assigns to the
class they were generated for; its accuracy on real held-out images is the
ceiling a perfect generator reaches. It is trained once on the training split
(`train`), saved as an npz (`save` / `load`, written atomically) and reused.

Inputs are uint8 [B, H, W, 3] images as the samplers write them; the network
reads their channel mean (gray for Fashion-MNIST), scaled to [-1, 1].
"""

import dataclasses
import json
import os
from typing import Any, Iterator

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from elm_jax import atomic_files

FORMAT = "elm_jax.classifier.v1"


class CNN(nn.Module):
  """conv-pool-conv-pool-dense: about 91% on Fashion-MNIST after 3 epochs."""
  num_classes: int
  width: int = 32
  hidden: int = 128

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    x = images.astype(jnp.float32).mean(-1, keepdims=True) / 127.5 - 1.0  # [B, H, W, 1]
    for mult in (1, 2):
      x = nn.relu(nn.Conv(self.width * mult, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))  # [B, H/2, W/2, C]
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.Dropout(0.3, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)  # [B, num_classes]


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  epochs: int = 3
  batch_size: int = 128
  learning_rate: float = 2e-3
  seed: int = 0
  max_steps: int = 0  # > 0: stop after this many steps (tests)


@dataclasses.dataclass
class Classifier:
  model: CNN
  params: Any
  info: dict  # how it was trained and its test accuracy

  def predict(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """uint8 [N, H, W, 3] -> predicted classes int32 [N]."""
    return np.concatenate([np.asarray(_predict(self.model, self.params, chunk))
                           for chunk in _chunks(images, batch_size)]) if len(images) else (
                               np.zeros((0,), np.int32))

  def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
    if len(images) == 0:
      raise ValueError("accuracy of an empty set of images")
    return float(np.mean(self.predict(images) == np.asarray(labels)))


@jax.jit(static_argnums=0)
def _predict(model, params, images):
  return jnp.argmax(model.apply({"params": params}, images), -1).astype(jnp.int32)


def _chunks(images: np.ndarray, size: int) -> Iterator[np.ndarray]:
  for start in range(0, len(images), size):
    yield images[start:start + size]


def train(images: np.ndarray, labels: np.ndarray, test_images: np.ndarray,
          test_labels: np.ndarray, num_classes: int,
          settings: TrainSettings = TrainSettings()) -> Classifier:
  """Adam on cross-entropy over shuffled epochs; reports held-out accuracy."""
  model = CNN(num_classes)
  rng = jax.random.key(settings.seed)
  params = model.init(rng, jnp.zeros((1,) + images.shape[1:], jnp.uint8))["params"]
  steps_per_epoch = len(images) // settings.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{len(images)} training images are fewer than one batch of "
                     f"{settings.batch_size}.")
  total = steps_per_epoch * settings.epochs
  if settings.max_steps:
    total = min(total, settings.max_steps)
  tx = optax.adam(optax.cosine_decay_schedule(settings.learning_rate, total))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y, rng):
    def loss_fn(p):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": rng})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  order_rng = np.random.default_rng(settings.seed)
  done, loss = 0, float("nan")
  while done < total:
    order = order_rng.permutation(len(images))
    for i in range(steps_per_epoch):
      if done == total:
        break
      idx = np.sort(order[i * settings.batch_size:(i + 1) * settings.batch_size])
      params, opt_state, loss = step(params, opt_state, images[idx], labels[idx],
                                     jax.random.fold_in(rng, done))
      done += 1
    logging.info("classifier: step %d/%d, train loss %.4f", done, total, float(loss))
  classifier = Classifier(model, jax.device_get(params), {})
  classifier.info = dict(format=FORMAT, num_classes=num_classes,
                         image_shape=list(images.shape[1:]), steps=total,
                         train_examples=len(images), settings=dataclasses.asdict(settings),
                         test_accuracy=classifier.accuracy(test_images, test_labels),
                         test_examples=len(test_images))
  return classifier


def save(path: str, classifier: Classifier) -> None:
  """One npz: the flattened parameters and the training info as JSON."""
  flat = flax.traverse_util.flatten_dict(classifier.params, sep="/")
  arrays = {f"params/{k}": np.asarray(v) for k, v in flat.items()}
  arrays["info"] = np.asarray(json.dumps(classifier.info, sort_keys=True))
  atomic_files.write_npz(path, **arrays)


def load(path: str) -> Classifier:
  """A classifier written by `save`; a file of another kind is named."""
  try:
    with np.load(path) as data:
      info = json.loads(str(data["info"]))
      flat = {k[len("params/"):]: np.asarray(data[k]) for k in data.files
              if k.startswith("params/")}
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f"{path} is not a classifier file written by elm_jax ({e}); delete it "
                     "to train a new one.") from None
  if info.get("format") != FORMAT:
    raise ValueError(f"{path} holds {info.get('format')!r}, not {FORMAT!r}; delete it to "
                     "train a new one.")
  params = flax.traverse_util.unflatten_dict(flat, sep="/")
  return Classifier(CNN(int(info["num_classes"])), params, info)


def load_or_train(path: str, data: dict, num_classes: int,
                  settings: TrainSettings = TrainSettings()) -> tuple[Classifier, bool]:
  """(classifier, trained_now): the one in `path` when it was trained and tested
  on sets of the same shape and size with the same class count and settings;
  otherwise trains one and saves it there.

  data: {"train": (images, labels), "test": (images, labels)}, uint8 [N, H, W, 3].
  """
  want = dict(num_classes=num_classes, image_shape=list(data["train"][0].shape[1:]),
              train_examples=len(data["train"][0]), test_examples=len(data["test"][0]),
              settings=dataclasses.asdict(settings))
  if os.path.exists(path):
    cached = load(path)
    if all(cached.info.get(k) == v for k, v in want.items()):
      logging.info("Classifier from %s (test accuracy %.4f)", path,
                   cached.info["test_accuracy"])
      return cached, False
    logging.warning("%s was trained with other settings (%s); training a new one.", path,
                    {k: cached.info.get(k) for k in want})
  classifier = train(*data["train"], *data["test"], num_classes, settings)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  save(path, classifier)
  logging.info("Classifier trained (test accuracy %.4f), saved to %s",
               classifier.info["test_accuracy"], path)
  return classifier, True
