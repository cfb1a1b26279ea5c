"""The cost model predicts plans that were never run end to end, on a catalog it never timed.

Machine rates come from `smolql calibrate`'s photographs (scikit-image's, not the sample):
decode and resize/normalise per format and DCT scale on one core; inference per engine is timed
alone (batches of zeros-free real inputs, no preprocessing). Each plan's preprocessing is then
predicted from the sample catalog's *header statistics* only. Every plan of the space (two
models, original and a 161-px rendition, DCT 1/2/4, native and 0.75x input, two engines) also
runs end to end through the local executor (median of --repeats rounds); the contention and
overhead terms are fitted on a random half of the plans and the other half is predicted.

    python benchmarks/costmodel.py [--images 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import warnings

from common import SAMPLE, host_line

import smolql
from smolql.models.registry import get_model
from smolql.planner import rates
from smolql.planner.cost import CostModel, RunObservation, fit_contention, split_threads
from smolql.planner.engines import calibration_images, stored_choice
from smolql.planner.rates import Header
from smolql.planner.space import ORIGINAL, enumerate_plans, sized
from smolql.profile.measure import run_plan
from smolql.profile.run import _sample
from smolql.storage.schema import image_headers

MODELS = ("efficientnet_lite0", "efficientnet_lite1")
RENDITION = "161:jpeg:75"
ENGINES = [("onnxruntime", "fp32"), ("openvino", "fp32")]
LIMIT = 0.20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(host_line())
    folder = tempfile.mkdtemp(prefix="smolql-cost-")
    con = smolql.connect(os.path.join(folder, "c.duckdb"))
    con.create_catalog("photos", str(SAMPLE), renditions=(RENDITION,), progress=False)
    con.calibrate(list(MODELS), paths=calibration_images(), only_missing=True)
    machine = rates.calibrate(
        calibration_images()[: rates.RATE_IMAGES], get_model(MODELS[0]).transform
    )
    print(f"machine rates fitted on {len(calibration_images())} scikit-image photographs")

    specs = [get_model(m) for m in MODELS]
    short = statistics.median(
        r[0] for r in con.duckdb.execute("SELECT least(width, height) FROM photos").fetchall()
    )
    plans = enumerate_plans(
        specs, [ORIGINAL, RENDITION], {m: ENGINES for m in MODELS}, source_short_side=short
    )
    images = _sample(con.duckdb, "photos", None, args.images, args.seed)
    headers = {
        src: [Header(*r) for r in image_headers(con.duckdb, "photos", src)]
        for src in (None, RENDITION)
    }
    cores = os.cpu_count() or 1
    batch = {m: (stored_choice(get_model(m)).batch_size or 32) for m in MODELS}

    measured: dict = {p: [] for p in plans}
    infer: dict = {p: [] for p in plans}
    pre: dict = {}
    for p in plans:
        spec = sized(get_model(p.model), p.input_size)
        src = None if p.source == ORIGINAL else p.source
        images_ = rates.planned(headers[src], spec.transform, p.scale)
        guess = rates.estimate(images_, None, model=machine, engine=p.engine, cores=cores)
        pre[p] = guess.decode_s + guess.resize_s
    workers, threads = split_threads(cores, 1.0, 5.0)
    print(f"{len(plans)} plans x {args.repeats} rounds on {len(images)} images")
    for _ in range(args.repeats):
        for p in plans:
            run = run_plan(p, images, batch[p.model], workers, threads, timed=2)
            measured[p].append(len(run.predictions) / run.seconds)
            infer[p].extend(run.infer_s)

    observations = {
        p: RunObservation(
            pre[p],
            statistics.median(infer[p]),
            workers,
            batch[p.model],
            len(images),
            len(images) / statistics.median(measured[p]),
            p.engine,
        )
        for p in plans
    }
    order = sorted(plans)
    random.Random(args.seed).shuffle(order)
    fit_half, predict_half = order[: len(order) // 2], order[len(order) // 2 :]
    fitted = fit_contention(
        CostModel(machine.decode, machine.resize, cores=cores),
        [observations[p] for p in fit_half],
    )
    print(f"fitted on {len(fit_half)} plans: {fitted.describe_contention()}")
    print(
        f"{'plan (predicted, never fitted on)':<62} {'measured':>9} {'predicted':>9} {'error':>7}"
    )
    errors = []
    for p in sorted(predict_half):
        o = observations[p]
        predicted = o.images / fitted.run_seconds(
            o.images, o.pre_s, o.infer_s, o.workers, o.batch, o.engine
        )
        actual = statistics.median(measured[p])
        errors.append(predicted / actual - 1)
        print(f"{p.describe():<62} {actual:9.1f} {predicted:9.1f} {errors[-1]:+7.1%}")
    within = sum(abs(e) <= LIMIT for e in errors)
    print(
        f"cost model on {len(errors)} unfitted plans: median |error|"
        f" {statistics.median(abs(e) for e in errors):.1%}, largest {max(map(abs, errors)):.1%},"
        f" {within}/{len(errors)} within {LIMIT:.0%}"
    )
    defaults = []
    for p in plans:
        o = observations[p]
        d = CostModel(machine.decode, machine.resize, 1.0 / cores, rates.DEFAULT_OVERHEAD_S, cores)
        predicted = o.images / d.run_seconds(o.images, o.pre_s, o.infer_s, workers, o.batch)
        defaults.append(predicted / statistics.median(measured[p]) - 1)
    print(
        f"before any profile (contention 1/cores, every plan): median |error|"
        f" {statistics.median(abs(e) for e in defaults):.1%}, largest"
        f" {max(map(abs, defaults)):.1%}, {sum(abs(e) <= LIMIT for e in defaults)}/{len(defaults)}"
        f" within {LIMIT:.0%}"
    )
    con.close()


if __name__ == "__main__":
    main()
