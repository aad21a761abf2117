"""Weight-file fuzzing: seeded mutations of a valid state_dict (keys dropped, added or renamed,
shapes and dtypes changed, NaN/Inf, non-tensors, truncated and damaged files, a zip missing a
storage) are written to disk and loaded through the public paths. Each case either loads exactly
the expected variables or fails with one user error (`UserError`) naming the file and the key:
nothing loads silently wrong and no bare KeyError/zipfile/pickle error leaks out.

Set GSVIT_JAX_FUZZ_SEED to explore other cases; a failure names its seed and case number.
"""
import io
import os
import pathlib
import zipfile

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import gsvit_jax
from gsvit_jax.convert import (abstract_variables, from_torch, load_torch_file, numpy_to_torch,
                               to_torch)
from gsvit_jax.convert.files import save_torch_file
from gsvit_jax.errors import UserError, run_reporting_errors
from gsvit_jax.models import efficientvit
from gsvit_jax.train.init import load_initial_variables

SEED = int(os.environ.get('GSVIT_JAX_FUZZ_SEED', '13'))
CASES = 240
LAYOUTS = ('msra', 'gsvit', 'timm')
# Every file format can hold these; the rest need torch.save (Python objects, nesting, int keys).
ANY_FORMAT = ('drop_key', 'drop_derived', 'add_key', 'add_head', 'rename_key', 'other_layout_key',
              'shape', 'squeeze_1x1', 'float_dtype', 'float64_rounding', 'int_for_float',
              'float_for_int', 'int_width', 'int_overflow', 'nonfinite', 'overflow', 'bias_index',
              'module_prefix', 'partial_module_prefix', 'truncate', 'flip_byte')
TORCH_ONLY = ('not_a_tensor', 'not_a_dict', 'int_key', 'wrapped')
ZIP_ONLY = ('missing_storage', 'short_storage', 'long_storage', 'no_pickle')
KINDS = ANY_FORMAT + TORCH_ONLY + ZIP_ONLY
FORMATS = ('torch.save', 'writer', 'safetensors')  # writer: gsvit_jax's own torch-free .pth
OTHER_LAYOUT = {'msra': ('blocks1.', 'evit.1.'), 'gsvit': ('evit.1.', 'blocks1.'),
                'timm': ('stages.0.blocks.', 'blocks1.')}  # a prefix and another layout's name


def plan(case: int) -> tuple[np.random.Generator, str, str, str, str]:
    """(rng, layout, file format, mutation, load path) of one case, all drawn from its seed; the
    first cases take every mutation twice in turn."""
    rng = np.random.default_rng([SEED, case])
    kind = KINDS[case % len(KINDS)] if case < 2 * len(KINDS) else str(rng.choice(KINDS))
    if kind in TORCH_ONLY:
        formats = ('torch.save',)
    elif kind in ZIP_ONLY:
        formats = FORMATS[:2]
    else:
        formats = FORMATS
    return (rng, str(rng.choice(LAYOUTS)), str(rng.choice(formats)), kind,
            str(rng.choice(['from_torch', 'init_from'])))


class Model:
    """The tiny EfficientViT at 64 px: random variables, their leaves, and each torch key's leaf."""

    def __init__(self):
        self.template = abstract_variables(efficientvit('tiny', num_classes=0, img_size=64))
        rng = np.random.default_rng(0)
        self.variables = jax.tree_util.tree_map(
            lambda s: (rng.integers(0, 100, s.shape) if s.dtype == np.int32
                       else rng.normal(size=s.shape)).astype(s.dtype), self.template)
        self.leaves, self.treedef = jax.tree_util.tree_flatten(self.variables)
        # leaf i filled with i + 1 tells which state_dict key holds which leaf
        probe = jax.tree_util.tree_unflatten(
            self.treedef, [np.full(x.shape, i + 1, x.dtype) for i, x in enumerate(self.leaves)])
        self.state_dicts = {layout: to_torch(self.variables, layout) for layout in LAYOUTS}
        self.leaf_of = {layout: {k: int(v.flat[0]) - 1 for k, v in to_torch(probe, layout).items()
                                 if not k.endswith('attention_bias_idxs')}
                        for layout in LAYOUTS}


@pytest.fixture(scope='module')
def model() -> Model:
    return Model()


def choose(rng: np.random.Generator, keys) -> str:
    keys = sorted(keys)
    return keys[rng.integers(len(keys))]


def mutate(rng, kind: str, layout: str, model: Model):
    """(object to save, expected leaves or None for "must be refused", words the error names,
    damage to the written bytes or None)."""
    sd = dict(model.state_dicts[layout])
    leaves = list(model.leaves)
    leaf_of = model.leaf_of[layout]
    floats = [k for k in leaf_of if sd[k].dtype == np.float32]
    counters = [k for k in leaf_of if k.endswith('num_batches_tracked')]
    key = choose(rng, floats)
    leaf = leaf_of[key]  # elementwise changes: the Flax leaf changes as its torch tensor does

    if kind == 'drop_key':
        del sd[key]
        return sd, None, [key, 'missing'], None
    if kind == 'drop_derived':
        derived = [k for k in sd if k.endswith(('num_batches_tracked', 'attention_bias_idxs'))]
        k = choose(rng, derived)
        del sd[k]
        if k in leaf_of:
            leaves[leaf_of[k]] = np.zeros_like(leaves[leaf_of[k]])  # an old file: counter zero
        return sd, leaves, [], None
    if kind == 'add_key':
        sd[key + '_extra'] = sd[key]
        return sd, None, [key + '_extra', 'unexpected'], None
    if kind == 'add_head':  # a classifier head, dropped on purpose
        sd['head.l.weight'] = rng.normal(size=(10, 64)).astype(np.float32)
        sd['head.l.bias'] = np.zeros(10, np.float32)
        return sd, leaves, [], None
    if kind == 'rename_key':
        module, _, name = key.rpartition('.')
        renamed = f'{module}.{name[:-2]}{name[-1]}{name[-2]}'  # a typo: weigth, bisa, running_vra
        sd[renamed] = sd.pop(key)
        return sd, None, [key, renamed], None
    if kind == 'other_layout_key':
        old, new = OTHER_LAYOUT[layout]
        k = choose(rng, [k for k in sd if k.startswith(old)])
        sd[k.replace(old, new, 1)] = sd.pop(k)
        return sd, None, [k.replace(old, new, 1), 'unexpected'], None
    if kind == 'shape':
        k = choose(rng, [k for k in leaf_of if sd[k].size > 1] + counters)
        value = sd[k]
        options = [value[..., None], value.reshape(-1)[:-1]]
        if value.ndim >= 2 and value.shape[0] != value.shape[-1]:
            options.append(np.swapaxes(value, 0, -1))
        sd[k] = options[rng.integers(len(options))] if value.ndim else value[None]
        return sd, None, [k, 'shape'], None
    if kind == 'squeeze_1x1':  # 1x1 conv kernels stored 2-D, as some checkpoints do
        k = choose(rng, [k for k in floats if sd[k].ndim == 4 and sd[k].shape[2:] == (1, 1)])
        sd[k] = sd[k][:, :, 0, 0]
        return sd, leaves, [], None
    if kind == 'float_dtype':  # fp16/bf16/fp64 tensors whose values float32 holds exactly
        dtype = [np.float16, ml_dtypes.bfloat16, np.float64][rng.integers(3)]
        sd[key] = sd[key].astype(dtype)
        leaves[leaf] = leaves[leaf].astype(dtype).astype(np.float32)
        return sd, leaves, [], None
    if kind == 'float64_rounding':  # float64 is rounded to the nearest float32
        sd[key] = sd[key].astype(np.float64) * (1 + 1e-12)
        leaves[leaf] = (leaves[leaf].astype(np.float64) * (1 + 1e-12)).astype(np.float32)
        return sd, leaves, [], None
    if kind == 'int_for_float':
        dtype = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_][rng.integers(6)]
        sd[key] = sd[key].astype(dtype)
        return sd, None, [key, 'expected floating-point'], None
    if kind == 'float_for_int':
        k = choose(rng, counters)
        sd[k] = sd[k].astype(np.float32)
        return sd, None, [k, 'expected integers'], None
    if kind == 'int_width':  # counters as int32/int16/uint8: the same numbers
        k = choose(rng, counters)
        sd[k] = sd[k].astype([np.int32, np.int16, np.uint8][rng.integers(3)])
        return sd, leaves, [], None
    if kind == 'int_overflow':  # would wrap around in the model's int32
        k = choose(rng, counters)
        sd[k] = np.array(2 ** 31 + int(rng.integers(100)), np.int64)
        return sd, None, [k, 'do not fit int32'], None
    if kind == 'nonfinite':
        dtype = [np.float32, np.float16, ml_dtypes.bfloat16, np.float64][rng.integers(4)]
        value = sd[key].astype(dtype)
        value.flat[rng.integers(value.size)] = [np.nan, np.inf, -np.inf][rng.integers(3)]
        sd[key] = value
        return sd, None, [key, 'NaN or Inf'], None
    if kind == 'overflow':  # finite in float64, infinite in float32
        value = sd[key].astype(np.float64)
        value.flat[rng.integers(value.size)] = 1e39
        sd[key] = value
        return sd, None, [key, 'exceed the range of float32'], None
    if kind == 'bias_index':
        if layout == 'timm':  # timm files have no index: a bias table's shape instead
            k = choose(rng, [k for k in sd if k.endswith('attention_biases')])
            sd[k] = sd[k][:, :-1]
            return sd, None, [k, 'img_size'], None
        k = choose(rng, [k for k in sd if k.endswith('attention_bias_idxs')])
        sd[k] = sd[k].copy()
        sd[k].flat[rng.integers(sd[k].size)] += 1
        return sd, None, [k, 'differs from the index'], None
    if kind == 'module_prefix':  # saved from DataParallel
        return {f'module.{k}': v for k, v in sd.items()}, leaves, [], None
    if kind == 'partial_module_prefix':
        sd[f'module.{key}'] = sd.pop(key)
        return sd, None, [key, f'module.{key}'], None
    if kind == 'not_a_tensor':
        k = choose(rng, list(leaf_of))
        sd[k] = [3, 'abc', None, [1.0, 2.0], 2.5][rng.integers(5)]
        return sd, None, [k, 'expected a tensor'], None
    if kind == 'not_a_dict':
        return [sd[key], sd[key]] if rng.integers(2) else sd[key], None, ['not a state_dict'], None
    if kind == 'int_key':
        sd[7] = sd[key]
        return sd, None, ['keys are parameter names', '7'], None
    if kind == 'wrapped':  # a training checkpoint with the state_dict under 'model'/'state_dict'
        return {str(rng.choice(['model', 'state_dict'])): sd, 'epoch': 3}, leaves, [], None
    return sd, leaves, [], lambda data: damage(rng, kind, data)


def damage(rng: np.random.Generator, kind: str, data: bytes) -> tuple[bytes, bool]:
    """Damaged file bytes, and whether the damage must be refused (a byte flip may leave the
    values intact, e.g. in a zip's date field: then the load must be exact)."""
    if kind == 'truncate':
        return data[:rng.integers(len(data))], True
    if kind == 'flip_byte':
        if data[:4] == b'PK\x03\x04':
            where = rng.integers(len(data))
        else:  # safetensors has no checksum: a flipped value byte cannot be noticed; its header
            where = rng.integers(8 + int.from_bytes(data[:8], 'little'))
        flipped = bytearray(data)
        flipped[where] ^= 1 << rng.integers(8)
        return bytes(flipped), False
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    storages = sorted(n for n in entries if '/data/' in n)
    storage = storages[rng.integers(len(storages))]
    if kind == 'missing_storage':
        del entries[storage]
    elif kind == 'short_storage':
        entries[storage] = entries[storage][:rng.integers(len(entries[storage]))]
    elif kind == 'long_storage':  # a storage larger than its tensor is normal (views, slices)
        entries[storage] += bytes(16)
    elif kind == 'no_pickle':
        del entries[next(n for n in entries if n.endswith('data.pkl'))]
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return out.getvalue(), kind != 'long_storage'


def write(obj, fmt: str, path: pathlib.Path) -> None:
    if fmt == 'safetensors':
        save_file(obj, str(path))
    elif fmt == 'writer':
        save_torch_file(obj, path)
    else:
        def as_torch(x):
            if isinstance(x, dict):
                return {k: as_torch(v) for k, v in x.items()}
            if isinstance(x, list):
                return [as_torch(v) for v in x]
            return numpy_to_torch({'x': x})['x'] if isinstance(x, np.ndarray) else x
        torch.save(as_torch(obj), path)


def load(model: Model, path: pathlib.Path, how: str) -> list[np.ndarray]:
    """The encoder's leaves as `load_encoder`'s loader or pre-training's `init_from` reads them."""
    if how == 'from_torch':
        loaded = from_torch(load_torch_file(path), model.template, drop_prefixes=('head.',),
                            source=str(path))
    else:  # an autoencoder's encoder part; its decoder must be kept as it was
        decoder = {'params': {'w': np.arange(3.0, dtype=np.float32)}, 'batch_stats': {}}
        variables = {c: {'evit': model.variables[c], 'decoder': decoder[c]} for c in decoder}
        full = load_initial_variables(str(path), variables)
        np.testing.assert_array_equal(full['params']['decoder']['w'], decoder['params']['w'])
        loaded = {c: full[c]['evit'] for c in decoder}
    leaves, treedef = jax.tree_util.tree_flatten(loaded)
    assert treedef == model.treedef
    return [np.asarray(x) for x in leaves]


@pytest.mark.parametrize('case', range(CASES),
                         ids=[f'{i:03d}-' + '-'.join(plan(i)[1:]) for i in range(CASES)])
def test_a_mutated_file_loads_exactly_or_fails_clearly(case, model, tmp_path):
    rng, layout, fmt, kind, how = plan(case)
    obj, expected, words, damage_fn = mutate(rng, kind, layout, model)
    path = tmp_path / ('weights.safetensors' if fmt == 'safetensors' else 'weights.pth')
    write(obj, fmt, path)
    must_fail = expected is None
    if damage_fn is not None:
        data, must_fail = damage_fn(path.read_bytes())
        path.write_bytes(data)
    where = f'seed {SEED} case {case} ({kind}, {layout}, {fmt}, {how})'
    try:
        leaves = load(model, path, how)
    except UserError as e:
        message = str(e)
        assert str(path) in message, f'{where}: the error does not name the file: {message}'
        for word in words:
            assert str(word) in message, f'{where}: the error does not name {word!r}: {message}'
        return
    assert not must_fail, f'{where}: loaded without an error'
    for i, (got, want) in enumerate(zip(leaves, expected)):
        assert got.dtype == want.dtype and got.shape == want.shape, f'{where}: leaf {i}'
        assert got.tobytes() == want.tobytes(), f'{where}: leaf {i} loaded different values'


def test_every_mutation_runs_and_enough_cases_are_drawn():
    assert CASES >= 200
    drawn = {plan(i)[3] for i in range(CASES)}
    assert drawn == set(KINDS)
    assert {plan(i)[2] for i in range(CASES)} == set(FORMATS)


def test_a_damaged_file_reaches_a_user_as_one_line(tmp_path, capsys):
    """Through `load_encoder`, as a command reports it (exit status 2, no traceback)."""
    path = tmp_path / 'GSViT.pkl'
    path.write_bytes(b'PK\x03\x04' + bytes(100))  # an interrupted download
    with pytest.raises(SystemExit) as exited:
        run_reporting_errors('encode', lambda: gsvit_jax.load_encoder(path, variant='tiny',
                                                                      img_size=64))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f'encode: error: {path}: a damaged zip file') and err.count('\n') == 1
