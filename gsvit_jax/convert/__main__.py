"""`python -m gsvit_jax.convert`: the `gsvit-convert` command line."""
from gsvit_jax.convert.cli import main

raise SystemExit(main())
