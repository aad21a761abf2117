"""The peer watch of multi-process runs, against an in-memory coordination service: a peer that
stops beating, or a service that stops answering, fires once; beating and finished peers do not."""
import threading
import time

import pytest

from gsvit_jax import liveness

TIMEOUT_S, INTERVAL_S = 0.4, 0.02


class FakeClient:
    """The two key-value calls the watch makes, on a dict; `down` makes every call fail."""

    def __init__(self):
        self.values, self.down, self.lock = {}, False, threading.Lock()

    def key_value_set(self, key, value, allow_overwrite=False):
        with self.lock:
            if self.down:
                raise RuntimeError('UNAVAILABLE: failed to connect to all addresses')
            assert allow_overwrite or key not in self.values
            self.values[key] = value

    def key_value_dir_get(self, prefix):
        with self.lock:
            if self.down:
                raise RuntimeError('UNAVAILABLE: failed to connect to all addresses')
            return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


@pytest.fixture
def client(monkeypatch):
    fake = FakeClient()
    monkeypatch.setattr(liveness, '_client', lambda: fake)
    return fake


def watch(fired, me=0, count=3):
    w = liveness.PeerWatch('test', TIMEOUT_S, fired.append, interval_s=INTERVAL_S)
    w.me, w.count = me, count
    return w


def beat(client, peer, stop):
    n = 0
    while not stop.is_set():
        n += 1
        client.key_value_set(f'gsvit_jax/alive/test/{peer}', str(n), allow_overwrite=True)
        time.sleep(INTERVAL_S)


def run_for(w, seconds):
    w.start()
    time.sleep(seconds)
    w.stop(finished=True)


def test_beating_and_finished_peers_are_alive(client):
    stop, fired = threading.Event(), []
    threading.Thread(target=beat, args=(client, 1, stop), daemon=True).start()
    client.key_value_set('gsvit_jax/alive/test/2', liveness.DONE)
    run_for(watch(fired), 4 * TIMEOUT_S)
    stop.set()
    assert fired == []
    assert client.values['gsvit_jax/alive/test/0'] == liveness.DONE  # the others stop watching us


def test_a_peer_that_never_beats_is_named_once(client):
    stop, fired = threading.Event(), []
    threading.Thread(target=beat, args=(client, 1, stop), daemon=True).start()
    w = watch(fired)  # process 2 never starts its watch
    w.start()
    time.sleep(4 * TIMEOUT_S)
    w.stop(finished=False)
    stop.set()
    assert len(fired) == 1 and fired[0].startswith('process 2 gave no sign of life for '), fired
    assert 'gsvit_jax/alive/test/0' in client.values
    assert client.values['gsvit_jax/alive/test/0'] != liveness.DONE


def test_a_peer_that_stops_is_named(client):
    stop, fired = threading.Event(), []
    threading.Thread(target=beat, args=(client, 1, stop), daemon=True).start()
    w = watch(fired, count=2)
    w.start()
    time.sleep(2 * TIMEOUT_S)
    assert fired == []
    stop.set()
    time.sleep(3 * TIMEOUT_S)
    w.stop(finished=False)
    assert len(fired) == 1 and fired[0].startswith('process 1 gave no sign of life for '), fired


def test_a_coordinator_that_stops_answering_fires(client):
    fired = []
    w = watch(fired, me=1, count=2)
    client.key_value_set('gsvit_jax/alive/test/0', liveness.DONE)
    w.start()
    time.sleep(2 * TIMEOUT_S)
    assert fired == []
    client.down = True
    time.sleep(3 * TIMEOUT_S)
    w.stop(finished=False)
    assert len(fired) == 1 and fired[0].startswith(
        'the coordination service (process 0) has not answered for '), fired
    assert 'UNAVAILABLE' in fired[0]


def test_one_process_is_not_watched():
    with liveness.watch_peers(1.0):  # jax.process_count() == 1: no thread, no client needed
        assert not any(t.name == 'gsvit-peer-watch' for t in threading.enumerate())
