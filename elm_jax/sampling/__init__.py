"""Sampling from the generators: KV-cache AR decoding and MaskGIT decoding."""
