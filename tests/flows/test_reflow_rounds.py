"""k-RF for k >= 3: two reflow rounds on the toy, each on its own noise, and the lineage chain."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.config import load_config
from flows.pipeline import pipeline
from storage.pairstore import PairStore
from tests.helpers import tiny_config_dict


@pytest.mark.slow
def test_two_rounds_make_3rf_straighter_and_lineage_names_the_chain(prefect_api, runs_dir):
    cfg = load_config(tiny_config_dict(runs_dir, **{"reflow.rounds": 2}))
    result = pipeline(cfg)
    one, two, three = result.models
    assert (one.k, two.k, three.k) == (1, 2, 3) and three.registered == "tiny-3rf/1"
    s = {row.model: row.straightness for row in result.rows}
    assert s["1rf"] > s["2rf"] > s["3rf"], s

    first, second = (PairStore.open(p.uri) for p in result.stores)
    assert (first.seed, second.seed) == (cfg.pairs.seed, cfg.pairs.round_seed(2))
    assert first.seed != second.seed  # each round draws its own noise
    assert not np.array_equal(first.read_chunk(0)[0], second.read_chunk(0)[0])

    args = ["lineage", "models:/tiny-3rf/1", "--runs-dir", str(cfg.runs)]
    out = CliRunner().invoke(app, args, terminal_width=400)
    assert out.exit_code == 0, out.output
    chain = [one.model_id, first.uri, two.model_id, second.uri, three.model_id]
    at = [out.output.index(x) for x in chain]  # root, its pairs, 2-RF, its pairs, 3-RF
    assert at == sorted(at), out.output
    assert f"seed {first.seed}" in out.output and f"seed {second.seed}" in out.output
