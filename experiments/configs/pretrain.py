"""GSViT pre-training by next-frame prediction (defaults: the original recipe on GenSurgery).

Full run (after `tfds build tfds_builders/gensurgery --manual_dir=...`), any number of devices:

    python experiments/pretrain.py --config=experiments/configs/pretrain.py --workdir=/ckpt/gsvit

Built-in demo (generated surgical-looking videos through the real builder and Grain, CPU, <5 min):

    python experiments/pretrain.py --config=experiments/configs/pretrain.py:demo --workdir=/tmp/gsvit_demo

Several hosts, one process each (README "Several processes and machines"): `multihost` under
SLURM / Open MPI / Kubernetes / Cloud TPU, or without a cluster manager, on every host:

    python experiments/pretrain.py --config=experiments/configs/pretrain.py --workdir=/shared/gsvit \
        --config.distributed.coordinator=host0:29500 --config.distributed.num_processes=2 \
        --config.distributed.process_id=0   # 1 on the second host

Arguments after the colon (comma separated): `demo`, `runlocal` (the `tiny` model and in-memory
synthetic data for a smoke test), `variant=m0..m5`, `multihost`. Any field can be overridden, e.g.
`--config.optimizer.name=adamw --config.compute_dtype=bfloat16 --config.data.gap_s=2`.
"""
from ml_collections import ConfigDict

from gsvit_jax.config_args import parse_arg
from gsvit_jax.distributed import distributed_config
from gsvit_jax.models.efficientvit import VARIANTS
from gsvit_jax.train.optimizers import optimizer_config

SMALL_DECODER = (64, 48, 48, 32, 16)


def get_config(arg: str | None = None) -> ConfigDict:
    arg = parse_arg(arg, dict(variant=sorted(VARIANTS)), demo=False, runlocal=False,
                    variant='m5', multihost=False)
    config = ConfigDict()
    config.seed = 0
    config.multihost = arg.multihost  # jax.distributed.initialize(): one process per host
    config.distributed = distributed_config()  # coordinator / num_processes / process_id, timeouts

    config.model = ConfigDict(dict(variant=arg.variant, img_size=224,
                                   decoder_widths=(1024, 512, 512, 256, 64), predict_change=False,
                                   remat=True))  # recompute activations in backward: memory (RESULTS.md)
    config.compute_dtype = 'float32'  # or 'bfloat16' (parameters stay float32)
    config.loss = 'l1'  # the original; or 'mse'
    config.init_from = ''  # PyTorch weights (GSViT.pkl, efficientvit_m5.pth, timm) or Orbax dir

    config.data = ConfigDict(dict(
        name='gensurgery', data_dir='', train_split='train', eval_split='validation',
        gap_s=1.0,  # the paper predicts the frame 1 s ahead
        flip=False, worker_count=8, image_size=224, seed=0,
        max_corrupt_records=100,  # undecodable pairs skipped (listed in the workdir), then stop
        synthetic_videos=8, synthetic_seconds=20, synthetic_fps=2.0))

    config.batch_size = 100
    config.total_steps = 1_750_000  # 5 "epochs" of 350,000 steps, as the original script
    config.optimizer = optimizer_config()  # Adam, lr 1e-3 -> 1e-5 linearly

    config.log_every_steps = 50
    config.image_every_steps = 1000
    config.eval_every_steps = 5000
    config.eval_batches = 20
    config.checkpoint = ConfigDict(dict(every_steps=1000, keep=3, async_save=True))

    if arg.demo or arg.runlocal:
        config.model.update(variant='m0', img_size=64, decoder_widths=SMALL_DECODER, remat=False)
        config.data.update(image_size=64, worker_count=0)
        config.batch_size = 16
        config.optimizer.update(lr=2e-3, end_lr=1e-4)
        config.log_every_steps = 10
        config.image_every_steps = 100
        config.eval_every_steps = 100
        config.eval_batches = 4
        config.checkpoint.update(every_steps=100, keep=2)
    if arg.demo:
        config.data.update(name='gensurgery', data_dir='', demo_videos=10, demo_seconds=30.0,
                           demo_fps=2.0)
        config.total_steps = 300
    if arg.runlocal:
        config.model.variant = 'tiny'  # not a released size: compiles in half M0's time
        config.data.name = 'synthetic'
        config.data.synthetic_videos = 3
        config.data.synthetic_seconds = 8
        config.total_steps = 20
        config.log_every_steps = 5
        config.image_every_steps = 10
        config.eval_every_steps = 10
        config.checkpoint.update(every_steps=10, keep=2)
    return config
