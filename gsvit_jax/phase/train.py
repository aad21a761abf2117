"""Cholec80 phase recognition on the frozen GSViT encoder: `train_and_evaluate(config, workdir)`.

Heads: the paper's single-frame MLP (`head.kind='mlp'`) trained from the feature cache (default)
or on the fly with the Cholec80 augmentations (`features.mode='augmented'`), and the online causal
TCN (`head.kind='temporal'`) trained on whole videos from the cache. Same conventions as
pre-training: one jit-compiled step over a `data` mesh, Orbax checkpoints with automatic resume,
a NaN stop, tqdm, TensorBoard + metrics.jsonl, and at the end the evaluation report and pictures.
"""
from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from tqdm import tqdm

from gsvit_jax import distributed
from gsvit_jax.atomic import write_text_atomic
from gsvit_jax.config_checks import check_phase_config
from gsvit_jax.errors import MissingFileError
from gsvit_jax.data.loader import make_loader
from gsvit_jax.data.sharding import batch_sharding, data_mesh, replicated, shard_batch
from gsvit_jax.data.transforms import PhaseTrainAugment, SelectFields
from gsvit_jax.phase import data as phase_data
from gsvit_jax.phase.encoder import (build_encoder, fingerprint, initial_encoder_variables,
                                     make_encode_fn)
from gsvit_jax.phase.evaluate import write_evaluation
from gsvit_jax.phase.features import VideoFeatures
from gsvit_jax.phase.predictor import PhaseModel, host_weights
from gsvit_jax.phase.steps import PhaseState, create_phase_state, make_head_step, make_temporal_step
from gsvit_jax.pretrain import NonFiniteLossError
from gsvit_jax.train.checkpointing import Checkpointer, abstract_like
from gsvit_jax.train.logging import MetricWriter
from gsvit_jax.train.optimizers import make_optimizer
from gsvit_jax.workdir_lock import workdir_lock

log = logging.getLogger(__name__)
CONFIG_FILE = 'config.json'


def save_config(config: ConfigDict, workdir: pathlib.Path) -> None:
    """The run's config next to its checkpoints (predict/eval rebuild the model from it)."""
    write_text_atomic(workdir / CONFIG_FILE, config.to_json_best_effort(indent=1))


def load_run_config(workdir: str | pathlib.Path) -> ConfigDict:
    """The config a phase run was trained with (its workdir's config.json)."""
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(f'{path} not found: expected the workdir of '
                                'experiments/train_phase.py')
    return ConfigDict(json.loads(path.read_text()))


class _Task:
    """What differs between the heads: the training data, its batches and the step."""

    def __init__(self, config: ConfigDict, workdir: pathlib.Path, phase_model: PhaseModel,
                 encode_fn: Callable, encoder_fp: str):
        self.config, self.workdir, self.model = config, workdir, phase_model
        self.cached = lambda split: phase_data.cached_split(
            config, workdir, split, encode_fn, encoder_fp, phase_model.pooled_channels)
        kind, mode = config.head.kind, config.features.mode
        if kind == 'temporal' or mode == 'cached' or config.head.standardize:
            self.train_videos = self.cached(config.data.train_split)
        if kind == 'temporal':
            videos = list(self.train_videos.values())
            self.length = phase_data.padded_length(max(len(v) for v in videos))
            self.steps_per_epoch = -(-len(videos) // config.temporal_batch_videos)
            self.batch = lambda step: phase_data.video_batch(
                videos, step, config.temporal_batch_videos, config.seed, self.length)
        elif mode == 'cached':
            self.latents, self.labels = phase_data.stack_frames(self.train_videos)
            self.steps_per_epoch = max(1, len(self.labels) // config.batch_size)
            self.batch = lambda step: phase_data.frame_batch(
                self.latents, self.labels, step, config.batch_size, config.seed)
        elif mode == 'augmented':
            source = phase_data.open_split(config.data, config.data.train_split, workdir)
            self.iterator = iter(make_loader(
                source,
                [PhaseTrainAugment(config.data.image_size), SelectFields(('image', 'phase'))],
                global_batch_size=config.batch_size, seed=config.seed,
                worker_count=config.data.worker_count))
            self.steps_per_epoch = max(1, len(source) // config.batch_size)
            self.batch = lambda step: next(self.iterator)
        else:
            raise ValueError(f'features.mode: unknown {mode!r}; expected cached or augmented')

    def normalizer(self) -> dict[str, np.ndarray]:
        """Per-dimension mean and 1/std of the training latents (identity when disabled)."""
        dim = self.model.latent_dim
        if not self.config.head.standardize:
            return {'mean': np.zeros(dim, np.float32), 'scale': np.ones(dim, np.float32)}
        latents = (v.latent for v in self.train_videos.values())
        total, total_sq, count = np.zeros(dim), np.zeros(dim), 0
        for x in latents:
            x = x.astype(np.float64)
            total, total_sq, count = total + x.sum(0), total_sq + (x * x).sum(0), count + len(x)
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
        floor = 1e-3 * std.mean() + 1e-30  # constant dimensions: no blow-up
        return {'mean': mean.astype(np.float32),
                'scale': (1.0 / np.maximum(std, floor)).astype(np.float32)}

    @property
    def encodes_frames(self) -> bool:
        """Whether the step encodes augmented frames itself (else it reads cached latents)."""
        return self.config.head.kind != 'temporal' and self.config.features.mode == 'augmented'

    @property
    def data_iterator(self) -> Any:
        return getattr(self, 'iterator', None)

    def example_input(self) -> jnp.ndarray:
        dim = self.model.latent_dim
        return jnp.zeros((1, 8, dim) if self.config.head.kind == 'temporal' else (1, dim))

    def step_fn(self, tx, schedule) -> Callable:
        head = self.model.head
        if self.config.head.kind == 'temporal':
            return make_temporal_step(head, tx, schedule, self.config.head.smooth_weight)
        encoder = self.model.encoder if self.encodes_frames else None
        return make_head_step(head, tx, schedule, encoder, self.config.head.pooled)


def _check_finite(rows: list[dict[str, Any]], step: int, checkpointer: Checkpointer) -> None:
    if min(r['finite'] for r in rows) < 1:
        checkpointer.close()
        raise NonFiniteLossError(
            f'non-finite loss or gradient near step {step}; stopped without saving. The last '
            f'good checkpoint is step {checkpointer.latest_step()} in {checkpointer.directory}.')


def train_and_evaluate(config: ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Train the configured head (or resume from `workdir`), then evaluate it on
    `config.data.eval_split`; returns the last training metrics and the evaluation summary."""
    workdir = pathlib.Path(workdir).absolute()
    check_phase_config(config, workdir)  # before any device, data or workdir is touched
    phase_data.check_data(config.data)
    distributed.initialize(config)
    distributed.check_same_config(config, str(workdir))
    if config.head.kind == 'temporal':
        distributed.check_divisible(config.temporal_batch_videos, 'temporal_batch_videos')
    else:
        distributed.check_divisible(config.batch_size, 'batch_size')
    with workdir_lock(workdir, enabled=jax.process_index() == 0):
        return _train(config, workdir)


def _train(config: ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
    """`train_and_evaluate` once the config is checked and the workdir is this run's."""
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = data_mesh()
    if jax.process_index() == 0:
        save_config(config, workdir)

    encoder = build_encoder(config.encoder.variant, config.data.image_size)
    encoder_vars = initial_encoder_variables(encoder, config.encoder.init_from, config.seed)
    encoder_fp = fingerprint(encoder_vars, variant=config.encoder.variant,
                             image_size=config.data.image_size)
    encode_fn = make_encode_fn(encoder, encoder_vars, data_mesh(jax.local_devices()))
    phase_model = PhaseModel.from_config(config)
    task = _Task(config, workdir, phase_model, encode_fn, encoder_fp)

    total = int(config.epochs * task.steps_per_epoch)
    opt = config.optimizer.copy_and_resolve_references()
    if opt.schedule == 'exponential' and not opt.decay_steps:
        opt.decay_steps = task.steps_per_epoch  # decay_rate per epoch
    tx, schedule = make_optimizer(opt, total)
    head_params = jax.jit(phase_model.head.init)(jax.random.key(config.seed),
                                                 task.example_input())['params']
    state = create_phase_state(head_params, encoder_vars, task.normalizer(), tx, config.seed)
    state = jax.device_put(state, replicated(mesh))
    checkpointer = Checkpointer(workdir, keep=config.checkpoint.keep,
                                every_steps=config.checkpoint.every_steps,
                                async_save=config.checkpoint.async_save)
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(abstract_like(state), task.data_iterator)
        log.info('resumed from %s at step %d', checkpointer.directory, int(state.step))

    rep = replicated(mesh)
    train_step = jax.jit(task.step_fn(tx, schedule), in_shardings=(rep, rep, batch_sharding(mesh)),
                         out_shardings=(rep, rep), donate_argnums=0)
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    eval_videos = task.cached(config.data.eval_split)
    with distributed.stop_if_peers_lost(
            checkpointer.saved_step, distributed.settings(config).peer_timeout_s):
        last = _train_loop(config, state, train_step, task, total, checkpointer, writer, mesh,
                           eval_videos)
    state = last.pop('state')
    checkpointer.close()
    summary = {}
    if jax.process_index() == 0:  # on host-local weights: the others need not take part
        summary = write_evaluation(phase_model, host_weights(state), eval_videos,
                                   workdir / 'eval',
                                   split=config.data.eval_split,
                                   data_label=config.data.label)
        writer.scalars(total, summary, split='eval')
    writer.close()
    distributed.barrier('evaluated', distributed.settings(config).barrier_timeout_s)
    return {'step': int(state.step), **last, **{f'eval_{k}': v for k, v in summary.items()}}


def _train_loop(config: ConfigDict, state: PhaseState, train_step: Callable, task: _Task,
                total: int, checkpointer: Checkpointer, writer: MetricWriter, mesh: Any,
                eval_videos: dict[str, VideoFeatures]) -> dict[str, Any]:
    start = int(state.step)
    encoder = state.encoder  # frozen: saved with every checkpoint, given to the step if it encodes
    encoder_in = encoder if task.encodes_frames else None
    state = state.replace(encoder=None)
    pending: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    tick, tick_step = time.perf_counter(), start
    eval_every = max(1, int(config.eval_every_epochs * task.steps_per_epoch))
    with tqdm(total=total, initial=start, desc=f'phase {config.head.kind}', unit='step',
              disable=jax.process_index() != 0) as bar:
        wait = distributed.settings(config).barrier_timeout_s
        for step in range(start + 1, total + 1):
            batch = shard_batch(task.batch(step - 1), mesh)
            if step == start + 1:
                train_step = distributed.compile_together(
                    lambda: train_step.lower(state, encoder_in, batch).compile(), timeout_s=wait)
            state, metrics = train_step(state, encoder_in, batch)
            pending.append(metrics)
            save_due = checkpointer.manager.should_save(step) or step == total
            if step % config.log_every_steps == 0 or save_due:
                rows = jax.device_get(pending)
                pending = []
                _check_finite(rows, step, checkpointer)
                now = time.perf_counter()
                last = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != 'finite'}
                last['steps_per_s'] = (step - tick_step) / (now - tick)
                tick, tick_step = now, step
                writer.scalars(step, last)
                bar.set_postfix(loss=f'{last["loss"]:.3f}', acc=f'{last["accuracy"]:.3f}')
            if step % eval_every == 0 and step != total:
                if jax.process_index() == 0:  # host-local weights; the others wait below
                    accuracy = task.model.frame_accuracy(host_weights(state), eval_videos)
                    writer.scalars(step, {'accuracy': accuracy}, split='eval')
                    last['eval_accuracy'] = accuracy
                distributed.barrier('evaluated', wait)  # gloo gives up on a peer after 30 s
            if save_due:
                checkpointer.save(step, state.replace(encoder=encoder), task.data_iterator,
                                  force=step == total)
            bar.update(1)
    return {**last, 'state': state.replace(encoder=encoder)}
