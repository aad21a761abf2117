"""One prepared dataset for both readers: TFRecord files (`tfds.load`, tf.data) next to the
ArrayRecord ones (`tfds.data_source`, Grain), the same examples in the same order.

`add_tfrecord_copy` writes the copy and lists `tfrecord` in dataset_info.json's
`alternative_file_formats`; ArrayRecord stays the main format, so the default data path does not
change. `tfds.load` on a registered builder reads `file_format` only: `tfrecord_for_tf_data`
switches it to the copy (or says how to make one). Writing TFRecord needs TensorFlow (the `tf`
extra); TFDS's own `convert_format` would also need Apache Beam.
"""
from __future__ import annotations

import os

import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordReader
from etils import epath

ARRAY_RECORD, TFRECORD = 'array_record', 'tfrecord'
BOTH = 'both'  # `python -m tfds_builders.build --file_format=both`
_CHUNK = 256  # records read at a time


def add_tfrecord_copy(data_dir: str | os.PathLike) -> None:
    """Write every shard of the ArrayRecord dataset in `data_dir` again as TFRecord and list the
    copy in its dataset_info.json."""
    from tensorflow_datasets.core.file_adapters import TfRecordFileAdapter  # needs TensorFlow
    info = tfds.builder_from_directory(os.fspath(data_dir)).info
    if info.file_format.value != ARRAY_RECORD:
        raise ValueError(f'{data_dir} holds {info.file_format.value} files; a TFRecord copy is '
                         f'made from {ARRAY_RECORD}')
    for split in info.splits.values():
        template = split.filename_template
        sources = template.sharded_filepaths(split.num_shards)
        targets = template.replace(filetype_suffix=TFRECORD).sharded_filepaths(split.num_shards)
        for source, target, length in zip(sources, targets, split.shard_lengths):
            partial = epath.Path(f'{target}.incomplete')
            TfRecordFileAdapter.write_examples(partial, _records(source, length))
            partial.replace(target)
    if TFRECORD not in info.as_proto.alternative_file_formats:
        info.add_alternative_file_format(TFRECORD)
    info.write_to_directory(data_dir)


def tfrecord_for_tf_data(info: tfds.core.DatasetInfo, data_dir: str) -> None:
    """Point `info` at the TFRecord copy before tf.data reads it; an ArrayRecord-only dataset is
    an error that names the build `tfds.load` needs and the readers that work without one."""
    if info.file_format.value != ARRAY_RECORD:
        return
    if TFRECORD not in info.as_proto.alternative_file_formats:
        raise NotImplementedError(
            f'{data_dir} holds ArrayRecord files only (`python -m tfds_builders.build` writes '
            'them by default), which tfds.load and as_dataset cannot read. Read them with '
            f'tfds.data_source or gsvit_jax.data.frames.open_prepared, or build with '
            f'`--file_format={BOTH}` (ArrayRecord and TFRecord; needs TensorFlow) or '
            f'`--file_format={TFRECORD}` for tfds.load.')
    info.set_file_format(TFRECORD, override=True, override_if_initialized=True)
    if ARRAY_RECORD not in {f.value for f in info.alternative_file_formats}:
        info.add_alternative_file_format(ARRAY_RECORD)  # data_source on this builder still works


def _records(path: epath.Path, length: int):
    """(None, serialized example) for each record of an ArrayRecord shard, in order."""
    reader = ArrayRecordReader(os.fspath(path))
    try:
        if reader.num_records() != length:
            raise ValueError(f'{path}: {reader.num_records()} records, dataset_info.json says '
                             f'{length}')
        for start in range(0, length, _CHUNK):
            for record in reader.read(start, min(start + _CHUNK, length)):
                yield None, record
    finally:
        reader.close()
