"""Converters from other SSL checkpoints to the ssl_hub hub folder."""
