"""Which guidance settings of a pipeline config can work (checked when the config loads).

Guided sampling -- in the evaluation sweep (``evaluate.guidance``) or in pair generation
(``pairs.solver.guidance``) -- needs a class-conditional model trained with label dropout
(``<section>.label_dropout > 0``); the rule itself is :func:`rf_core.guidance.check_guidance`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flows.config import PipelineConfig
    from rf_core.config import TrainConfig


def trainings(cfg: PipelineConfig) -> dict[str, TrainConfig]:
    """The training settings of every model the pipeline makes, by config section."""
    out = {"base": cfg.base}
    out |= {"reflow.train": cfg.reflow.train} if cfg.reflow.rounds else {}
    return out | ({"distill": cfg.distill} if cfg.distill.enabled else {})


def guidance_problems(cfg: PipelineConfig) -> list[str]:
    """Why the config's guidance settings cannot work: label dropout or guidance on an
    unconditional model, or guided sampling of a model trained without label dropout."""
    trained = trainings(cfg)
    guided = {"evaluate.guidance": any(cfg.evaluate.guidance)}
    # Pair generation solves with the model each reflow round starts from.
    guided["pairs.solver.guidance"] = bool(cfg.pairs.solver.guidance)
    needs = {"evaluate.guidance": list(trained), "pairs.solver.guidance": ["base"]}
    needs["pairs.solver.guidance"] += ["reflow.train"] if cfg.reflow.rounds > 1 else []
    if not cfg.model.num_classes:
        asked = [f"{k}.label_dropout" for k, t in trained.items() if t.label_dropout]
        asked += [k for k, on in guided.items() if on]
        return [f"{k} needs a class-conditional model (model.num_classes > 0)" for k in asked]
    out = []
    for setting, sections in needs.items():
        missing = [f"{k}.label_dropout" for k in sections if not trained[k].label_dropout]
        if guided[setting] and missing:
            out.append(f"{setting} needs models trained with label dropout: set "
                       f"{', '.join(missing)} > 0 (e.g. 0.1)")  # fmt: skip
    return out
