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
