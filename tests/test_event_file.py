"""TensorBoard event files written without TensorFlow read back with TensorFlow's own reader
(which checks every record's CRC)."""
import io

import numpy as np
import pytest
from PIL import Image

from gsvit_jax.train.event_file import EventFileWriter, crc32c
from gsvit_jax.train.logging import MetricWriter


def test_crc32c_check_value():
    assert crc32c(b'123456789') == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b'') == 0


def test_tensorflow_reads_scalars_and_images(tmp_path):
    tf = pytest.importorskip('tensorflow')
    image = np.random.default_rng(0).integers(0, 256, (12, 20, 3), np.uint8)
    writer = MetricWriter(tmp_path)
    writer.scalars(5, {'loss': 0.25, 'psnr': 21.5})
    writer.scalars(300, {'loss': 0.125}, split='eval')
    writer.image(300, 'predictions', image)
    writer.close()
    [path] = (tmp_path / 'tensorboard').glob('events.out.tfevents.*')
    events = list(tf.compat.v1.train.summary_iterator(str(path)))
    assert events[0].file_version == 'brain.Event:2'
    scalars = [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value
               if v.HasField('simple_value')]
    assert scalars == [(5, 'train/loss', 0.25), (5, 'train/psnr', 21.5), (300, 'eval/loss', 0.125)]
    [picture] = [v.image for e in events for v in e.summary.value if v.HasField('image')]
    assert (picture.height, picture.width, picture.colorspace) == (12, 20, 3)
    decoded = np.asarray(Image.open(io.BytesIO(picture.encoded_image_string)))
    np.testing.assert_array_equal(decoded, image)
    assert all(e.wall_time > 1.7e9 for e in events)


def test_large_steps_and_appending_a_second_file(tmp_path):
    tf = pytest.importorskip('tensorflow')
    for step in (2**40, 7):
        writer = EventFileWriter(tmp_path)
        writer.scalar('x', 1.5, step)
        writer.close()
    steps = sorted(e.step for path in tmp_path.glob('events.*')
                   for e in tf.compat.v1.train.summary_iterator(str(path)) if e.summary.value)
    assert steps == [7, 2**40]
