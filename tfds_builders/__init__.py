"""TFDS builders for GSViT data (`gensurgery`, `cholec80`); importing this package registers them.

The builders themselves are tracked in issue 3; this package exists so the distribution layout is final.
"""
