"""Sanity check of the evaluation metric: known degradations of real MNIST-5k test digits.

Trains the pipeline's feature classifier (``ClassifierRecipe()``, the evaluation's default) on
the training split, reports its held-out accuracy and training time, then scores real test
digits and degraded copies of them against the other half of the test split: Fréchet distance,
precision, recall and class agreement in the classifier's features. A metric that sees what a
person sees puts every degradation far above real digits, each one worse as it gets stronger,
and class means and noise last::

    python -m benchmarks.classifier_sanity --threads 2 --write
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from benchmarks.common import BENCHMARKS_MD, machine_line, markdown_table, publish
from rf_core.augment import DEGRADATIONS
from rf_core.classifier import (
    DigitClassifier,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)
from rf_core.config import ClassifierRecipe
from rf_core.data import load_mnist5k
from rf_core.frechet import FrechetEvaluator

SECTION = "classifier-sanity"


@dataclass(frozen=True)
class SanityRow:
    """Scores of one set of 500 query images against 500 held-out real images."""

    images: str
    fd: float
    fd_vs_real: float
    precision: float
    recall: float
    class_agreement: float


def query_sets(seed: int = 1) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """(reference, query labels, class means of the query labels, {name: (500, 1, 28, 28)})."""
    x_tr, y_tr = load_mnist5k("train")
    x_te, y_te = load_mnist5k("test")
    ref, query, yq = x_te[:500], x_te[500:], y_te[500:]
    means = torch.stack([x_tr[y_tr == c].mean(0) for c in range(10)])[yq]
    noise = torch.rand(query.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    sets = {"real (held out)": query}
    sets |= {name: f(query).clamp(-1, 1) for name, f in DEGRADATIONS.items()}
    sets |= {"class means": means, "uniform noise": noise}
    return ref, yq, means, sets


def sanity_rows(clf: DigitClassifier) -> list[SanityRow]:
    """Score every query set (see :func:`query_sets`) with ``clf``'s features."""
    ref, yq, _, sets = query_sets()
    ev = FrechetEvaluator(clf, ref)
    real_fd = ev.frechet(sets["real (held out)"])
    rows = []
    for name, x in sets.items():
        s = ev.score(x)
        agree = ev.class_accuracy(x, yq)
        rows.append(SanityRow(name, s.fd, s.fd / real_fd, s.precision, s.recall, agree))
    return rows


def main(argv: list[str] | None = None) -> list[SanityRow]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--classifier", help="a saved classifier to score with (default: train one)")
    p.add_argument("--save", help="write the trained classifier here")
    p.add_argument("--write", action="store_true", help="rewrite the BENCHMARKS.md section")
    p.add_argument("--bench-md", default=str(BENCHMARKS_MD))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    x_tr, y_tr = load_mnist5k("train")
    x_te, y_te = load_mnist5k("test")
    start = time.perf_counter()
    if a.classifier:
        clf, _ = load_classifier(a.classifier)
        train_s = None
    else:
        clf = train_classifier(x_tr, y_tr, ClassifierRecipe())
        train_s = time.perf_counter() - start
        if a.save:
            save_classifier(a.save, clf)
    acc = float((predict(clf, x_te) == y_te).float().mean())
    rows = sanity_rows(clf)
    args = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m benchmarks.classifier_sanity", *args])
    took = "loaded" if train_s is None else f"trained in {train_s:.0f} s"
    body = "\n".join([
        "## Evaluation: classifier and metric sanity check",
        "",
        f"Command: `{command}` · {time.strftime('%Y-%m-%d')} · {machine_line()}",
        "",
        f"Classifier `ClassifierRecipe()` ({took}, {a.threads} threads): held-out accuracy "
        f"**{100 * acc:.1f} %** on MNIST-5k's 1,000 test digits. Reference: test digits 0–499;"
        " queries: test digits 500–999 and degraded copies of them. FD ratio = FD / FD of the"
        " real queries.",
        "",
        markdown_table(rows),
    ])  # fmt: skip
    publish(SECTION, body, a.write, a.bench_md)
    return rows


if __name__ == "__main__":
    main()
