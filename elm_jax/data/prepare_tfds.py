"""Builds a tfds dataset as array_record so `make_loader(source="tfds")` can read it.

  python -m elm_jax.data.prepare_tfds --name=imagenet2012 \
      --manual_dir=/data/imagenet_tars --data_dir=/data/tfds

For imagenet2012, --manual_dir holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.
"""

from absl import app
from absl import flags

from elm_jax.data import sources

_NAME = flags.DEFINE_string("name", "imagenet2012", "tfds dataset name.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Output tfds data_dir ('' = tfds default).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "Directory of manually downloaded files.")


def main(argv):
  del argv
  sources.prepare_tfds(_NAME.value, _DATA_DIR.value, _MANUAL_DIR.value)


if __name__ == "__main__":
  app.run(main)
