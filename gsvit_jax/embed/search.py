"""`gsvit-embed search --index DIR --query frame.png|video.mp4@t=93s`: the k moments of the
embedded videos most like the query (exact cosine search), as a table (or JSON) and a picture.

Mistakes a user can fix end in one line, `gsvit-embed search: error: ...`, exit status 2 (a
traceback with --debug); all but a wrong encoder are found before the encoder is loaded.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
from typing import Sequence

from gsvit_jax.embed.match_picture import search_picture
from gsvit_jax.embed.nearest import Index, Match, embed, load_index_encoder, open_index
from gsvit_jax.embed.query import Query, format_time, read_query
from gsvit_jax.errors import UserError, run_reporting_errors
from gsvit_jax.train.pictures import save_png

PROG = 'gsvit-embed search'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--index', required=True, metavar='DIR', help='a gsvit-embed output folder')
    parser.add_argument('--query', required=True, metavar='QUERY',
                        help='an image file, or VIDEO@t=TIME with TIME in seconds (93, 93.5, 93s) '
                             'or clock time (1:33, 1:01:33.5)')
    parser.add_argument('-k', type=int, default=5, help='matches to return (default: %(default)s)')
    parser.add_argument('--exclude-source-window', type=float, default=0.0, metavar='S',
                        help='when the query video is in the index, drop its matches within S '
                             'seconds of the query time (default: 0, keep them)')
    parser.add_argument('--weights', default=None,
                        help="encoder weights (default: the index manifest's)")
    parser.add_argument('--out', default='.', metavar='DIR',
                        help='folder for the picture search_<query name>.png (default: here)')
    parser.add_argument('--json', action='store_true', help='print the results as JSON')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of user errors')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; a user error exits with status 2."""
    args = build_parser().parse_args(argv)
    run_reporting_errors(PROG, lambda: search(args), debug=args.debug)
    return 0


def search(args: argparse.Namespace) -> None:
    """Check the inputs, encode the query with the index's encoder, search, print and draw."""
    if args.k < 1:
        raise UserError(f'-k must be at least 1, got {args.k}')
    if args.exclude_source_window < 0:
        raise UserError(f'--exclude-source-window must be >= 0, got {args.exclude_source_window}')
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f'--out {out} is a file; give a folder')
    index = open_index(args.index)
    query = read_query(args.query)
    encoder = load_index_encoder(index, args.weights)
    matches = index.search(embed(encoder, index.manifest['output'], query.frame), args.k,
                           _exclusion(index, query, args.exclude_source_window))
    picture = save_png(search_picture(query, index, matches), out / f'search_{query.path.stem}.png')
    print(_json(query, index, matches, picture) if args.json
          else _table(query, matches, picture))


def _exclusion(index: Index, query: Query, window_s: float) -> tuple[str, float, float] | None:
    """(video, time, window) to leave out: the query's own moment, if its video is indexed."""
    if window_s <= 0 or query.time_s is None:
        return None
    video = index.video_of_source(query.path)
    return None if video is None else (video.rel, query.time_s, window_s)


def _table(query: Query, matches: Sequence[Match], picture: pathlib.Path) -> str:
    width = max([len('video')] + [len(m.label) for m in matches])
    at = '' if query.time_s is None else f' at {format_time(query.time_s)}'
    lines = [f'query: {query.path}{at}',
             f'{"rank":>4}  {"video":<{width}}  {"time":>10}  similarity']
    lines += [f'{rank:>4}  {m.label:<{width}}  {format_time(m.time_s):>10}  {m.similarity:.4f}'
              for rank, m in enumerate(matches, 1)]
    return '\n'.join(lines + [f'picture: {picture}'])


def _json(query: Query, index: Index, matches: Sequence[Match], picture: pathlib.Path) -> str:
    return json.dumps({'query': query.spec, 'query_time_s': query.time_s,
                       'index': str(index.root), 'picture': str(picture),
                       'matches': [{'rank': rank, **dataclasses.asdict(m)}
                                   for rank, m in enumerate(matches, 1)]}, indent=1)
