"""GSViT pre-training by next-frame prediction: `train_and_evaluate(config, workdir)`.

One jit-compiled step over a device mesh (batch sharded on `data`, parameters replicated; BatchNorm
statistics span the global batch), Grain input, Orbax checkpoints with automatic resume, metrics to
TensorBoard + metrics.jsonl, prediction grids as PNG. The same call runs on one CPU or many GPUs/hosts.
"""
from __future__ import annotations

import logging
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict
from tqdm import tqdm

from gsvit_jax import distributed
from gsvit_jax.config_checks import check_pretrain_config
from gsvit_jax.convert import abstract_variables
from gsvit_jax.data.loader import make_loader
from gsvit_jax.data.pretrain_data import check_data_config, pair_source
from gsvit_jax.data.sharding import batch_sharding, data_mesh, host_rows, replicated, shard_batch
from gsvit_jax.data.corrupt import SKIPPED_FILE, DecodePairSkippingCorrupt, DropCorrupt
from gsvit_jax.data.transforms import FlipPair, SelectFields, to_model_input
from gsvit_jax.errors import UserError
from gsvit_jax.models.decoder import GSViTAutoencoder, gsvit_autoencoder
from gsvit_jax.models.random_init import random_variables
from gsvit_jax.train import program_cache
from gsvit_jax.train.checkpointing import Checkpointer
from gsvit_jax.train.init import load_initial_variables
from gsvit_jax.train.logging import MetricWriter
from gsvit_jax.train.optimizers import make_optimizer
from gsvit_jax.train.pictures import prediction_grid, save_png
from gsvit_jax.train.pretrain_step import make_eval_step, make_train_step, targets
from gsvit_jax.train.state import TrainState, create_train_state
from gsvit_jax.workdir_lock import workdir_lock

log = logging.getLogger(__name__)
BATCH_FIELDS = ('frame', 'next_frame')
GRID_ROWS = 4  # examples shown in a prediction grid


class NonFiniteLossError(UserError):
    """Training produced a NaN/Inf loss or gradient; the last good checkpoint is kept. Reported
    as one line with exit status 1 (the message says what to change)."""

    exit_code = 1


def build_model(config: ConfigDict) -> GSViTAutoencoder:
    dtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[config.compute_dtype]
    m = config.model
    return gsvit_autoencoder(m.variant, m.img_size, tuple(m.decoder_widths), m.predict_change, dtype,
                             remat=m.get('remat', False))


def initial_variables(model: GSViTAutoencoder, config: ConfigDict) -> dict[str, Any]:
    variables = random_variables(model, config.model.img_size, config.seed)
    if config.init_from:
        variables = load_initial_variables(config.init_from, variables)
    return variables


def step_settings(config: ConfigDict) -> dict[str, Any]:
    """The config fields the train and eval steps are built from (`build_model`, `make_optimizer`,
    the loss): what, with the arguments' shapes, decides their compiled programs."""
    return {key: config[key].to_dict() if isinstance(config[key], ConfigDict) else config[key]
            for key in ('model', 'compute_dtype', 'optimizer', 'total_steps', 'loss')}


def abstract_state(model: GSViTAutoencoder, tx: optax.GradientTransformation,
                   sharding: jax.sharding.Sharding | None = None) -> TrainState:
    """Shapes, dtypes (and shardings) of the train state, computed without initialising anything:
    the restore target on resume (no second copy of the state on the devices)."""
    shapes = jax.eval_shape(lambda v: create_train_state(v, tx, 0), abstract_variables(model))
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def _loader(config: ConfigDict, source, workdir: pathlib.Path, *, train: bool):
    """Pairs decoded (undecodable ones skipped and listed in the workdir, up to a limit),
    optionally flipped, batched."""
    ops = [DecodePairSkippingCorrupt(config.model.img_size, skipped_file=str(workdir / SKIPPED_FILE),
                                     max_skipped=config.data.get('max_corrupt_records', 100)),
           DropCorrupt()]
    if train and config.data.flip:
        ops.append(FlipPair())
    ops.append(SelectFields(BATCH_FIELDS))
    return make_loader(source, ops, global_batch_size=config.batch_size, seed=config.seed,
                       shuffle=train, num_epochs=None if train else 1,
                       worker_count=config.data.worker_count if train else 0)


def _mean(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {k: float(np.mean([np.asarray(r[k]) for r in rows])) for k in rows[0]}


def evaluate(eval_step, state: TrainState, config: ConfigDict, source, mesh,
             workdir: pathlib.Path) -> dict[str, float]:
    """Mean eval metrics over up to `config.eval_batches` batches of the validation pairs."""
    rows = []
    for i, batch in enumerate(_loader(config, source, workdir, train=False)):
        if i >= config.eval_batches:
            break
        metrics, _ = eval_step(state, shard_batch(batch, mesh))
        rows.append(metrics)
    return _mean(rows) if rows else {}


def save_prediction_grid(eval_step, state, batch, mesh, workdir: pathlib.Path, writer,
                         step: int, predict_change: bool) -> pathlib.Path | None:
    """PNG of input | predicted | target | error for a fixed batch (`images/step_NNNNNNN.png`).
    Every process takes part in computing it; process 0 writes it."""
    _, prediction = eval_step(state, batch)
    rows = host_rows({'frame': batch['frame'], 'next_frame': batch['next_frame'],
                      'prediction': prediction}, mesh, GRID_ROWS)
    if jax.process_index() != 0:
        return None
    x = np.asarray(to_model_input(rows['frame']))
    target = np.asarray(targets(rows, predict_change))
    prediction = np.asarray(rows['prediction'], np.float32)
    if predict_change:  # show frames, not differences
        prediction, target = np.clip(x + prediction, 0, 1), np.clip(x + target, 0, 1)
    grid = prediction_grid(x, prediction, target, rows=GRID_ROWS)
    writer.image(step, 'predictions', grid)
    return save_png(grid, workdir / 'images' / f'step_{step:07d}.png')


def train_and_evaluate(config: ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Pre-train (or resume from `workdir`) for `config.total_steps`; returns the last metrics."""
    workdir = pathlib.Path(workdir).absolute()
    check_pretrain_config(config, workdir)  # before any device, data or workdir is touched
    check_data_config(config.data)
    distributed.initialize(config)
    distributed.check_same_config(config, str(workdir))
    if config.data.get('procedure') and not config.init_from:
        raise UserError('procedure fine-tuning starts from pre-trained weights: set '
                        '--config.init_from to a workdir, a converted checkpoint or GSViT.pkl')
    distributed.check_divisible(config.batch_size, 'batch_size')
    with workdir_lock(workdir, enabled=jax.process_index() == 0):
        return _train(config, workdir)


def _train(config: ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
    """`train_and_evaluate` once the config is checked and the workdir is this run's."""
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = data_mesh()
    log.info('devices: %d x %s, processes: %d', mesh.devices.size, jax.devices()[0].device_kind,
             jax.process_count())

    train_source = pair_source(config.data, config.data.train_split, workdir)
    eval_source = pair_source(config.data, config.data.eval_split, workdir)
    train_iter = iter(_loader(config, train_source, workdir, train=True))

    if config.get('epochs'):  # e.g. procedure fine-tuning: one pass over the training pairs
        config = config.copy_and_resolve_references()
        config.total_steps = max(1, int(config.epochs * len(train_source) // config.batch_size))
        log.info('%s epoch(s) of %d pairs = %d steps', config.epochs, len(train_source),
                 config.total_steps)
    model = build_model(config)
    tx, schedule = make_optimizer(config.optimizer, config.total_steps)
    checkpointer = Checkpointer(workdir, keep=config.checkpoint.keep,
                                every_steps=config.checkpoint.every_steps,
                                async_save=config.checkpoint.async_save)
    done = checkpointer.latest_step()
    if done is not None and done >= config.total_steps:  # a finished run: nothing to compile
        checkpointer.close()
        return {'step': done, 'total_steps': config.total_steps, 'already_trained': True}
    if checkpointer.latest_step() is not None:  # nothing initialised, init_from not read again
        state = checkpointer.restore(abstract_state(model, tx, replicated(mesh)), train_iter)
        log.info('resumed from %s at step %d', checkpointer.directory, int(state.step))
    else:
        state = create_train_state(initial_variables(model, config), tx, config.seed)
        state = jax.device_put(state, replicated(mesh))

    rep, data = replicated(mesh), batch_sharding(mesh)
    train_step = jax.jit(make_train_step(model, tx, schedule, loss=config.loss,
                                         predict_change=config.model.predict_change),
                         in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(model, loss=config.loss,
                                       predict_change=config.model.predict_change),
                        in_shardings=(rep, data), out_shardings=(rep, data))
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    preview = shard_batch(next(iter(_loader(config, eval_source, workdir, train=False))), mesh)
    wait = distributed.settings(config).barrier_timeout_s
    settings = step_settings(config)  # restarts load both programs instead of tracing them
    eval_step = program_cache.compiled('eval_step', eval_step, (state, preview), settings)
    train_step = distributed.compile_together(
        lambda: program_cache.compiled('train_step', train_step, (state, preview), settings),
        timeout_s=wait)

    with distributed.stop_if_peers_lost(
            checkpointer.saved_step, distributed.settings(config).peer_timeout_s):
        state, last = _train_loop(config, state, train_step, eval_step, train_iter, preview,
                                  eval_source, mesh, checkpointer, writer, workdir)
    checkpointer.close()
    writer.close()
    return {'step': int(state.step), **last}


def _train_loop(config: ConfigDict, state: TrainState, train_step, eval_step, train_iter,
                preview: dict[str, Any], eval_source, mesh, checkpointer: Checkpointer,
                writer: MetricWriter, workdir: pathlib.Path) -> tuple[TrainState, dict[str, Any]]:
    start, total = int(state.step), config.total_steps
    pending: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    tick, tick_step = time.perf_counter(), start
    with tqdm(total=total, initial=start, desc='pre-training', unit='step',
              disable=jax.process_index() != 0) as bar:
        for step in range(start + 1, total + 1):
            state, metrics = train_step(state, shard_batch(next(train_iter), mesh))
            pending.append(metrics)
            save_due = checkpointer.manager.should_save(step) or step == total
            if step % config.log_every_steps == 0 or save_due:
                rows = jax.device_get(pending)
                pending = []
                if min(r['finite'] for r in rows) < 1:
                    bad = next(i for i, r in enumerate(rows) if r['finite'] < 1)
                    checkpointer.close()
                    raise NonFiniteLossError(
                        f'non-finite loss or gradient at step {step - len(rows) + bad + 1} '
                        f'(loss {rows[bad]["loss"]}); stopped without saving. The last good '
                        f'checkpoint is step {checkpointer.latest_step()} in '
                        f'{checkpointer.directory}. Lower the learning rate, enable '
                        'optimizer.grad_clip or use compute_dtype=float32.')
                now = time.perf_counter()
                last = _mean(rows)
                last.pop('finite')
                last['images_per_s'] = (step - tick_step) * config.batch_size / (now - tick)
                tick, tick_step = now, step
                writer.scalars(step, last)
                bar.set_postfix(loss=f'{last["loss"]:.4f}', psnr=f'{last["psnr"]:.1f}')
            if step % config.image_every_steps == 0 or step == total:
                save_prediction_grid(eval_step, state, preview, mesh, workdir, writer, step,
                                     config.model.predict_change)
            if step % config.eval_every_steps == 0 or step == total:
                eval_metrics = evaluate(eval_step, state, config, eval_source, mesh, workdir)
                writer.scalars(step, eval_metrics, split='eval')
                last.update({f'eval_{k}': v for k, v in eval_metrics.items()})
            if save_due:
                checkpointer.save(step, state, train_iter, force=step == total)
            bar.update(1)
    return state, last
