"""Images in object storage against the same images on local disk, in one run.

Starts moto's S3 server on 127.0.0.1 (a real S3 API over HTTP, in one Python process: a lower
bound on what a real store gives), uploads the 500 sample images, then times on both sources:
ingest (no renditions: on S3 a HEAD and a ranged read of each header; the bytes fetched are
counted in a separate pass through a counting proxy), `SELECT classify(image)` with the cache
off, and the fully cached repeat (whose cost is the freshness check: one HEAD per image on S3).
Then `smolql profile` of a catalog whose originals and renditions are both on S3: the cost
model's predicted throughput against the measured one, per plan (the fetch term at work).

    python benchmarks/objectstore.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import SAMPLE, host_line, sample_files

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from s3server import Proxy, moto_server


def timed(run, repeats: int) -> tuple[float, list[float]]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        out.append(time.perf_counter() - start)
    return statistics.median(out), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile-sample", type=int, default=48)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import boto3

    import smolql

    files = sample_files()
    with moto_server() as url:
        os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                          AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=url)  # fmt: skip
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        for f in files:
            client.upload_file(str(f), "bench", "sample/" + f.name)
        from concurrent.futures import ThreadPoolExecutor

        def heads() -> None:
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda f: client.head_object(Bucket="bench", Key="sample/" + f.name),
                              files))  # fmt: skip

        server = timed(heads, args.repeats)
        folder = tempfile.mkdtemp(prefix="smolql-os-")
        con = smolql.connect(os.path.join(folder, "o.duckdb"))
        rows = {}
        sql = "SELECT id, classify(image).label FROM c"
        for name, where in (("local disk", str(SAMPLE)), ("S3 (moto)", "s3://bench/sample/")):

            def ingest(where: str = where) -> None:
                con.drop_catalog("c") if "c" in con.catalogs() else None
                con.create_catalog("c", where, renditions=(), progress=False)

            ing = timed(ingest, args.repeats)
            con.sql("SET smolql.cache = off")
            con.sql(sql)  # warm: engine open
            query = timed(lambda: con.sql(sql), args.repeats)
            con.sql("SET smolql.cache = on")
            con.sql(sql)  # fill the cache
            cached = timed(lambda: con.sql(sql), args.repeats)
            rows[name] = (ing, query, cached)
            con.drop_catalog("c")
        proxy = Proxy(url)  # bytes an ingest fetches (not timed: the proxy is Python)
        with proxy.serving() as counted:
            os.environ["AWS_ENDPOINT_URL"] = counted
            con.create_catalog("c", "s3://bench/sample/", renditions=(), progress=False)
            os.environ["AWS_ENDPOINT_URL"] = url
        con.close()
        os.environ["SMOLQL_RENDITIONS"] = "s3://bench/renditions"  # read at connect
        con = smolql.connect(os.path.join(folder, "p.duckdb"))
        con.create_catalog("p", "s3://bench/sample/", renditions=("161:jpeg:75",), progress=False)
        report = con.profile(
            "p",
            models=["efficientnet_lite0"],
            sample=args.profile_sample,
            precisions=("fp32",),
            smaller_inputs=False,
            repeats=1,
        )
        con.close()
    print(f"{host_line()}; {len(files)} images, medians of {args.repeats}")
    n = len(files)
    print(f"{'source':<12} {'ingest img/s':>13} {'classify img/s':>15} {'cached query s':>15}")
    for name, (ing, query, cached) in rows.items():
        print(f"{name:<12} {n / ing[0]:13.1f} {n / query[0]:15.1f} {cached[0]:15.3f}")
    per_s = n / server[0]
    print(
        f"the server alone: {per_s:.0f} HEAD requests/s (16 in flight, boto3); SmolQL makes 2"
        f" requests per image to ingest (HEAD, ranged GET: at most {per_s / 2:.0f} img/s) and 3 to"
        f" classify (freshness HEAD, then HEAD + GET: at most {per_s / 3:.0f} img/s)"
    )
    total = sum(f.stat().st_size for f in files)
    print(
        f"bytes fetched by the S3 ingest: {proxy.sent / 1e6:.2f} MB of the images'"
        f" {total / 1e6:.2f} MB ({100 * proxy.sent / total:.1f}%) in {proxy.requests} requests"
    )
    (li, lq, lc), (si, sq, sc) = rows["local disk"], rows["S3 (moto)"]
    print(
        f"S3 / local: ingest {li[0] / si[0]:.2f}, classify {lq[0] / sq[0]:.2f},"
        f" cached query {lc[0] / sc[0]:.2f} (throughput ratios; < 1 is slower on S3)"
    )
    print(f"profile of {args.profile_sample} images, originals and renditions on S3:")
    print(f"  {report.describe_fetch()}")
    print(f"  {'plan':<50} {'measured/s':>10} {'predicted/s':>11} {'error':>7}")
    for p in report.profiles:
        print(
            f"  {p.plan.describe():<50} {p.measured_per_s:10.1f} {p.predicted_per_s:11.1f}"
            f" {100 * p.error:+6.1f}%"
        )
    errors = sorted(abs(p.error) for p in report.profiles)
    print(f"  median |error| {100 * statistics.median(errors):.1f}%, max {100 * errors[-1]:.1f}%")


if __name__ == "__main__":
    main()
