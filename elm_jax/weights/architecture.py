"""What a PyTorch state dict says about its architecture, checked against a config.

ELM's BAE numbers its blocks (`encoder.blocks.{i}`), so the block kinds in
order (conv, ResBlock, AttnBlock, Downsample, GroupNorm) give nf, ch_mult,
num_res_blocks, the levels with attention, emb_dim and the bits K. A
transformer's keys give layers, width, MLP hidden size, classes and the
sub-code split (n tables of 2^k rows). Every inferred value keeps the key it
came from, so a mismatch names the tensor, both values and the flag to fix.
"""

import dataclasses
import math
import re
from typing import Mapping, Sequence

import ml_collections
import numpy as np

from elm_jax.generator_config import split_for, split_of
from elm_jax.models.transformer import default_mlp_dim
from elm_jax.tokens import Codes


@dataclasses.dataclass
class Fact:
  """An architecture value read off a tensor."""
  value: object
  key: str  # the PyTorch key (and shape) it came from


def _shape(sd: Mapping[str, np.ndarray], key: str, what: str) -> tuple:
  if key not in sd:
    raise KeyError(f"PyTorch state dict lacks {key!r} (needed to read {what}); "
                   "is this the right --from?")
  return tuple(np.shape(sd[key]))


def _src(key: str, shape: tuple) -> str:
  return f"{key} {list(shape)}"


# ------------------------------------------------------------------ BAE


def _block_kind(sd, prefix: str) -> tuple[str, int]:
  """('conv'|'norm'|'res'|'attn'|'down', output channels) of one block."""
  if prefix + "norm1.weight" in sd:
    return "res", np.shape(sd[prefix + "conv1.weight"])[0]
  if prefix + "q.weight" in sd:
    return "attn", np.shape(sd[prefix + "q.weight"])[0]
  if prefix + "conv.weight" in sd:
    return "down", np.shape(sd[prefix + "conv.weight"])[0]
  shape = np.shape(sd.get(prefix + "weight", ()))
  return ("conv" if len(shape) == 4 else "norm"), (shape[0] if shape else 0)


def _blocks(sd, name: str) -> list[tuple[str, int]]:
  ids = sorted({int(m.group(1)) for k in sd
                if (m := re.match(rf"{name}\.blocks\.(\d+)\.", k))})
  return [_block_kind(sd, f"{name}.blocks.{i}.") for i in ids]


def infer_bae(sd: Mapping[str, np.ndarray]) -> dict[str, Fact]:
  """nf, ch_mult, num_res_blocks, attn_levels, emb_dim, bits of an ELM BAE."""
  embed = _shape(sd, "quantize.embed.weight", "bits and emb_dim")  # [K, emb]
  conv_in = _shape(sd, "encoder.blocks.0.weight", "nf")  # [nf, 3, 3, 3]
  kinds = _blocks(sd, "encoder")
  body = kinds[1:-5]  # between conv_in and (mid res, attn, res, norm, conv)
  if [k for k, _ in kinds[-5:]] != ["res", "attn", "res", "norm", "conv"]:
    raise ValueError("PyTorch state dict: encoder.blocks do not end with ELM's "
                     "middle (ResBlock, AttnBlock, ResBlock) and output "
                     "(GroupNorm, conv); is this the right --from?")
  levels: list[list[tuple[str, int]]] = [[]]
  for kind, ch in body:
    if kind == "down":
      levels.append([])
    else:
      levels[-1].append((kind, ch))
  res_counts = {sum(k == "res" for k, _ in lv) for lv in levels}
  if len(res_counts) != 1 or not all(lv for lv in levels):
    raise ValueError("PyTorch state dict: encoder levels hold different numbers "
                     f"of ResBlocks {sorted(res_counts)}; not an ELM BAE.")
  nf = conv_in[0]
  src = "encoder.blocks.*"
  return {
      "nf": Fact(nf, _src("encoder.blocks.0.weight", conv_in)),
      "ch_mult": Fact(tuple(int([c for k, c in lv if k == "res"][-1] // nf)
                            for lv in levels), src),
      "num_res_blocks": Fact(res_counts.pop(), src),
      "attn_levels": Fact(tuple(i for i, lv in enumerate(levels)
                                if any(k == "attn" for k, _ in lv)), src),
      "emb_dim": Fact(embed[1], _src("quantize.embed.weight", embed)),
      "bits": Fact(embed[0], _src("quantize.embed.weight", embed)),
  }


def check_bae(facts: Mapping[str, Fact], model: ml_collections.ConfigDict
              ) -> None:
  """Raises ValueError naming every field where the file and config differ."""
  levels = tuple(i for i in range(len(model.ch_mult))
                 if model.resolution // 2 ** i in tuple(model.attn_resolutions))
  have = dict(nf=model.nf, ch_mult=tuple(model.ch_mult),
              num_res_blocks=model.num_res_blocks, attn_levels=levels,
              emb_dim=model.emb_dim, bits=model.bits)
  problems = []
  for name, fact in facts.items():
    if have[name] == fact.value:
      continue
    if name == "attn_levels":
      want = tuple(model.resolution // 2 ** i for i in fact.value)
      problems.append(
          f"attention: the file has AttnBlocks at levels {list(fact.value)} "
          f"(resolutions {list(want)} at model.resolution={model.resolution}), "
          f"the config at {list(levels)}; pass --config.model.attn_resolutions="
          f"'{want}' (or fix --config.data.image_size)")
    else:
      value = fact.value if name != "ch_mult" else f"'{fact.value}'"
      problems.append(f"model.{name}: the file has {fact.value} ({fact.key}), "
                      f"the config {have[name]}; pass --config.model.{name}="
                      f"{value}")
  if model.quantizer != "binary":
    problems.append(f"model.quantizer: ELM's BAE is binary, the config has "
                    f"{model.quantizer!r}; pass --config.model.quantizer=binary")
  if problems:
    raise ValueError("The state dict does not fit the config: "
                     + "; ".join(problems) + ".")


# ------------------------------------------------------------ transformer


def infer_transformer(sd: Mapping[str, np.ndarray], causal: bool
                      ) -> dict[str, Fact]:
  """layers, dim, mlp_dim, num_classes, split (n sub-codes, k bits), grid_size
  (grid_size only where a tensor reveals it: MLM pos_embed, freqs_cis)."""
  norm = _shape(sd, "norm.weight", "dim")
  cls = _shape(sd, "cls_embedding.embedding_table.weight", "num_classes")
  w1 = _shape(sd, "layers.0.feed_forward.w1.weight", "the MLP width")
  layers = 1 + max(int(m.group(1)) for k in sd
                   if (m := re.match(r"layers\.(\d+)\.", k)))
  facts = {
      "num_layers": Fact(layers, f"layers.0 .. layers.{layers - 1}"),
      "dim": Fact(norm[0], _src("norm.weight", norm)),
      "mlp_dim": Fact(w1[0], _src("layers.0.feed_forward.w1.weight", w1)),
      "num_classes": Fact(cls[0] - 1, _src("cls_embedding.embedding_table.weight",
                                           cls) + ", the last row the null class"),
  }
  if causal:
    tables = sorted(k for k in sd if re.fullmatch(r"tok_embedder\.\d+\.weight", k))
    key = tables[0] if tables else "tok_embedder.weight"
    rows = _shape(sd, key, "the vocabulary")
    n, vocab = max(len(tables), 1), rows[0]
  else:  # one shared table with a [MASK] row; n from the unused proj / heads
    key = "tok_embedder.weight"
    rows = _shape(sd, key, "the vocabulary")
    vocab = rows[0] - 1
    heads = [k for k in sd if re.fullmatch(r"output\.\d+\.weight", k)]
    n = (np.shape(sd["proj.weight"])[1] // norm[0] if "proj.weight" in sd
         else max(len(heads), 1))
  facts["num_subcodes"] = Fact(n, _src(key, rows))
  facts["vocab_size"] = Fact(vocab, _src(key, rows))
  bits = int(round(math.log2(max(vocab, 1))))
  if 2 ** bits == vocab:  # else only VQ ids fit it
    facts["split"] = Fact((n, bits), _src(key, rows))
  grid_src = ("pos_embed.weight", "freqs_cis")
  for k in grid_src:
    if k in sd:
      cells = np.shape(sd[k])[0] - (k == "freqs_cis")
      grid = math.isqrt(cells)
      if grid * grid == cells:
        facts["grid_size"] = Fact(grid, _src(k, np.shape(sd[k])))
  return facts


def not_a_bit_vocabulary(facts: Mapping[str, Fact]) -> ValueError:
  """The error for a file whose vocabulary only VQ ids fit (no "split" fact)."""
  vocab = facts["vocab_size"]
  return ValueError(
      f"PyTorch {vocab.key}: {vocab.value} entries is not a power of two, so "
      "not a vocabulary of bits; pass --tokenizer=DIR with a VQ tokenizer of "
      f"{vocab.value} codes.")


def check_transformer(facts: Mapping[str, Fact], config: ml_collections.ConfigDict,
                      config_flag: str, codes: Codes | None = None) -> None:
  """Raises ValueError naming every field where the file and config (over
  the tokenizer's `codes`, when there is one) differ."""
  m = config.model
  split = split_of(config)
  problems = []
  if codes is not None and codes.are_ids:
    n, vocab = facts["num_subcodes"], facts["vocab_size"]
    want_n = split_for(config, codes)
    if (n.value, vocab.value) != (want_n, codes.codebook_size):
      problems.append(
          f"vocabulary: the file has {n.value} table(s) of {vocab.value} "
          f"entries ({vocab.key}), the tokenizer's codes need {want_n} of "
          f"{codes.codebook_size} (its codebook); pass the tokenizer the "
          "model was trained on")
    split = None
  elif split is None and codes is not None:  # split=auto, over bits
    n = split_for(config, codes)
    split = (n, codes.bits * config.get("patch", 1) ** 2 // n)
  elif "split" not in facts:
    raise not_a_bit_vocabulary(facts)
  have = dict(num_layers=m.num_layers, dim=m.dim,
              mlp_dim=m.mlp_dim or default_mlp_dim(m.dim),
              num_classes=m.num_classes, split=split)
  fix = dict(num_layers="--config.model.num_layers={}", dim="--config.model.dim={} "
             "(with num_heads * head_dim equal to it)",
             mlp_dim="--config.model.mlp_dim={}",
             num_classes="--config.data.num_classes={}")
  for name, fact in facts.items():
    if name not in have or have[name] is None or have[name] == fact.value:
      continue
    if name == "split":
      n, k = fact.value
      problems.append(
          f"split: the file has {n} sub-code(s) of {k} bits ({fact.key}), the "
          f"config {split[0]} of {split[1]} "
          f"(split={config.split!r}); pass {config_flag}:...,split={n}-{k}")
    else:
      problems.append(f"model.{name}: the file has {fact.value} ({fact.key}), "
                      f"the config {have[name]}; pass "
                      + fix[name].format(fact.value))
  if problems:
    raise ValueError("The state dict does not fit the config: "
                     + "; ".join(problems) + ".")


def check_grid(facts: Mapping[str, Fact], grid_size: int, where: str) -> None:
  fact = facts.get("grid_size")
  if fact is not None and fact.value != grid_size:
    raise ValueError(f"grid: the file's {fact.key} implies a {fact.value}x"
                     f"{fact.value} grid, {where} {grid_size}x{grid_size}.")


def match_size(sizes: Mapping[str, Sequence[int]], facts: Mapping[str, Fact]
               ) -> str | None:
  """The name in a (layers, dim, heads) size table that fits, else None."""
  for name, (layers, dim, *_) in sizes.items():
    if (layers, dim) == (facts["num_layers"].value, facts["dim"].value):
      return name
  return None
