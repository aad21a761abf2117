"""Entry point of `python -m gsvit_jax.phase`."""
import sys

from gsvit_jax.phase.cli import main

sys.exit(main())
