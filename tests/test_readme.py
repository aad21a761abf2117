"""The README's "Using the encoder" examples: the first runs as written (shrunk to the tiny
variant, so it compiles in seconds), the shapes its comments promise are full-size GSViT's
(shape evaluation of the M5 models, nothing compiled), and the second's imports exist."""
import functools
import pathlib
import re

import jax
import numpy as np
import pytest

from gsvit_jax import api
from gsvit_jax.convert import abstract_variables, load_torch_file
from gsvit_jax.models.decoder import DEFAULT_WIDTHS, gsvit_autoencoder
from gsvit_jax.models.efficientvit import efficientvit

README = pathlib.Path(__file__).parents[1] / 'README.md'
TINY_DECODER = (16,) * 5


def examples() -> list[str]:
    """The python code blocks of the section, in order."""
    text = README.read_text()
    start = text.index('## Using the encoder')
    section = text[start:text.index('\n## ', start + 1)]
    return re.findall(r'```python\n(.*?)```', section, re.S)


def promised_shapes(code: str) -> dict[str, tuple[int, ...]]:
    """`expression.shape` -> the shape in its comment, e.g. `enc.pooled(frames).shape  # (10, 384)`."""
    found = re.findall(r'^(\S[^#\n]*?\.shape)\s+# (\([\d, ]+\))', code, re.M)
    return {expression: tuple(int(n) for n in shape.strip('()').split(',') if n.strip())
            for expression, shape in found}


def model_shapes(variant: str, img_size: int, decoder: tuple[int, ...],
                 frames: int = 10) -> dict[str, tuple[int, ...]]:
    """What the example's expressions give for a model size, by shape evaluation."""
    encoder = efficientvit(variant, num_classes=0, img_size=img_size)
    image = jax.ShapeDtypeStruct((frames, img_size, img_size, 3), np.float32)
    features = jax.eval_shape(encoder.apply, abstract_variables(encoder), image).shape
    autoencoder = gsvit_autoencoder(variant, img_size, decoder)
    predicted = jax.eval_shape(autoencoder.apply, abstract_variables(autoencoder),
                               jax.ShapeDtypeStruct((2, img_size, img_size, 3), np.float32))
    return {'enc.features(frames).shape': features,
            'enc.latent(frames).shape': (frames, int(np.prod(features[1:]))),
            'enc.pooled(frames).shape': (frames, features[-1]),
            'ae.predict(frames[:2]).shape': predicted.shape}


def test_the_comments_give_gsvit_shapes():
    assert promised_shapes(examples()[0]) == model_shapes('m5', 224, DEFAULT_WIDTHS)


def test_the_first_example_runs_as_written(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # it writes encoder.safetensors
    tiny = dict(variant='tiny', img_size=64)
    monkeypatch.setattr(api, 'load_encoder', functools.partial(api.load_encoder, **tiny))
    monkeypatch.setattr(api, 'load_autoencoder', functools.partial(
        api.load_autoencoder, **tiny, decoder_widths=TINY_DECODER))
    code = examples()[0]
    namespace: dict = {}
    exec(compile(code, str(README), 'exec'), namespace)  # noqa: S102
    expected = model_shapes('tiny', 64, TINY_DECODER)
    assert set(promised_shapes(code)) == set(expected)
    for expression, shape in expected.items():
        assert eval(expression, namespace) == shape, expression  # noqa: S307
    assert re.fullmatch(r'[0-9a-f]{16}', eval('enc.fingerprint', namespace))  # noqa: S307
    saved = load_torch_file(tmp_path / 'encoder.safetensors')
    assert 'patch_embed.conv1.conv.weight' in saved  # timm's keys


@pytest.mark.parametrize('line', [l for l in examples()[1].splitlines()
                                  if l.startswith(('import ', 'from '))])
def test_the_second_example_imports_exist(line):
    exec(line, {})  # noqa: S102
