"""Turns bench/soak.sh's raw files (in the output directory given as the only argument) into its Markdown report:
the command, the machine, wrk's summary, RSS over time, the accounting balance, the counters that matter and each
target met or missed."""

import os
import re
import statistics
import sys

RSS_TARGET_MIB = 256
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def read_tsv(path):
    """key<TAB>value lines as a dict (missing file: empty)."""
    values = {}
    if os.path.exists(path):
        for line in open(path):
            key, _, value = line.rstrip("\n").partition("\t")
            if key:
                values[key] = value
    return values


def parse_metrics(text):
    """Prometheus text as a list of (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples.append((name, dict(LABEL.findall(labels or "")), number))
    return samples


class Metrics:
    def __init__(self, samples):
        self.samples = samples

    def get(self, name, **labels):
        """The sum of the samples of `name` whose labels include `labels`."""
        return sum(
            value
            for n, l, value in self.samples
            if n == name and all(l.get(k) == v for k, v in labels.items())
        )

    def by(self, name, label, **labels):
        """{label value: value} for the samples of `name` (those with `labels`), summed per label value."""
        out = {}
        for n, l, value in self.samples:
            if n == name and all(l.get(k) == v for k, v in labels.items()):
                key = l.get(label, "")
                out[key] = out.get(key, 0) + value
        return out

    def has(self, name):
        return any(n == name for n, _, _ in self.samples)


def load_scrapes(path):
    """metrics.log: [(elapsed seconds, Metrics)]."""
    scrapes = []
    if not os.path.exists(path):
        return scrapes
    at, lines = None, []
    for line in open(path):
        if line.startswith("# scrape "):
            if at is not None:
                scrapes.append((at, Metrics(parse_metrics("".join(lines)))))
            at, lines = float(line.split()[2]), []
        else:
            lines.append(line)
    if at is not None:
        scrapes.append((at, Metrics(parse_metrics("".join(lines)))))
    return scrapes


def mib(kib):
    return f"{kib / 1024:.0f} MiB"


def mib_bytes(value):
    return f"{value / 1048576:.1f} MiB"


def ms(micros):
    return f"{micros / 1000:.2f} ms"


def n(value):
    return f"{value:,.0f}"


def verdict(met):
    return "**met**" if met else "**missed**"


def labelled(values):
    """{label: value} as `a 3, b 5` (nonzero only), or `0`."""
    parts = [f"`{k}` {n(v)}" for k, v in sorted(values.items()) if v]
    return ", ".join(parts) if parts else "0"


def intervals(events, start_text, end_text, load_end):
    """[(start, end)] between events whose text starts with start_text and end_text."""
    spans, opened = [], None
    for at, text in events:
        if text.startswith(start_text) and opened is None:
            opened = at
        elif text.startswith(end_text) and opened is not None:
            spans.append((opened, at))
            opened = None
    if opened is not None:
        spans.append((opened, load_end))
    return spans


def overlaps(spans, lo, hi):
    """Whether a span covers more than a second of [lo, hi] (a fault that ends as a window opens is not in it)."""
    return any(min(end, hi) - max(start, lo) > 1 for start, end in spans)


def main(out):
    settings = read_tsv(os.path.join(out, "settings.tsv"))
    machine = read_tsv(os.path.join(out, "machine.tsv"))
    db = read_tsv(os.path.join(out, "db.tsv"))
    shutdown = read_tsv(os.path.join(out, "shutdown.tsv"))
    command = open(os.path.join(out, "command.txt")).read().strip()
    wrk_text = open(os.path.join(out, "wrk.txt")).read() if os.path.exists(os.path.join(out, "wrk.txt")) else ""
    duration = float(settings.get("duration_s", 0))
    window = int(settings.get("window_s") or (60 if duration >= 180 else 10))

    events = []
    if os.path.exists(os.path.join(out, "events.tsv")):
        for line in open(os.path.join(out, "events.tsv")):
            at, _, text = line.rstrip("\n").partition("\t")
            events.append((float(at), text))
    load_end = next((at for at, text in events if text.startswith("load stopped")), duration)
    holes = intervals(events, "candidate black-holed", "candidate answers again", load_end)
    pg_down = intervals(events, "stopping PostgreSQL", "PostgreSQL started", load_end)

    rss = []
    if os.path.exists(os.path.join(out, "rss.tsv")):
        for line in open(os.path.join(out, "rss.tsv")):
            at, kib = line.split()
            rss.append((float(at), int(kib)))
    scrapes = load_scrapes(os.path.join(out, "metrics.log"))
    final_path = os.path.join(out, "metrics-final.txt")
    final = Metrics(parse_metrics(open(final_path).read())) if os.path.exists(final_path) else None

    print("## Soak: shadowdiff serve on PostgreSQL at saturation\n")
    print(
        f"- machine: {machine.get('cores')} cores, {machine.get('cpu')}, {machine.get('memory')}, "
        f"kernel {machine.get('kernel')}"
    )
    print(
        f"- versions: {machine.get('shadowdiff')}, {machine.get('wrk')}, PostgreSQL {machine.get('postgresql')}"
    )
    print(
        f"- load: {settings.get('wrk_command')} for {duration:.0f} s; request bodies: {settings.get('payloads')}"
    )
    schedule = []
    for start, end in holes:
        schedule.append(f"candidate black-holed {start:.0f}-{end:.0f} s")
    for start, end in pg_down:
        schedule.append(f"PostgreSQL down {start:.0f}-{end:.0f} s")
    print(f"- faults (actual times): {'; '.join(schedule) if schedule else 'none'}")
    print("- shadowdiff (defaults otherwise):\n")
    print("```sh")
    print(command)
    print("```\n")

    # wrk
    result = re.search(r"^RESULT (.*)$", wrk_text, re.M)
    mix = re.search(r"^MIX (.*)$", wrk_text, re.M)
    caller_errors = None
    print("### What the callers saw (wrk)\n")
    if result:
        r = {k: int(v) for k, v in (kv.split("=") for kv in result.group(1).split())}
        rps = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0
        socket_errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
        caller_errors = socket_errors + r["status"]
        print("| requests | requests/s | MiB/s read | p50 | p90 | p99 | p99.9 | max | non-2xx/3xx | socket errors (connect/read/write/timeout) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        print(
            f"| {n(r['requests'])} | {rps:,.0f} | {r['bytes'] / 1048576 / (r['duration_us'] / 1e6):.1f} | "
            f"{ms(r['p50_us'])} | {ms(r['p90_us'])} | {ms(r['p99_us'])} | {ms(r['p999_us'])} | {ms(r['max_us'])} | "
            f"{n(r['status'])} | {n(socket_errors)} ({r['connect']}/{r['read']}/{r['write']}/{r['timeout']}) |"
        )
        if mix:
            m = {k: int(v) for k, v in (kv.split("=") for kv in mix.group(1).split())}
            total = sum(m.values()) or 1
            print(
                "\nRequests built, by kind: "
                + ", ".join(f"{k.replace('_', ' ')} {n(v)} ({100 * v / total:.1f} %)" for k, v in m.items())
                + " (canonical: GETs with a Canonical-Resource header; post big: bodies decoding to 2-4 MiB)."
            )
    else:
        print("wrk printed no result (see wrk.txt).")
    print()

    # RSS
    print("### Resident memory of shadowdiff (VmRSS, sampled every second)\n")
    peak = max((kib for _, kib in rss), default=0)
    load_rss = [kib for at, kib in rss if at <= load_end]
    if rss:
        print(
            f"Peak {mib(peak)}, median during the load {mib(statistics.median(load_rss) if load_rss else 0)}, "
            f"at the end of the load {mib(load_rss[-1] if load_rss else 0)}, last sample {mib(rss[-1][1])} "
            f"({len(rss)} samples).\n"
        )
    idle = {}
    if os.path.exists(os.path.join(out, "status-idle.txt")):
        for line in open(os.path.join(out, "status-idle.txt")):
            key, _, value = line.partition(":")
            idle[key] = value.strip()
        print(
            f"Once idle after the load (queues empty, nothing in flight, before SIGTERM): VmRSS {idle.get('VmRSS')}, "
            f"of which anonymous {idle.get('RssAnon')}, file-backed {idle.get('RssFile')}; VmHWM {idle.get('VmHWM')}; "
            f"{idle.get('Threads')} threads, {idle.get('Fds')} open file descriptors.\n"
        )
    budget = scrapes[-1][1].get("shadowdiff_memory_budget_bytes") if scrapes else 0

    def held(metrics):
        return sum(metrics.by("shadowdiff_memory_bytes", "stage").values())

    print(
        f"| seconds | state | RSS max | RSS median | RSS at end | requests/s (shadowdiff) | held against budget, max "
        f"(of {mib_bytes(budget)}) | memory shed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    bounds = []
    lo = 0
    while lo < load_end - 0.5:
        bounds.append((lo, min(lo + window, load_end)))
        lo += window
    if rss and rss[-1][0] > load_end:
        bounds.append((load_end, rss[-1][0] + 1))
    for i, (lo, hi) in enumerate(bounds):
        drain = lo >= load_end
        samples = [kib for at, kib in rss if lo <= at < hi]
        in_window = [(at, m) for at, m in scrapes if lo <= at < hi]
        state = []
        if drain:
            state.append("drain and shutdown")
        if overlaps(holes, lo, hi):
            state.append("**candidate black hole**")
        if overlaps(pg_down, lo, hi):
            state.append("**PostgreSQL down**")
        # Requests/s from the scrapes around the window.
        before = [(at, m) for at, m in scrapes if at <= lo + 0.5]
        after = [(at, m) for at, m in scrapes if at <= hi + 0.5]
        rate = ""
        shed = ""
        if not drain and before and after and after[-1][0] > before[-1][0]:
            (t0, m0), (t1, m1) = before[-1], after[-1]
            rate = f"{(m1.get('shadowdiff_requests_total') - m0.get('shadowdiff_requests_total')) / (t1 - t0):,.0f}"
            shed_count = m1.get("shadowdiff_memory_shed_total") - m0.get("shadowdiff_memory_shed_total")
            shed = n(shed_count)
        held_max = max((held(m) for _, m in in_window), default=None)
        print(
            f"| {lo:.0f}-{hi:.0f} | {', '.join(state) or 'normal'} | {mib(max(samples)) if samples else '-'} | "
            f"{mib(statistics.median(samples)) if samples else '-'} | {mib(samples[-1]) if samples else '-'} | "
            f"{rate or '-'} | {mib_bytes(held_max) if held_max is not None else '-'} | {shed or '-'} |"
        )
    print()

    # Accounting
    print("### Accounting: every request stored or counted as dropped\n")
    balance_ok = None
    if final is None:
        print("No final scrape of /metrics (shadowdiff was not running at the end): no balance.\n")
    else:
        requests = final.get("shadowdiff_requests_total")
        unshadowed = final.by("shadowdiff_unshadowed_requests_total", "reason")
        dropped_exchanges = final.by("shadowdiff_dropped_total", "reason", queue="exchanges")
        failures = final.get("shadowdiff_analysis_failures_total")
        dropped_analyses = final.by("shadowdiff_dropped_total", "reason", queue="analyses")
        store_dropped = final.by("shadowdiff_store_dropped_total", "reason", what="exchange")
        stored = float(db.get("db_requests") or "nan")
        terms = [
            ("unshadowed (Σ `shadowdiff_unshadowed_requests_total`)", sum(unshadowed.values()), labelled(unshadowed)),
            ("dropped before analysis (Σ `shadowdiff_dropped_total{queue=\"exchanges\"}`)", sum(dropped_exchanges.values()), labelled(dropped_exchanges)),
            ("analysis failures (`shadowdiff_analysis_failures_total`)", failures, ""),
            ("dropped before storage (Σ `shadowdiff_dropped_total{queue=\"analyses\"}`)", sum(dropped_analyses.values()), labelled(dropped_analyses)),
            ("not stored (Σ `shadowdiff_store_dropped_total{what=\"exchange\"}`)", sum(store_dropped.values()), labelled(store_dropped)),
            ("stored (Σ `endpoint_counters` `requests` of run `soak`)", stored, ""),
        ]
        accounted = sum(value for _, value, _ in terms)
        difference = requests - accounted
        balance_ok = difference == 0
        print("| term | count | by reason |")
        print("|---|---|---|")
        print(f"| requests (`shadowdiff_requests_total`) | {n(requests)} | |")
        for name, value, detail in terms:
            print(f"| − {name} | {n(value)} | {detail} |")
        print(f"| **difference** (requests − the rest) | **{n(difference)}** | |")
        print()
        print(
            f"The balance {'**holds**' if balance_ok else '**does not hold**'}"
            + ("" if balance_ok else f": {n(abs(difference))} requests {'unaccounted for' if difference > 0 else 'counted twice'} "
               f"({100 * abs(difference) / requests if requests else 0:.3f} % of requests)")
            + ". Figures taken after the load, once shadowdiff was idle"
            + (f" ({events_text(events, 'drain')})" if events_text(events, "drain") else "")
            + ", and before SIGTERM.\n"
        )
        after = db.get("after_shutdown_requests")
        if after not in (None, "") and db.get("db_requests") not in (None, ""):
            extra = int(after) - int(db["db_requests"])
            print(
                f"Stored requests after the graceful shutdown: {n(int(after))} "
                + ("(unchanged)." if extra == 0 else f"({'+' if extra > 0 else ''}{n(extra)}: written after the figures above).")
                + f" Shutdown: exit status {shutdown.get('exit_status', '?')} after {shutdown.get('shutdown_ms', '?')} ms.\n"
            )
        if shutdown.get("died_during_run"):
            print(f"**shadowdiff exited during the run** (status {shutdown.get('exit_status')}).\n")

        # Stage by stage, to locate a difference.
        queued = final.by("shadowdiff_queued_total", "queue")
        analysed = final.by("shadowdiff_exchanges_analysed_total", "result")
        print("Stage by stage (each line should be 0; a nonzero line says where requests go missing or double):\n")
        print("| check | value |")
        print("|---|---|")
        exchanges_made = requests - sum(unshadowed.values())
        print(
            f"| requests − unshadowed − queued(exchanges) − dropped(exchanges) | "
            f"{n(exchanges_made - queued.get('exchanges', 0) - sum(dropped_exchanges.values()))} |"
        )
        print(
            f"| queued(exchanges) − Σ exchanges_analysed − analysis failures | "
            f"{n(queued.get('exchanges', 0) - sum(analysed.values()) - failures)} |"
        )
        print(
            f"| Σ exchanges_analysed − queued(analyses) − dropped(analyses) | "
            f"{n(sum(analysed.values()) - queued.get('analyses', 0) - sum(dropped_analyses.values()))} |"
        )
        print(
            f"| queued(analyses) − store dropped(exchange) − stored | "
            f"{n(queued.get('analyses', 0) - sum(store_dropped.values()) - stored)} |"
        )
        print()

        # Other counters
        print("### Counters at the end (`/metrics`)\n")
        peaks = {}
        for _, m in scrapes:
            for stage, value in m.by("shadowdiff_memory_bytes", "stage").items():
                peaks[stage] = max(peaks.get(stage, 0), value)
        held_peak = max((held(m) for _, m in scrapes), default=0)
        print("| counter | value |")
        print("|---|---|")
        rows = [
            ("`shadowdiff_memory_shed_total{stage}`", labelled(final.by("shadowdiff_memory_shed_total", "stage"))),
            (
                f"`shadowdiff_memory_bytes{{stage}}` peaks (scraped every {settings.get('metrics_every_s', '?')} s)",
                ", ".join(f"`{k}` {mib_bytes(v)}" for k, v in sorted(peaks.items()) if v) or "0",
            ),
            ("`shadowdiff_memory_bytes` total, peak of the scrapes", f"{mib_bytes(held_peak)} of {mib_bytes(budget)}"),
            ("`shadowdiff_endpoints_overflowed_total`", n(final.get("shadowdiff_endpoints_overflowed_total"))),
            ("`shadowdiff_upstream_errors_total{target,kind}`", ", ".join(
                f"`{l.get('target')}/{l.get('kind')}` {n(v)}"
                for name, l, v in final.samples if name == "shadowdiff_upstream_errors_total" and v) or "0"),
            ("`shadowdiff_shadow_shed_total{target}`", labelled(final.by("shadowdiff_shadow_shed_total", "target"))),
            ("`shadowdiff_store_writes_total{result}`", labelled(final.by("shadowdiff_store_writes_total", "result"))),
            ("`shadowdiff_store_dropped_total{what,reason}`", ", ".join(
                f"`{l.get('what')}/{l.get('reason')}` {n(v)}"
                for name, l, v in final.samples if name == "shadowdiff_store_dropped_total" and v) or "0"),
            ("`shadowdiff_store_rejected_rows_total{table}`", labelled(final.by("shadowdiff_store_rejected_rows_total", "table"))),
            ("`shadowdiff_exchanges_analysed_total{result}`", labelled(analysed)),
            ("`shadowdiff_bodies_not_compared_total{target,reason}`", ", ".join(
                f"`{l.get('target')}/{l.get('reason')}` {n(v)}"
                for name, l, v in final.samples if name == "shadowdiff_bodies_not_compared_total" and v) or "0"),
            ("`shadowdiff_bodies_too_large_total{side}`", labelled(final.by("shadowdiff_bodies_too_large_total", "side"))),
            ("`shadowdiff_callers_rejected_total{reason}`", labelled(final.by("shadowdiff_callers_rejected_total", "reason"))),
            ("`shadowdiff_panics_total`", n(final.get("shadowdiff_panics_total"))),
        ]
        for name, value in rows:
            print(f"| {name} | {value} |")
        print()

    print("### The store\n")
    if db:
        print("| what | value |")
        print("|---|---|")
        print(f"| endpoints stored (distinct `endpoint_counters.endpoint`) | {db.get('db_endpoints', '?')} |")
        print(f"| requests stored under `METHOD {{other}}` | {n(float(db.get('db_other_requests') or 0))} |")
        print(f"| templates learned (`endpoint_templates`) | {db.get('db_templates', '?')}: {db.get('db_template_list', '')} |")
        print(f"| samples stored | {db.get('db_samples', '?')} |")
        print(f"| busiest endpoints (requests) | {db.get('db_top_endpoints', '')} |")
    else:
        print("The store could not be queried.")
    print()

    print("### Targets\n")
    print("| target | measured | verdict |")
    print("|---|---|---|")
    # The kernel's high-water mark sees a peak between two samples.
    high_water = int((idle.get("VmHWM") or "0").split()[0] or 0)
    true_peak = max(peak, high_water)
    print(
        f"| peak RSS under {RSS_TARGET_MIB} MiB (the larger of the peak sample and VmHWM) | {mib(true_peak)} | "
        f"{verdict(true_peak and true_peak < RSS_TARGET_MIB * 1024)} |"
    )
    print(
        f"| no caller-visible errors (non-2xx/3xx and socket errors) | "
        f"{'-' if caller_errors is None else n(caller_errors)} | {verdict(caller_errors == 0)} |"
    )
    print(
        f"| every request stored or counted as dropped | "
        f"{'no figures' if balance_ok is None else ('balance holds' if balance_ok else 'difference ' + n(difference))} | "
        f"{verdict(bool(balance_ok))} |"
    )


def events_text(events, prefix):
    for at, text in events:
        if text.startswith(prefix):
            return f"{text} at {at:.0f} s"
    return ""


if __name__ == "__main__":
    main(sys.argv[1])
