"""Input pipelines: Fashion-MNIST, tfds array_record datasets and image folders through grain."""

from elm_jax.data.pipeline import make_loader
from elm_jax.data.pipeline import num_examples
