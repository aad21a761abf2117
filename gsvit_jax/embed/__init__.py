"""`gsvit-embed`: embed surgery videos with GSViT into an index (one latent file per video and a
manifest), and search it for similar moments.

    from gsvit_jax.embed.run import embed
    summary = embed(['videos/'], 'latents/', gsvit_jax.load_encoder('GSViT.pkl'), fps=1.0)

Modules: `inputs` (what to embed), `decode` (frames at a rate, in background threads), `store`
(the output folder and resuming), `run` (the loop), `cli` (the command line); `search` and its
helpers query an index.
"""
