"""``smolql train``: fine-tune a copy of a model for one rendition of a catalog, without labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from smolql.errors import DecodeError, InferenceError
from smolql.ingest.definition import RenditionSpec
from smolql.ingest.manage import get_definition
from smolql.lowres import trained
from smolql.lowres.distill import TrainConfig, distil
from smolql.lowres.views import load_pair
from smolql.models.registry import get_model


@dataclass(frozen=True)
class Outcome:
    model: str
    images: int
    skipped: tuple[tuple[str, str], ...]
    seconds: float
    layer: str
    losses: tuple[float, ...]


def train(
    con: duckdb.DuckDBPyConnection,
    folder: str,
    catalog: str,
    model: str,
    rendition: str,
    *,
    config: TrainConfig,
    where: str | None = None,
    limit: int | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Outcome:
    """Train ``model@rendition`` on the catalog's images (``where`` filters them, ``limit``
    caps how many, in id order); undecodable images are skipped and reported."""
    get_definition(con, catalog)
    base = get_model(model)
    if base.base:
        raise InferenceError(f"{model!r} is itself fine-tuned; train from {base.base!r}")
    spec = RenditionSpec.parse(rendition)
    cond = f" WHERE {where}" if where else ""
    cap = f" LIMIT {int(limit)}" if limit else ""
    rows = con.execute(f'SELECT id, path FROM "{catalog}"{cond} ORDER BY id{cap}').fetchall()
    say(f"loading {len(rows)} images of {catalog!r} and their {spec} twins")
    pairs, skipped = [], []
    for _, path in rows:
        try:
            pairs.append(load_pair(path, spec, 2 * base.transform.resize))
        except (DecodeError, OSError, ValueError) as e:
            skipped.append((path, getattr(e, "message", str(e))))
    if not pairs:
        raise InferenceError(f"no decodable images to train on in {catalog!r}{cond}")
    result = distil(base, pairs, config, say)
    saved = trained.save(
        con,
        folder,
        base,
        str(spec),
        result.state_dict,
        catalog=catalog,
        images=result.images,
        epochs=result.epochs,
        seconds=result.seconds,
    )
    return Outcome(
        saved.name, result.images, tuple(skipped), result.seconds, result.layer, result.losses
    )
