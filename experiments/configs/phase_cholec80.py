"""Cholec80 phase recognition on the frozen GSViT encoder (defaults: the paper's head and recipe).

Paper head (flattened 6144-d latent -> 2048 -> 512 -> 7, Adam 3e-4 with exponential decay, batch
128), trained from the feature cache, evaluated on the 40/40 split's test videos:

    python experiments/train_phase.py --config=experiments/configs/phase_cholec80.py \
        --config.encoder.init_from=/weights/GSViT.pkl --workdir=/ckpt/phase_mlp

Online causal temporal model on the same cache (share it with --config.features.cache_dir):

    python experiments/train_phase.py --config=experiments/configs/phase_cholec80.py:head=temporal \
        --config.encoder.init_from=/weights/GSViT.pkl --workdir=/ckpt/phase_tcn

Generated Cholec80-layout data through the real builder, small random encoder, CPU, ~1 min:

    python experiments/train_phase.py --config=experiments/configs/phase_cholec80.py:demo \
        --workdir=/tmp/phase_demo

Arguments after the colon (comma separated): `head=mlp|temporal`, `mode=cached|augmented`,
`split=40_40|40_8_32|32_8_40`, `pooled` (the 384-d pooled latent instead of 6144-d), `demo`,
`multihost`. Any field can be overridden, e.g. `--config.epochs=30 --config.batch_size=256`.
"""
from ml_collections import ConfigDict

from gsvit_jax.config_args import parse_arg
from gsvit_jax.distributed import distributed_config
from gsvit_jax.train.optimizers import optimizer_config

# Which split is evaluated under each Cholec80 split convention.
EVAL_SPLIT = {'40_40': 'test', '40_8_32': 'test', '32_8_40': 'test'}


def get_config(arg: str | None = None) -> ConfigDict:
    arg = parse_arg(arg, dict(head=('mlp', 'temporal'), mode=('cached', 'augmented'),
                              split=tuple(EVAL_SPLIT)),
                    head='mlp', mode='cached', split='40_40', pooled=False, demo=False,
                    multihost=False)
    config = ConfigDict()
    config.seed = 0
    config.multihost = arg.multihost  # jax.distributed.initialize(): one process per host
    config.distributed = distributed_config()  # coordinator / num_processes / process_id, timeouts
    config.encoder = ConfigDict(dict(
        variant='m5',
        init_from=''))  # GSViT.pkl / efficientvit_m5.pth / timm file, or a pre-training workdir
    config.head = ConfigDict(dict(
        kind=arg.head, pooled=arg.pooled, hidden=(2048, 512), dropout=0.1,  # the paper's MLP
        # standardise the latent with the training frames' mean/std (a fixed affine map,
        # foldable into the first layer, so the head stays the paper's)
        standardize=True,
        # causal TCN (kind=temporal): 2 stages x 10 dilated layers of 64 channels, 68 min of
        # history (receptive field 4093 s), MS-TCN smoothing loss
        tcn_features=64, tcn_layers=10, tcn_stages=2, tcn_dropout=0.5, input_dropout=0.5,
        smooth_weight=0.15))
    config.features = ConfigDict(dict(
        mode=arg.mode,  # cached: encode every frame once; augmented: encode augmented frames
        cache_dir='',  # default <workdir>/features; share one between runs of the same encoder
        dtype='float16', batch_size=256))
    config.data = ConfigDict(dict(
        name='cholec80', builder_config=arg.split, data_dir='', train_split='train',
        eval_split=EVAL_SPLIT[arg.split], image_size=224, worker_count=8,
        label=f'Cholec80, split {arg.split}'))
    config.batch_size = 128
    config.temporal_batch_videos = 8
    config.epochs = 20 if arg.head == 'mlp' else 200
    config.optimizer = optimizer_config(lr=3e-4 if arg.head == 'mlp' else 1e-3,
                                        schedule='exponential',
                                        decay_rate=0.95 if arg.head == 'mlp' else 0.99,
                                        decay_steps=0)  # 0: decay_rate applies per epoch
    config.log_every_steps = 50
    config.eval_every_epochs = 1 if arg.head == 'mlp' else 20
    config.checkpoint = ConfigDict(dict(every_steps=500, keep=2, async_save=True))

    if arg.demo:
        config.encoder.variant = 'm0'
        # a tenth of the seconds show a wrong phase's tint: single frames are fooled there
        config.data.update(demo_videos=6, demo_test_videos=3, demo_seconds=40, demo_root='',
                           demo_misleading=0.1, image_size=64,
                           worker_count=0, label='generated Cholec80-layout data (NOT Cholec80)')
        config.features.batch_size = 64
        config.batch_size = 32
        config.temporal_batch_videos = 8
        config.epochs = 15 if arg.head == 'mlp' else 60
        config.log_every_steps = 5
        config.eval_every_epochs = 5 if arg.head == 'mlp' else 20
        config.checkpoint.update(every_steps=50, keep=2)
    return config
