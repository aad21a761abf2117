"""Encode built-in synthetic surgery frames with the GSViT encoder; print shapes and timings.

    python experiments/encode_demo.py                        # random weights
    python experiments/encode_demo.py --weights GSViT.pkl    # or efficientvit_m5.pth / timm files

It exercises preprocessing, the encoder, the BatchNorm-folded inference path and weight import
on any machine, in seconds (the pre-training demo: experiments/configs/pretrain.py).
"""
from absl import flags

from gsvit_jax.config_args import run_app
from gsvit_jax.errors import run_reporting_errors

from gsvit_jax.demo import run_encode_demo

flags.DEFINE_string('weights', None, 'PyTorch weights (GSViT, Microsoft EfficientViT or timm layout).')
flags.DEFINE_integer('batch', 8, 'Frames per batch for the throughput measurement.',
                     lower_bound=1)
flags.DEFINE_bool('debug', False, 'Show the traceback of a user error (also GSVIT_JAX_DEBUG=1).')
FLAGS = flags.FLAGS


def main(argv):
    del argv
    run_reporting_errors('encode_demo', lambda: run_encode_demo(weights=FLAGS.weights,
                                                                batch=FLAGS.batch),
                         debug=FLAGS.debug)


if __name__ == '__main__':
    run_app('encode_demo', main)
