#!/usr/bin/python3
"""Runs securememory-bench and reports medians, ratios and a plot.

Usage (from the source root, after `meson setup build && ninja -C build`):

    /usr/bin/python3 bench/run.py [--build build] [--repetitions 5]
        [--min-time 0.2] [--plot docs/performance.png]
        [--update-docs docs/performance.md] [--filter REGEX]

It runs the benchmark binary with JSON output and N repetitions, keeps the
median of each benchmark, and prints:
  - a table: each benchmark's median time per operation, its throughput,
    its ratio to its raw system-call floor (time / floor time; < 1 is
    faster than the floor) and to each peer (OpenSSL secure heap, Botan);
  - the page backends' targets with the measured ratio and whether it is met;
  - the baselines and peers on their own.
It reports the envelope workload (envelope/<backend>/encrypt|decrypt and
baseline/envelope/..., bench/envelope-bench.cpp) on its own: time and CPU
time per record, each backend's ratio to the baseline (the same crypto with
the keys in ordinary memory), throughput at N threads over one thread, and
sealed's speed targets. The backends are those the benchmark binary
lists from backend_names() (its JSON context), so a backend that is not
available on this host is named as such.

It writes a PNG plot of aggregate throughput against thread count for every
backend and baseline that runs threaded, and one of the envelope workload
beside it (PLOT-envelope.png; python3-matplotlib; skipped with a message
when it is missing), and with --update-docs replaces the generated parts of
docs/performance.md (between the results markers, and between the envelope
markers) with the tables, the targets and the machine it ran on. A part
with no benchmark in the run (e.g. --filter envelope) is left as it is.

Repetitions run in random interleaved order (Google Benchmark's
--benchmark_enable_random_interleaving), so that a library benchmark and its
floor see the same changes of machine load.

Single-threaded benchmarks report CPU time (robust on a loaded machine);
threaded ones report wall-clock time with operations summed over threads.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

PEERS = ["openssl", "botan"]
# The page backends' targets: (what, limit, "max" or "min").
CREATE_TARGET = {"memguard": 1.10, "protectedmemory": 0.5, "secretmem": 0.5}
WITH_BYTES_TARGET = 1.10
SHARED_TARGET = 1.5
# A backend that makes no system call per access or, once warm, per
# creation has no raw floor; its rows are compared with this backend's same
# benchmark instead (column "vs <REFERENCE>"), and sealed's targets apply.
REFERENCE = "protectedmemory"
SEALED_WITH_BYTES_TARGET = 0.25  # sealed's with_bytes time <= 0.25x protectedmemory's
SEALED_DISTINCT_TARGET = 1.6  # 2 threads on distinct secrets >= 1.6x one thread's throughput
# The envelope workload: benchmark names, and sealed's targets on it.
ENVELOPE_PREFIXES = ("envelope/", "baseline/envelope/")
ENVELOPE_OPS = ("encrypt", "decrypt")
SEALED_ENVELOPE_RATIO = 1.4  # sealed encrypt and decrypt each <= 1.4x the baseline's time
SEALED_ENVELOPE_SCALING = {2: 1.9, 4: 3.0}  # N threads' throughput >= this x one thread's
# sealed at the speed of its cipher; its envelope targets are in the envelope report.
SEALED17_WITH_BYTES = 0.10  # sealed's with_bytes time <= 0.10x protectedmemory's
SEALED17_LIVE = 1.3  # with_bytes on a random one of 1,000,000 live secrets <= 1.3x its time with 1,000
SEALED17_CREATE_RANDOM_NS = 500.0  # create_random(32) + close() <= 0.5 us


def parse_name(run_name):
    """'with_bytes_shared/memguard/real_time/threads:2' -> ('with_bytes_shared/memguard', 2)."""
    threads = 1
    m = re.search(r"/threads:(\d+)$", run_name)
    if m:
        threads = int(m.group(1))
        run_name = run_name[: m.start()]
    run_name = re.sub(r"/real_time$", "", run_name)
    return run_name, threads


UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def load(path):
    """(context, medians of items_per_second, medians of CPU ns per iteration), keyed by (name, threads)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    medians = {}
    cpu_ns = {}
    aggregated = any(b.get("run_type") == "aggregate" for b in data["benchmarks"])
    for b in data["benchmarks"]:
        if aggregated and b.get("aggregate_name") != "median":
            continue  # with repetitions: the medians only
        name, threads = parse_name(b["run_name"])
        if b.get("items_per_second"):
            medians[(name, threads)] = b["items_per_second"]
            # CPU time per iteration: summed over the threads, divided by all their iterations.
            cpu_ns[(name, threads)] = b.get("cpu_time", 0) * UNIT_NS.get(b.get("time_unit", "ns"), 1.0)
    return data.get("context", {}), medians, cpu_ns


def is_envelope(name):
    return name.startswith(ENVELOPE_PREFIXES)


def floor_of(name):
    """The floor benchmark for a library benchmark, or None."""
    parts = name.split("/")
    op, backend, rest = parts[0], parts[1], parts[2:]
    if op == "create_random_close":
        return f"floor/create_close/{backend}/32"
    if op == "with_bytes_shared":
        return f"floor/with_bytes/{backend}"
    return "/".join(["floor", op, backend] + rest)


def peer_of(name, peer):
    parts = name.split("/")
    op, rest = parts[0], parts[2:]
    if op in ("create_close",):
        return "/".join(["peer", peer, op] + rest)
    if op == "create_random_close":
        return f"peer/{peer}/create_close/32"
    if op in ("with_bytes", "with_bytes_shared", "with_bytes_distinct"):
        return f"peer/{peer}/with_bytes"
    return None


def ns(ips):
    return 1e9 / ips


def fmt_ns(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e3:
        return f"{v / 1e3:.2f} us"
    return f"{v:.1f} ns"


def fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r:.2f}x" if r < 100 else f"{r:.0f}x"


def machine_text(context):
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = "?"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip() or "?"
    except OSError:
        pass
    load = context.get("load_avg", [])
    end_load = context.get("load_avg_end", [])
    return (f"{cpu}, {context.get('num_cpus', os.cpu_count())} CPUs at {context.get('mhz_per_cpu', '?')} MHz; "
            f"Linux {platform.release()}; load average (1, 5, 15 min) at start "
            f"{', '.join(f'{x:.1f}' for x in load) or '?'}, at the end {', '.join(f'{x:.1f}' for x in end_load) or '?'}; "
            f"{context.get('date', datetime.datetime.now().isoformat())}; commit {commit}; "
            f"libbenchmark itself built as {context.get('library_build_type', '?')} (Debian's package)")


def report(medians, context, repetitions):
    lines = []
    out = lines.append
    out(f"Machine: {machine_text(context)}")
    out("")
    out(f"Medians of {repetitions} repetitions. Ratios are time per operation divided by the floor's or the "
        "peer's (below 1: faster).")
    out("")
    out("| benchmark | threads | median per op | ops/s | vs floor | " + " | ".join(f"vs {p}" for p in PEERS)
        + f" | vs {REFERENCE} |")
    out("|---|---|---|---|---|" + "---|" * (len(PEERS) + 1))
    missing_floor = set()
    lib = sorted((k for k in medians if not k[0].startswith(("floor/", "baseline/", "peer/")) and not is_envelope(k[0])))
    for name, threads in lib:
        ips = medians[(name, threads)]
        fname = floor_of(name)
        fkey = (fname, threads if fname.startswith("floor/with_bytes_distinct") else 1)
        floor_ratio = medians[fkey] / ips if fkey in medians else None
        if floor_ratio is None:
            missing_floor.add(name.split("/")[1])
        peer_ratios = []
        for p in PEERS:
            pname = peer_of(name, p)
            pkey = (pname, 1)
            peer_ratios.append(medians[pkey] / ips if pname and pkey in medians else None)
        parts = name.split("/")
        rkey = ("/".join([parts[0], REFERENCE] + parts[2:]), threads)
        ref_ratio = medians[rkey] / ips if parts[1] != REFERENCE and rkey in medians else None
        out(f"| {name} | {threads} | {fmt_ns(ns(ips))} | {ips:,.0f} | {fmt_ratio(floor_ratio)} | "
            + " | ".join(fmt_ratio(r) for r in peer_ratios) + f" | {fmt_ratio(ref_ratio)} |")
    out("")
    for b in sorted(missing_floor):
        out(f"No raw floor is measured for some benchmarks of backend {b}: those ratios are shown as '-' "
            f"(see the column vs {REFERENCE}).")
    out("")
    out("Baselines and peers (no library around them):")
    out("")
    out("| baseline | threads | median per op | ops/s |")
    out("|---|---|---|---|")
    for name, threads in sorted(k for k in medians if k[0].startswith(("floor/", "baseline/", "peer/"))
                                and not is_envelope(k[0])):
        ips = medians[(name, threads)]
        out(f"| {name} | {threads} | {fmt_ns(ns(ips))} | {ips:,.0f} |")
    out("")
    out("Targets (page backends):")
    out("")
    out("| target | measured | met |")
    out("|---|---|---|")
    backends = sorted({k[0].split("/")[1] for k in lib})
    for b in backends:
        key, fkey = (f"with_bytes/{b}", 1), (f"floor/with_bytes/{b}", 1)
        if key in medians and fkey in medians:
            r = medians[fkey] / medians[key]
            out(f"| with_bytes, 1 thread, {b}: <= {WITH_BYTES_TARGET:.2f}x floor | {r:.2f}x | "
                f"{'yes' if r <= WITH_BYTES_TARGET else 'NO'} |")
        elif b == "sealed" and (f"with_bytes/{REFERENCE}", 1) in medians and key in medians:
            r = medians[(f"with_bytes/{REFERENCE}", 1)] / medians[key]
            out(f"| with_bytes, 1 thread, {b} (no system call, no floor): <= "
                f"{SEALED_WITH_BYTES_TARGET:.2f}x {REFERENCE}'s | {r:.2f}x | "
                f"{'yes' if r <= SEALED_WITH_BYTES_TARGET else 'NO'} |")
        else:
            out(f"| with_bytes, 1 thread, {b}: <= {WITH_BYTES_TARGET:.2f}x floor | no floor for {b} | - |")
        for size in ("32", "4096", "1048576"):
            key, fkey = (f"create_close/{b}/{size}", 1), (f"floor/create_close/{b}/{size}", 1)
            limit = CREATE_TARGET.get(b)
            if key in medians and fkey in medians and limit is not None:
                r = medians[fkey] / medians[key]
                out(f"| create+close {size} B, {b}: <= {limit:.2f}x floor | {r:.2f}x | "
                    f"{'yes' if r <= limit else 'NO'} |")
            elif key in medians:
                out(f"| create+close {size} B, {b} | no floor or target for {b} | - |")
        one, two = (f"with_bytes_shared/{b}", 1), (f"with_bytes_shared/{b}", 2)
        if one in medians and two in medians:
            r = medians[two] / medians[one]
            out(f"| one shared secret, 2 threads, {b}: >= {SHARED_TARGET:.1f}x one thread | {r:.2f}x | "
                f"{'yes' if r >= SHARED_TARGET else 'NO'} |")
        lib2, floor2 = (f"with_bytes_distinct/{b}", 2), (f"floor/with_bytes_distinct/{b}", 2)
        if lib2 in medians and floor2 in medians:
            r = medians[floor2] / medians[lib2]
            one = medians.get((f"with_bytes_distinct/{b}", 1))
            scale = f", {medians[lib2] / one:.2f}x one thread" if one else ""
            out(f"| distinct secrets, 2 threads, {b}: no regression vs floor (<= 1.10x) | {r:.2f}x floor{scale} | "
                f"{'yes' if r <= 1.10 else 'NO'} |")
        elif b == "sealed" and lib2 in medians and (lib2[0], 1) in medians:
            r = medians[lib2] / medians[(lib2[0], 1)]
            out(f"| distinct secrets, 2 threads, {b}: >= {SEALED_DISTINCT_TARGET:.1f}x one thread | "
                f"{r:.2f}x | {'yes' if r >= SEALED_DISTINCT_TARGET else 'NO'} |")
    speed = sealed_speed_targets(medians)
    if speed:
        out("")
        out("Targets (sealed at the speed of its cipher; the envelope workload's are reported with it):")
        out("")
        out("| target | measured | met |")
        out("|---|---|---|")
        lines.extend(speed)
    return "\n".join(lines)


def envelope_backends(context, medians):
    """The backends of the built library (the binary's JSON context), else those named in the results."""
    listed = [b for b in context.get("backends", "").split(",") if b]
    named = sorted({k[0].split("/")[1] for k in medians if k[0].startswith("envelope/")})
    return listed or named, [b for b in context.get("backends_unavailable", "").split(",") if b]


def envelope_report(medians, cpu_ns, context, repetitions):
    lines = []
    out = lines.append
    backends, unavailable = envelope_backends(context, medians)
    out(f"Machine: {machine_text(context)}")
    out("")
    out(f"Medians of {repetitions} repetitions. One operation is one 1 KiB record; 1,000 intermediate keys, one "
        "chosen at random per record; a new data-row key per encrypt. \"per record\" is wall-clock time divided by "
        "the records all threads did; \"CPU per record\" is the CPU time of all threads divided by the same records "
        "(it leaves out the time spent waiting for a CPU on a loaded machine). Ratios \"vs baseline\": the backend's "
        "time divided by the baseline's (the same crypto, keys in ordinary memory), at the same thread count. "
        "\"vs 1 thread\": throughput at N threads divided by throughput at one.")
    out("")
    out("| workload | threads | per record | records/s | vs baseline | CPU per record | CPU vs baseline | vs 1 thread |")
    out("|---|---|---|---|---|---|---|---|")
    for op in ENVELOPE_OPS:
        base = f"baseline/envelope/{op}"
        for name in [base] + [f"envelope/{b}/{op}" for b in backends]:
            for threads in (1, 2, 4):
                key = (name, threads)
                if key not in medians:
                    continue
                ips = medians[key]
                bkey = (base, threads)
                ratio = medians[bkey] / ips if name != base and bkey in medians else None
                cpu = cpu_ns.get(key)
                cpu_ratio = cpu / cpu_ns[bkey] if name != base and cpu and cpu_ns.get(bkey) else None
                one = medians.get((name, 1))
                scale = ips / one if threads != 1 and one else None
                out(f"| {name} | {threads} | {fmt_ns(ns(ips))} | {ips:,.0f} | {fmt_ratio(ratio)} | "
                    f"{fmt_ns(cpu) if cpu else '-'} | {fmt_ratio(cpu_ratio)} | {fmt_ratio(scale)} |")
    out("")
    for b in unavailable:
        out(f"Backend {b} is not available on this host: not measured.")
    missing = [b for b in backends if b not in unavailable
               and not any((f"envelope/{b}/{op}", 1) in medians for op in ENVELOPE_OPS)]
    for b in missing:
        out(f"Backend {b} has no envelope result in this run (filtered out, or its workload could not be built).")
    if unavailable or missing:
        out("")
    out("Summary (one thread: time per record vs the baseline's, wall clock and CPU; throughput at 2 and 4 threads "
        "vs one thread):")
    out("")
    out("| keys in | encrypt vs baseline | decrypt vs baseline | encrypt 2 / 4 threads | decrypt 2 / 4 threads |")
    out("|---|---|---|---|---|")
    for b in ["baseline"] + backends:
        cells = []
        for op in ENVELOPE_OPS:
            name = f"baseline/envelope/{op}" if b == "baseline" else f"envelope/{b}/{op}"
            base = f"baseline/envelope/{op}"
            if (name, 1) not in medians or (base, 1) not in medians:
                cells.append("-")
            elif b == "baseline":
                cells.append(f"{fmt_ns(ns(medians[(name, 1)]))} (CPU {fmt_ns(cpu_ns[(name, 1)])})")
            else:
                cells.append(f"{fmt_ratio(medians[(base, 1)] / medians[(name, 1)])} "
                             f"(CPU {fmt_ratio(cpu_ns[(name, 1)] / cpu_ns[(base, 1)])})")
        for op in ENVELOPE_OPS:
            name = f"baseline/envelope/{op}" if b == "baseline" else f"envelope/{b}/{op}"
            one = medians.get((name, 1))
            cells.append(" / ".join(fmt_ratio(medians[(name, t)] / one) if one and (name, t) in medians else "-"
                                    for t in (2, 4)))
        label = "ordinary memory (baseline)" if b == "baseline" else b
        out(f"| {label} | " + " | ".join(cells) + " |")
    out("")
    if ("envelope/sealed/encrypt", 1) in medians:
        out("Targets for sealed (4 threads on a 2-CPU machine cannot reach 3x):")
        out("")
        out("| target | measured | met |")
        out("|---|---|---|")
        for op in ENVELOPE_OPS:
            name, base = f"envelope/sealed/{op}", f"baseline/envelope/{op}"
            if (name, 1) in medians and (base, 1) in medians:
                r = medians[(base, 1)] / medians[(name, 1)]
                out(f"| sealed {op}, 1 thread: <= {SEALED_ENVELOPE_RATIO:.1f}x the baseline's time | {r:.2f}x | "
                    f"{'yes' if r <= SEALED_ENVELOPE_RATIO else 'NO'} |")
            for threads, limit in SEALED_ENVELOPE_SCALING.items():
                if (name, 1) in medians and (name, threads) in medians:
                    r = medians[(name, threads)] / medians[(name, 1)]
                    out(f"| sealed {op}, {threads} threads: >= {limit:.1f}x one thread's throughput | {r:.2f}x | "
                        f"{'yes' if r >= limit else 'NO'} |")
    return "\n".join(lines)


PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]


def pyplot(path):
    """matplotlib.pyplot drawing to files, or None (said on stderr) when matplotlib is missing."""
def sealed_speed_targets(medians):
    """sealed's speed targets as table rows, from this run's medians (time per op = 1 / items per second)."""
    rows = []
    sealed, ref = ("with_bytes/sealed", 1), (f"with_bytes/{REFERENCE}", 1)
    if sealed in medians and ref in medians:
        r = medians[ref] / medians[sealed]
        rows.append(f"| with_bytes, 1 thread, sealed: <= {SEALED17_WITH_BYTES:.2f}x {REFERENCE}'s time | {r:.3f}x "
                    f"({fmt_ns(ns(medians[sealed]))} / {fmt_ns(ns(medians[ref]))}) | "
                    f"{'yes' if r <= SEALED17_WITH_BYTES else 'NO'} |")
    few, many = ("with_bytes_live/sealed/1000", 1), ("with_bytes_live/sealed/1000000", 1)
    if few in medians and many in medians:
        r = medians[few] / medians[many]
        rows.append(f"| with_bytes on a random one of 1,000,000 live sealed secrets: <= {SEALED17_LIVE:.1f}x its time "
                    f"with 1,000 | {r:.2f}x ({fmt_ns(ns(medians[many]))} / {fmt_ns(ns(medians[few]))}) | "
                    f"{'yes' if r <= SEALED17_LIVE else 'NO'} |")
    create = ("create_random_close/sealed/32", 1)
    if create in medians:
        t = ns(medians[create])
        rows.append(f"| create_random(32) + close(), sealed: <= {fmt_ns(SEALED17_CREATE_RANDOM_NS)} | {fmt_ns(t)} | "
                    f"{'yes' if t <= SEALED17_CREATE_RANDOM_NS else 'NO'} |")
    return rows


def plot(medians, path):
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        print(f"matplotlib is missing (apt-get install python3-matplotlib): no plot written to {path}",
              file=sys.stderr)
        return None
    return plt


def plot_envelope(medians, path):
    """Records per second against threads, encrypt and decrypt side by side."""
    plt = pyplot(path)
    if plt is None:
        return False
    backends = sorted({k[0].split("/")[1] for k in medians if k[0].startswith("envelope/")})
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    for ax, op in zip(axes, ENVELOPE_OPS):
        for i, b in enumerate(["baseline"] + backends):
            name = f"baseline/envelope/{op}" if b == "baseline" else f"envelope/{b}/{op}"
            points = sorted((t, v) for (n, t), v in medians.items() if n == name)
            if not points:
                continue
            ax.plot([t for t, _ in points], [v for _, v in points], "--" if b == "baseline" else "-", marker="o",
                    color="grey" if b == "baseline" else PALETTE[(i - 1) % len(PALETTE)],
                    label="keys in ordinary memory" if b == "baseline" else b)
        ax.set_title(f"{op} a 1 KiB record")
        ax.set_xlabel("threads")
        ax.set_xticks([1, 2, 4])
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("records per second, all threads (medians)")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("securememory: envelope encryption, 1,000 intermediate keys, a new data-row key per record")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}", file=sys.stderr)
    return True


def envelope_plot_path(path):
    stem, ext = os.path.splitext(path)
    return f"{stem}-envelope{ext or '.png'}"


def plot(medians, path):
    plt = pyplot(path)
    if plt is None:
        return False
    series = {}
    for (name, threads), ips in medians.items():
        if not is_envelope(name):  # plotted on their own (plot_envelope)
            series.setdefault(name, {})[threads] = ips
    fig, ax = plt.subplots(figsize=(11, 6))
    # One colour per backend (baselines grey), one marker per benchmark kind,
    # dashed for the raw floors and baselines.
    backends = sorted({n.split("/")[-1] if n.startswith("floor/") else n.split("/")[1] for n in series
                       if not n.startswith(("baseline/", "peer/"))})
    colour = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(backends)}
    markers = {"with_bytes": "s", "with_bytes_shared": "o", "with_bytes_distinct": "^"}
    for name in sorted(series):
        points = sorted(series[name].items())
        toggles = name.startswith(("with_bytes", "floor/with_bytes")) or name.endswith("mprotect_pair")
        if len(points) < 2 and not toggles:
            continue  # create/close and peers: not a with_bytes throughput
        parts = name.split("/")
        baseline = name.startswith("baseline/")
        kind = parts[1] if name.startswith("floor/") else parts[0]
        backend = parts[-1] if name.startswith("floor/") else (parts[1] if len(parts) > 1 else "")
        style = "--" if name.startswith(("floor/", "baseline/")) else "-"
        ax.plot([t for t, _ in points], [v for _, v in points], style, marker=markers.get(kind, "x"),
                color="grey" if baseline else colour.get(backend, "black"), label=name)
    ax.set_xlabel("threads")
    ax.set_ylabel("with_bytes (or protection toggles) per second, all threads")
    ax.set_xticks([1, 2, 4])
    ax.set_yscale("log")
    ax.set_title("securememory: throughput against threads (medians; dashed: raw floors and baselines)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}", file=sys.stderr)
    return True


MARKERS = {
    "results": ("<!-- results:begin (bench/run.py --update-docs) -->", "<!-- results:end -->"),
    "envelope": ("<!-- envelope:begin (bench/run.py --update-docs) -->", "<!-- envelope:end -->"),
}


def update_docs(path, sections):
    """Replaces the text between each section's markers; sections: {"results" or "envelope": text}."""
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    for section, text in sections.items():
        begin, end = MARKERS[section]
        if begin not in doc or end not in doc:
            sys.exit(f"{path} has no {section} markers")
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        doc = head + begin + "\n" + text + "\n" + end + tail
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)
    print(f"{path} updated ({', '.join(sections)})", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--min-time", default="0.2")
    ap.add_argument("--filter", default="")
    ap.add_argument("--json", default=None, help="where to keep the raw JSON (default: BUILD/bench-results.json)")
    ap.add_argument("--from-json", default=None, help="report on an earlier run instead of running")
    ap.add_argument("--plot", default="docs/performance.png")
    ap.add_argument("--update-docs", default=None)
    args = ap.parse_args()

    json_path = args.from_json or args.json or os.path.join(args.build, "bench-results.json")
    if not args.from_json:
        binary = os.path.join(args.build, "bench", "securememory-bench")
        if not os.path.exists(binary):
            sys.exit(f"{binary} not found: configure with -Dbench=enabled (needs libbenchmark-dev) and build")
        cmd = [binary, f"--benchmark_repetitions={args.repetitions}", "--benchmark_report_aggregates_only=true",
               f"--benchmark_min_time={args.min_time}", f"--benchmark_out={json_path}",
               "--benchmark_out_format=json", "--benchmark_enable_random_interleaving=true"]
        if args.filter:
            cmd.append(f"--benchmark_filter={args.filter}")
        print("running:", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        # Google Benchmark records the load at the start only; keep the end too.
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
        data.setdefault("context", {})["load_avg_end"] = list(os.getloadavg())
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
    context, medians, cpu_ns = load(json_path)
    sections = {}
    if any(not is_envelope(k[0]) for k in medians):
        text = report(medians, context, args.repetitions)
        print(text)
        if args.plot:
            plot(medians, args.plot)
            text += f"\n\n![throughput against threads]({os.path.basename(args.plot)})"
        sections["results"] = text
    if any(is_envelope(k[0]) for k in medians):
        text = envelope_report(medians, cpu_ns, context, args.repetitions)
        print("\nEnvelope workload:\n")
        print(text)
        if args.plot:
            path = envelope_plot_path(args.plot)
            plot_envelope(medians, path)
            text += f"\n\n![envelope workload: records per second against threads]({os.path.basename(path)})"
        sections["envelope"] = text
    if args.update_docs and sections:
        update_docs(args.update_docs, sections)


if __name__ == "__main__":
    main()
