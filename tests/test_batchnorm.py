"""The PyTorch-semantics BatchNorm against torch.nn.BatchNorm2d/1d in train and eval mode."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gsvit_jax.models.batchnorm import BatchNorm


@pytest.mark.parametrize('shape', [(4, 5, 6, 3), (8, 3)])
def test_train_and_eval_match_torch(shape):
    rng = np.random.default_rng(0)
    channels = shape[-1]
    torch_bn = torch.nn.BatchNorm2d(channels) if len(shape) == 4 else torch.nn.BatchNorm1d(channels)
    with torch.no_grad():
        torch_bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, channels).astype(np.float32)))
        torch_bn.bias.copy_(torch.from_numpy(rng.normal(size=channels).astype(np.float32)))
    bn = BatchNorm()
    variables = bn.init(jax.random.key(0), jnp.zeros(shape))
    variables = {'params': {'weight': torch_bn.weight.detach().numpy(),
                            'bias': torch_bn.bias.detach().numpy()},
                 'batch_stats': variables['batch_stats']}

    def to_torch(x):
        return torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if x.ndim == 4 else x)

    def from_torch(y):
        return y.detach().numpy().transpose(0, 2, 3, 1) if y.ndim == 4 else y.detach().numpy()

    torch_bn.train()
    for step in range(3):
        x = rng.normal(2.0, 3.0, shape).astype(np.float32)
        y, updates = bn.apply(variables, x, train=True, mutable=['batch_stats'])
        variables = {**variables, **updates}
        np.testing.assert_allclose(np.asarray(y), from_torch(torch_bn(to_torch(x))), atol=1e-5)
    stats = variables['batch_stats']
    np.testing.assert_allclose(stats['running_mean'], torch_bn.running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(stats['running_var'], torch_bn.running_var.numpy(), rtol=1e-6)
    assert int(stats['num_batches_tracked']) == int(torch_bn.num_batches_tracked) == 3

    torch_bn.eval()
    x = rng.normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(np.asarray(bn.apply(variables, x)), from_torch(torch_bn(to_torch(x))),
                               atol=1e-5)


@pytest.mark.parametrize('shape', [(4, 5, 6, 3), (8, 3)])
def test_train_mode_gradients_match_torch(shape):
    """The hand-written backward pass (`normalize_batch`) against PyTorch's autograd: gradients
    of a weighted sum of the outputs for the input, the weight and the bias."""
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, shape).astype(np.float32)
    probe = rng.normal(size=shape).astype(np.float32)  # d loss / d y
    weight = rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32)
    bias = rng.normal(size=shape[-1]).astype(np.float32)
    bn = BatchNorm()
    stats = bn.init(jax.random.key(0), jnp.zeros(shape))['batch_stats']

    def loss(x, params):
        y, _ = bn.apply({'params': params, 'batch_stats': stats}, x, train=True,
                        mutable=['batch_stats'])
        return jnp.sum(y * probe)

    dx, dparams = jax.grad(loss, argnums=(0, 1))(x, {'weight': weight, 'bias': bias})

    channels_first = (0, 3, 1, 2) if len(shape) == 4 else (0, 1)
    tx = torch.from_numpy(x.transpose(channels_first).copy()).requires_grad_()
    tw, tb = torch.from_numpy(weight).requires_grad_(), torch.from_numpy(bias).requires_grad_()
    ty = torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True)
    (ty * torch.from_numpy(probe.transpose(channels_first).copy())).sum().backward()
    back = (0, 2, 3, 1) if len(shape) == 4 else (0, 1)
    np.testing.assert_allclose(np.asarray(dx), tx.grad.numpy().transpose(back), atol=2e-5)
    np.testing.assert_allclose(np.asarray(dparams['weight']), tw.grad.numpy(), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(dparams['bias']), tb.grad.numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(dx)).max() > 0.01  # not a vacuous comparison


def test_bfloat16_output_with_float32_statistics():
    x = np.random.default_rng(2).normal(1.0, 2.0, (8, 4, 4, 5)).astype(np.float32)
    bn = BatchNorm(dtype=jnp.bfloat16)
    variables = bn.init(jax.random.key(0), x)
    y, updates = bn.apply(variables, x, train=True, mutable=['batch_stats'])
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32).mean(axis=(0, 1, 2)), 0.0, atol=2e-2)
    np.testing.assert_allclose(updates['batch_stats']['running_mean'],
                               0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    grad = jax.grad(lambda x: jnp.sum(bn.apply(variables, x, train=True,
                                               mutable=['batch_stats'])[0].astype(jnp.float32)))(x)
    assert grad.dtype == jnp.float32 and np.abs(np.asarray(grad)).max() < 1e-2  # sum(y) ~ const
