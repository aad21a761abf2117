"""Run many command lines from one process that imported the libraries once: each run is an
`os.fork()` of it, so a table of bad inputs costs milliseconds per case instead of seconds of
imports, and still has a real process's exit status, stdout and stderr.

    python tests/fork_runner.py cases.json results.json

cases.json: a list of {"argv": ["experiments/pretrain.py" | "-m", "module", ...args], "cwd": dir,
"timeout_s": seconds} (a run still going then is killed by SIGALRM: status -14).
results.json: a list of {"status": exit status, "stdout": text, "stderr": text}, in order.
Only for commands that stop before touching devices: JAX is imported here but never started, so a
child starts its own backend if it gets that far.
"""
import json
import os
import runpy
import signal
import sys
import tempfile
import traceback

PRELOAD = ('jax', 'flax.linen', 'optax', 'orbax.checkpoint', 'grain', 'tensorflow_datasets',
           'absl.app', 'ml_collections.config_flags', 'gsvit_jax.pretrain', 'gsvit_jax.phase.train',
           'gsvit_jax.phase.cli', 'gsvit_jax.embed.cli', 'gsvit_jax.convert.cli',
           'tfds_builders.build', 'tfds_builders.gensurgery.download')


def run_child(argv: list[str], cwd: str) -> int:
    """In the forked child: run `argv` as `python argv...` would; returns its exit status."""
    os.chdir(cwd)
    sys.path[0] = cwd
    try:
        if argv[0] == '-m':
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name='__main__', alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name='__main__')
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001  what the interpreter would do: traceback, status 1
        traceback.print_exc()
        return 1


def run(argv: list[str], cwd: str, timeout_s: int) -> dict:
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            status = 1
            signal.alarm(timeout_s)
            try:
                status = run_child(argv, cwd)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return {'status': os.waitstatus_to_exitcode(wait_status), 'stdout': out.read(),
                'stderr': err.read()}


def main() -> None:
    cases_file, results_file = sys.argv[1:]
    with open(cases_file) as f:
        cases = json.load(f)
    for module in PRELOAD:
        __import__(module)
    results = [run(case['argv'], case['cwd'], case.get('timeout_s', 60)) for case in cases]
    with open(results_file, 'w') as f:
        json.dump(results, f)


if __name__ == '__main__':
    main()
