"""The Colab notebooks run top to bottom in a fresh kernel (shortened: GSVIT_NOTEBOOK_SMOKE=1)."""
import pathlib
import re

import nbformat
from nbclient import NotebookClient

from xla_env import xla_flags

NOTEBOOKS = pathlib.Path(__file__).parents[1] / 'notebooks'


def run_notebook(path: pathlib.Path, workdir: pathlib.Path, monkeypatch, devices: int = 8) -> str:
    """Execute every cell (an error fails the test with the cell's traceback); all text output."""
    monkeypatch.setenv('XLA_FLAGS', xla_flags(devices))
    monkeypatch.setenv('GSVIT_NOTEBOOK_SMOKE', '1')
    monkeypatch.setenv('GSVIT_NOTEBOOK_WORKDIR', str(workdir))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name='python3',
                   resources={'metadata': {'path': str(path.parent)}}).execute()
    return '\n'.join(output.get('text', '') for cell in notebook.cells if cell.cell_type == 'code'
                     for output in cell.get('outputs', []))


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob('*.ipynb')) == [
        'embeddings.ipynb', 'phase_recognition.ipynb', 'quickstart.ipynb']


def test_quickstart(tmp_path, monkeypatch):
    # 2 devices: the shortened run is test_pretrain's runlocal program, so it comes from the cache
    text = run_notebook(NOTEBOOKS / 'quickstart.ipynb', tmp_path, monkeypatch, devices=2)
    assert ('encoder parameters (BatchNorm folded): 12,051,260; features (1, 4, 4, 384) -> latent '
            '(1, 6144)') in text
    logged = re.search(r'train L1: step \d+ ([\d.]+) -> step 20 ([\d.]+)', text)
    assert logged, text
    first, last = map(float, logged.groups())
    assert last < first  # pre-training on the demo videos lowers the loss
    assert 'eval/psnr' in text
    assert re.search(r"\d+ tensors, e\.g\. \['decoder\.", text)
    assert (tmp_path / 'gsvit_demo.safetensors').stat().st_size > 0
    assert list((tmp_path / 'pretrain' / 'images').glob('*.png'))


def test_phase_recognition(tmp_path, monkeypatch):
    text = run_notebook(NOTEBOOKS / 'phase_recognition.ipynb', tmp_path, monkeypatch)
    accuracies = dict(re.findall(r'(.+): strict accuracy ([\d.]+)%', text))
    assert len(accuracies) == 2, text
    # shortened runs (3 and 20 epochs) on these generated videos: well above chance (14%)
    assert all(float(a) > 60 for a in accuracies.values()), accuracies
    assert (tmp_path / 'eval' / 'report.md').exists()
    seconds = int(re.search(r'\.mp4: (\d+) seconds', text).group(1))
    assert seconds >= 10 and (tmp_path / 'predict').is_dir()


def test_embeddings(tmp_path, monkeypatch):
    text = run_notebook(NOTEBOOKS / 'embeddings.ipynb', tmp_path, monkeypatch)
    assert re.search(r'3 videos embedded \(63 frames in', text), text  # 3 x 21 s at 1 fps
    assert '63 moments; the two axes explain' in text
    for name in ('map_by_video.png', 'map_by_phase.png', 'search_video02.png'):
        assert (tmp_path / name).stat().st_size > 0
    best = re.search(r'^\s+1\s+video02\.mp4\s+0:00:08\.0\s+([\d.]+)$', text, re.M)
    assert best and float(best.group(1)) >= 0.999, text  # the query's own second comes first
