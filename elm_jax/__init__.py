"""elm_jax: the Elucidated Language Model (binary tokenizer + transformer) in JAX."""

import os

# TensorFlow comes in through clu's metric writers and tfds (data only, never
# the model's arithmetic). Its C++ start-up lines (oneDNN, CPU features) would
# otherwise precede every command's output, including the one-line errors.
# Set either variable in the environment to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
