"""Bad input at every entry point: one line `<prog>: error: ...` naming the culprit, exit status 2,
no traceback, and nothing in the case's folder (its workdir, inputs, outputs) changed.

All cases run from one process that imported the libraries once (tests/fork_runner.py), each in a
fork of it: a real exit status and real output, without seconds of imports per case.
"""
import fcntl
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

from xla_env import xla_flags

ROOT = pathlib.Path(__file__).parents[1]
P = 'experiments/configs/pretrain.py'
Q = 'experiments/configs/phase_cholec80.py'


def pretrain(*args, workdir='{tmp}/run'):
    return ['experiments/pretrain.py', *args, f'--workdir={workdir}']


def phase(*args, workdir='{tmp}/run'):
    return ['experiments/train_phase.py', *args, f'--workdir={workdir}']


EMBED = ['-m', 'gsvit_jax.embed']
BUILD = ['-m', 'tfds_builders.build']
DOWNLOAD = ['-m', 'tfds_builders.gensurgery.download']

# name: (program named in the error line, argv, words the error line must contain)
CASES = {
    # experiments/pretrain.py: config file, its arguments, every field, the workdir
    'pretrain: missing config file': ('pretrain', pretrain('--config=experiments/configs/absent.py'),
                                      ['--config', 'absent.py']),
    'pretrain: missing config file, split flag': (
        'pretrain', pretrain('--config', 'experiments/configs/absent.py:demo'),
        ['--config', 'absent.py']),
    'pretrain: unknown config argument': ('pretrain', pretrain(f'--config={P}:bogus'),
                                          ['bogus', 'unknown config argument', 'runlocal']),
    'pretrain: unknown variant argument': ('pretrain', pretrain(f'--config={P}:variant=m9'),
                                           ['variant=m9', 'm5']),
    'pretrain: batch size 0': ('pretrain', pretrain(f'--config={P}:runlocal', '--config.batch_size=0'),
                               ['batch_size=0', 'positive']),
    'pretrain: batch size not a number': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.batch_size=abc'),
        ['batch_size', 'abc']),
    'pretrain: batch not divisible by the devices': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.batch_size=3'),
        ['batch_size=3', 'not divisible', '2 devices']),
    'pretrain: unknown field': ('pretrain', pretrain(f'--config={P}:runlocal', '--config.batchsize=8'),
                                ['--config.batchsize', 'batch_size']),
    'pretrain: no workdir': ('pretrain', ['experiments/pretrain.py', f'--config={P}:runlocal'],
                             ['--workdir']),
    'pretrain: workdir is a file': ('pretrain', pretrain(f'--config={P}:runlocal',
                                                         workdir='{tmp}/a_file'),
                                    ['--workdir', 'a_file', 'is a file']),
    'pretrain: unknown dataset': ('pretrain', pretrain(f'--config={P}:runlocal',
                                                       '--config.data.name=nonexistent'),
                                  ["data.name='nonexistent'", 'no such dataset', 'gensurgery']),
    'pretrain: dataset the demo ignores': (
        'pretrain', pretrain(f'--config={P}:demo', '--config.data.name=cholec80'),
        ["data.name='cholec80'", 'demo']),
    'pretrain: data_dir the synthetic data ignores': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.data.data_dir={tmp}/empty_dir'),
        ['data.data_dir=', 'empty_dir', 'not read', 'synthetic']),
    'pretrain: data_dir the demo ignores': (
        'pretrain', pretrain(f'--config={P}:demo', '--config.data.data_dir={tmp}/empty_dir'),
        ['data.data_dir=', 'empty_dir', 'not read', 'demo']),
    'pretrain: synthetic-data field without synthetic data': (
        'pretrain', pretrain(f'--config={P}', '--config.data.synthetic_videos=3'),
        ['--config.data.synthetic_videos', 'not read', "data.name='synthetic'"]),
    'pretrain: synthetic-data field in the demo': (
        'pretrain', pretrain(f'--config={P}:demo', '--config.data.synthetic_seconds=5'),
        ['--config.data.synthetic_seconds', 'not read', ':runlocal']),
    'pretrain: demo field outside the demo': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.data.demo_seconds=5'),
        ['--config.data.demo_seconds', 'no field']),
    'pretrain: dataset not prepared': (
        'pretrain', pretrain(f'--config={P}', '--config.data.data_dir={tmp}/no_data'),
        ["data.name='gensurgery'", 'not prepared', 'no_data']),
    'pretrain: init_from not a weights file': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.init_from={tmp}/garbage.txt'),
        ['init_from', 'garbage.txt', 'not a weights file']),
    'pretrain: init_from missing': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.init_from={tmp}/absent.pth'),
        ['init_from', 'absent.pth', 'no such file']),
    'pretrain: init_from folder without checkpoint': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.init_from={tmp}/empty_dir'),
        ['init_from', 'empty_dir', 'no checkpoint']),
    'pretrain: init_from empty weights file': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.init_from={tmp}/empty.pth'),
        ['init_from', 'empty.pth', 'empty']),
    'pretrain: total_steps 0': ('pretrain', pretrain(f'--config={P}:runlocal',
                                                     '--config.total_steps=0'),
                                ['total_steps=0', 'positive']),
    'pretrain: unknown optimizer': ('pretrain', pretrain(f'--config={P}:runlocal',
                                                         '--config.optimizer.name=sgdx'),
                                    ["optimizer.name='sgdx'", 'adamw']),
    'pretrain: unknown schedule': ('pretrain', pretrain(f'--config={P}:runlocal',
                                                        '--config.optimizer.schedule=cosine'),
                                   ["optimizer.schedule='cosine'", 'warmup_cosine']),
    'pretrain: negative learning rate': ('pretrain', pretrain(f'--config={P}:runlocal',
                                                              '--config.optimizer.lr=-1'),
                                         ['optimizer.lr=-1', 'positive']),
    'pretrain: Adam beta out of range': ('pretrain', pretrain(f'--config={P}:runlocal',
                                                              '--config.optimizer.b1=1.5'),
                                         ['optimizer.b1=1.5', '[0, 1)']),
    'pretrain: unknown compute dtype': ('pretrain', pretrain(f'--config={P}:runlocal',
                                                             '--config.compute_dtype=float16'),
                                        ["compute_dtype='float16'", 'bfloat16']),
    'pretrain: unknown loss': ('pretrain', pretrain(f'--config={P}:runlocal', '--config.loss=l3'),
                               ["loss='l3'", "'mse'"]),
    'pretrain: negative frame gap': ('pretrain', pretrain(f'--config={P}:runlocal',
                                                          '--config.data.gap_s=-1'),
                                     ['data.gap_s=-1', 'positive']),
    'pretrain: image size not a multiple of 32': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.model.img_size=100'),
        ['model.img_size=100', 'multiple of 32']),
    'pretrain: keep no checkpoint': ('pretrain', pretrain(f'--config={P}:runlocal',
                                                          '--config.checkpoint.keep=0'),
                                     ['checkpoint.keep=0', 'positive']),
    'pretrain: checkpoint every 0 steps': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.checkpoint.every_steps=0'),
        ['checkpoint.every_steps=0', 'positive']),
    'pretrain: coordinator without port': (
        'pretrain', pretrain(f'--config={P}:runlocal', '--config.distributed.coordinator=nohost',
                             '--config.distributed.num_processes=2',
                             '--config.distributed.process_id=0'),
        ["distributed.coordinator='nohost'", 'host:port']),
    'pretrain: process id out of range': (
        'pretrain', pretrain(f'--config={P}:runlocal',
                             '--config.distributed.coordinator=localhost:1234',
                             '--config.distributed.num_processes=2',
                             '--config.distributed.process_id=5'),
        ['distributed.process_id=5', '0..1']),
    'pretrain: workdir in use by another run': (
        'pretrain', pretrain(f'--config={P}:runlocal', workdir='{tmp}/busy'),
        ['busy', 'in use by process', 'another --workdir']),
    # experiments/train_phase.py
    'train_phase: missing config file': ('train_phase', phase('--config=experiments/configs/no.py'),
                                         ['--config', 'no.py']),
    'train_phase: unknown head argument': ('train_phase', phase(f'--config={Q}:head=rnn'),
                                           ['head=rnn', 'temporal']),
    'train_phase: unknown split argument': ('train_phase', phase(f'--config={Q}:split=50_50'),
                                            ['split=50_50', '40_8_32']),
    'train_phase: unknown feature mode': ('train_phase', phase(f'--config={Q}:demo',
                                                               '--config.features.mode=fancy'),
                                          ["features.mode='fancy'", 'augmented']),
    'train_phase: Cholec80 not prepared': (
        'train_phase', phase(f'--config={Q}', '--config.data.data_dir={tmp}/no_data'),
        ['cholec80/40_40', 'not prepared', 'no_data']),
    'train_phase: encoder weights missing': (
        'train_phase', phase(f'--config={Q}:demo', '--config.encoder.init_from={tmp}/absent.pkl'),
        ['encoder.init_from', 'absent.pkl', 'no such file']),
    'train_phase: batch size 0': ('train_phase', phase(f'--config={Q}:demo', '--config.batch_size=0'),
                                  ['batch_size=0', 'positive']),
    'train_phase: epochs 0': ('train_phase', phase(f'--config={Q}:demo', '--config.epochs=0'),
                              ['epochs=0', 'positive']),
    'train_phase: unknown encoder variant': (
        'train_phase', phase(f'--config={Q}:demo', '--config.encoder.variant=m9'),
        ["encoder.variant='m9'", "'m5'"]),
    'train_phase: unknown feature dtype': ('train_phase', phase(f'--config={Q}:demo',
                                                                '--config.features.dtype=int8'),
                                           ["features.dtype='int8'", 'float16']),
    'train_phase: dropout out of range': ('train_phase', phase(f'--config={Q}:demo',
                                                               '--config.head.dropout=1.5'),
                                          ['head.dropout=1.5', '[0, 1)']),
    'train_phase: workdir is a file': ('train_phase', phase(f'--config={Q}:demo',
                                                            workdir='{tmp}/a_file'),
                                       ['--workdir', 'a_file', 'is a file']),
    # experiments/eval_phase.py, experiments/encode_demo.py
    'eval_phase: not a phase run': ('eval_phase', ['experiments/eval_phase.py',
                                                   '--workdir={tmp}/empty_dir', '--out={tmp}/out'],
                                    ['empty_dir', 'config.json', 'train_phase.py']),
    'eval_phase: no output folder': ('eval_phase', ['experiments/eval_phase.py',
                                                    '--workdir={tmp}/empty_dir'], ['--out']),
    'encode_demo: weights missing': ('encode_demo', ['experiments/encode_demo.py',
                                                     '--weights={tmp}/absent.pth'],
                                     ['absent.pth', 'no weights file']),
    'encode_demo: weights not a state_dict': ('encode_demo', ['experiments/encode_demo.py',
                                                              '--weights={tmp}/garbage.txt'],
                                              ['garbage.txt', 'state_dict']),
    'encode_demo: batch 0': ('encode_demo', ['experiments/encode_demo.py', '--batch=0'],
                             ['--batch=0', 'positive']),
    # gsvit-phase
    'gsvit-phase: video missing': ('gsvit-phase', ['-m', 'gsvit_jax.phase', 'predict',
                                                   '{tmp}/absent.mp4', '--checkpoint={tmp}/empty_dir'],
                                   ['absent.mp4', 'no such video']),
    'gsvit-phase: not a phase run': ('gsvit-phase', ['-m', 'gsvit_jax.phase', 'predict',
                                                     '{tmp}/garbage.txt', '--checkpoint={tmp}/empty_dir'],
                                     ['empty_dir', 'config.json']),
    'gsvit-phase: batch 0': ('gsvit-phase', ['-m', 'gsvit_jax.phase', 'predict', '{tmp}/garbage.txt',
                                             '--checkpoint={tmp}/empty_dir', '--batch=0'],
                             ['--batch 0', 'at least 1']),
    # gsvit-embed
    'gsvit-embed: input missing': ('gsvit-embed', [*EMBED, '{tmp}/absent.mp4', '--out={tmp}/emb'],
                                   ['absent.mp4', 'no such file']),
    'gsvit-embed: fps 0': ('gsvit-embed', [*EMBED, '{tmp}/garbage.txt', '--out={tmp}/emb',
                                           '--fps=0'], ['fps', 'positive']),
    'gsvit-embed: weights missing': ('gsvit-embed', [*EMBED, '{tmp}/garbage.txt', '--out={tmp}/emb',
                                                     '--weights={tmp}/absent.pth'],
                                     ['--weights', 'absent.pth']),
    'gsvit-embed: output is a file': ('gsvit-embed', [*EMBED, '{tmp}/garbage.txt',
                                                      '--out={tmp}/a_file'], ['a_file', 'is a file']),
    'gsvit-embed: batch 0': ('gsvit-embed', [*EMBED, '{tmp}/empty_dir', '--out={tmp}/emb',
                                             '--batch-size=0'], ['--batch-size 0', 'at least 1']),
    'gsvit-embed: unknown TFDS split': ('gsvit-embed', [*EMBED, 'tfds:nope/test', '--out={tmp}/emb'],
                                        ['tfds:nope/test', 'tfds_builders.build']),
    'gsvit-embed search: index missing': ('gsvit-embed search',
                                          [*EMBED, 'search', '--index={tmp}/absent',
                                           '--query={tmp}/garbage.txt'], ['absent', 'index']),
    # gsvit-convert
    'gsvit-convert: checkpoint missing': ('gsvit-convert', ['-m', 'gsvit_jax.convert', 'to-torch',
                                                            '{tmp}/absent', '{tmp}/out.pth'],
                                          ['absent', 'no checkpoint']),
    'gsvit-convert: weights not a state_dict': (
        'gsvit-convert', ['-m', 'gsvit_jax.convert', 'from-torch', '{tmp}/garbage.txt',
                          '{tmp}/converted'], ['garbage.txt', 'state_dict']),
    'gsvit-convert: unknown output type': ('gsvit-convert', ['-m', 'gsvit_jax.convert', 'to-torch',
                                                             '{tmp}/empty_dir', '{tmp}/out.xyz'],
                                           ['out.xyz', '.safetensors']),
    # python -m tfds_builders.build
    'build: unknown dataset': ('python -m tfds_builders.build',
                               [*BUILD, 'nope', '--manual_dir={tmp}/empty_dir', '--data_dir={tmp}/dd'],
                               ['nope', 'cholec80']),
    'build: manual dir missing': ('python -m tfds_builders.build',
                                  [*BUILD, 'cholec80', '--manual_dir={tmp}/absent',
                                   '--data_dir={tmp}/dd'], ['--manual_dir', 'absent', 'no such']),
    'build: Cholec80 without videos/': ('python -m tfds_builders.build',
                                        [*BUILD, 'cholec80', '--manual_dir={tmp}/empty_dir',
                                         '--data_dir={tmp}/dd'], ['empty_dir', 'videos/']),
    'build: GenSurgery without videos': ('python -m tfds_builders.build',
                                         [*BUILD, 'gensurgery', '--manual_dir={tmp}/empty_dir',
                                          '--data_dir={tmp}/dd'], ['empty_dir', 'no GenSurgery video']),
    'build: unknown builder config': ('python -m tfds_builders.build',
                                      [*BUILD, 'cholec80', '--manual_dir={tmp}/empty_dir',
                                       '--data_dir={tmp}/dd', '--config=99_1'],
                                      ['--config=99_1', '40_40']),
    'build: workers 0': ('python -m tfds_builders.build',
                         [*BUILD, 'cholec80', '--manual_dir={tmp}/empty_dir',
                          '--data_dir={tmp}/dd', '--workers=0'], ['--workers=0', 'at least 1']),
    # python -m tfds_builders.gensurgery.download
    'download: output is a file': ('python -m tfds_builders.gensurgery.download',
                                   [*DOWNLOAD, '--out={tmp}/a_file', '--lists={tmp}/lists'],
                                   ['--out', 'a_file', 'is a file']),
    'download: no URL lists': ('python -m tfds_builders.gensurgery.download',
                               [*DOWNLOAD, '--out={tmp}/videos', '--lists={tmp}/empty_dir'],
                               ['--lists', 'empty_dir', '.txt']),
    'download: negative sleep': ('python -m tfds_builders.gensurgery.download',
                                 [*DOWNLOAD, '--out={tmp}/videos', '--lists={tmp}/lists',
                                  '--sleep=-1'], ['--sleep -1', 'non-negative']),
    'download: max height 0': ('python -m tfds_builders.gensurgery.download',
                               [*DOWNLOAD, '--out={tmp}/videos', '--lists={tmp}/lists',
                                '--max-height=0'], ['--max-height 0', 'positive']),
}


def make_inputs(folder: pathlib.Path) -> None:
    """What the cases point at: a text file, a plain file, an empty folder and file, URL lists,
    and a workdir locked by a running (this) process."""
    folder.mkdir()
    (folder / 'garbage.txt').write_text('not weights, not a video\n')
    (folder / 'a_file').write_text('x\n')
    (folder / 'empty.pth').write_bytes(b'')
    (folder / 'empty_dir').mkdir()
    (folder / 'lists').mkdir()
    (folder / 'lists' / 'hernia.txt').write_text('https://www.youtube.com/watch?v=aaaaaaaaaaa\n')
    (folder / 'busy').mkdir()


def snapshot(folder: pathlib.Path) -> dict[str, tuple]:
    """Every file and folder under `folder`: size, modification time and content hash."""
    state = {}
    for path in sorted(folder.rglob('*')):
        stat = path.stat()
        digest = hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else 'dir'
        state[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns, digest)
    return state


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
    """name -> (result, snapshot before, snapshot after) of every case, run in one go while this
    process holds the lock of the `busy` workdir."""
    root = tmp_path_factory.mktemp('bad_input')
    cases, folders = [], {}
    for i, (name, (_, argv, _)) in enumerate(CASES.items()):
        folders[name] = folder = root / f'case{i:02d}'
        make_inputs(folder)
        cases.append({'argv': [a.replace('{tmp}', str(folder)) for a in argv],
                      'cwd': str(ROOT), 'timeout_s': 120})
    locks = []
    for folder in folders.values():  # a running run's lock, as gsvit_jax.workdir_lock takes it
        fd = os.open(folder / 'busy' / '.lock', os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'here', 'started': 'now',
                                 'command': 'pretrain'}).encode())
        locks.append(fd)
    before = {name: snapshot(folder) for name, folder in folders.items()}
    (root / 'cases.json').write_text(json.dumps(cases))
    env = {**os.environ, 'XLA_FLAGS': xla_flags(2)}
    subprocess.run([sys.executable, str(ROOT / 'tests' / 'fork_runner.py'), str(root / 'cases.json'),
                    str(root / 'results.json')], check=True, env=env, timeout=1200)
    for fd in locks:
        os.close(fd)
    results = json.loads((root / 'results.json').read_text())
    return {name: (result, before[name], snapshot(folders[name]))
            for name, result in zip(CASES, results)}


def test_at_least_40_cases_across_every_entry_point():
    programs = {prog.split()[0] if prog.startswith('gsvit') else prog for prog, _, _ in CASES.values()}
    assert len(CASES) >= 40
    assert programs == {'pretrain', 'train_phase', 'eval_phase', 'encode_demo', 'gsvit-phase',
                        'gsvit-embed', 'gsvit-convert', 'python -m tfds_builders.build',
                        'python -m tfds_builders.gensurgery.download'}


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input_ends_in_one_line(outcomes, name):
    prog, _, words = CASES[name]
    result, before, after = outcomes[name]
    output = result['stdout'] + result['stderr']
    assert result['status'] == 2, output[-3000:]
    assert 'Traceback' not in output, output[-3000:]
    errors = [line for line in result['stderr'].splitlines() if line.startswith(f'{prog}: error: ')]
    assert len(errors) == 1, output[-3000:]
    missing = [word for word in words if word not in errors[0]]
    assert not missing, f'{missing} not in: {errors[0]}'
    assert after == before  # nothing written, moved or touched
