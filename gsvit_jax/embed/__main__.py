"""`python -m gsvit_jax.embed`: the `gsvit-embed` command line."""
from gsvit_jax.embed.cli import main

raise SystemExit(main())
