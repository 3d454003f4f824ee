"""Turns bench/proxy.sh's raw figures (results.tsv) into the Markdown tables and target verdicts of BENCHMARKS.md.

Every figure is the median over the rounds of its phase and configuration. "stored/s" is shadowdiff's shadowed
throughput (exchanges compared and written to the store per second, from its /metrics); "shed" is the share of
the caller's requests not stored (1 - stored / received). Both only mean something for the shadowdiff
configurations that shadow, and read "–" elsewhere.
"""

import csv
import statistics
import sys

CONFIGS = [
    "direct",
    "nginx",
    "shadowdiff-sqlite",
    "shadowdiff-postgres",
    "nginx-proxy-only",
    "shadowdiff-unshadowed",
    "before-sqlite",
    "before-unshadowed",
]
# The configurations whose stored/s and shed are figures (the others store nothing, by design).
SHADOWED = {"shadowdiff-sqlite", "shadowdiff-postgres", "before-sqlite"}
# The runs that compare shadowdiff (SQLite) with nginx's mirror at saturation must last this long.
LONG_SECONDS = 30
DASH = "–"


def load(path):
    with open(path) as file:
        return list(csv.DictReader(file, delimiter="\t"))


def median(rows, phase, config, column):
    values = [
        float(r[column])
        for r in rows
        if r["phase"] == phase and r["config"] == config and (r.get(column) or "") != ""
    ]
    return statistics.median(values) if values else None


def rounds(rows, phase, config):
    return sum(1 for r in rows if r["phase"] == phase and r["config"] == config)


def ms(micros):
    return DASH if micros is None else f"{micros / 1000:.2f} ms"


def mib(kib):
    return DASH if kib is None else f"{kib / 1024:.0f} MiB"


def rate(value):
    return DASH if value is None else f"{value:,.0f}"


def pct(value):
    return DASH if value is None else f"{value:.1f} %"


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def times(value):
    return DASH if value is None else f"{value:.2f}x"


def of_rounds(count):
    return f"{count} round" if count == 1 else f"{count} rounds"


def verdict(met):
    if met is None:
        return "**missed** (not measured)"
    return "**met**" if met else "**missed**"


def main(path):
    rows = load(path)
    m = lambda phase, config, column: median(rows, phase, config, column)  # noqa: E731

    def stored(phase, config):
        return m(phase, config, "stored_per_s") if config in SHADOWED else None

    def shed(phase, config):
        return m(phase, config, "shed_pct") if config in SHADOWED else None

    reps = max((rounds(rows, "saturation", config) for config in CONFIGS), default=0)
    print(f"### Saturation (medians of {of_rounds(reps)})\n")
    print(
        "| configuration | run | requests/s | stored/s | shed | p50 | p99 | p99.9 | vs direct | vs nginx | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for config in CONFIGS:
        rps = m("saturation", config, "rps")
        if rps is None:
            continue
        print(
            f"| {config} | {m('saturation', config, 'duration_s'):.0f} s | {rate(rps)} | "
            f"{rate(stored('saturation', config))} | {pct(shed('saturation', config))} | "
            f"{ms(m('saturation', config, 'p50_us'))} | {ms(m('saturation', config, 'p99_us'))} | "
            f"{ms(m('saturation', config, 'p999_us'))} | "
            f"{times(ratio(rps, m('saturation', 'direct', 'rps')))} | "
            f"{times(ratio(rps, m('saturation', 'nginx', 'rps')))} | "
            f"{m('saturation', config, 'errors'):.0f} |"
        )

    reps = max((rounds(rows, "half", config) for config in CONFIGS), default=0)
    print(f"\n### Half of saturation (medians of {of_rounds(reps)}, the same offered rate for every configuration)\n")
    print(
        "| configuration | requests/s | stored/s | shed | p50 | p99 | p99.9 | p99 added over direct | p99 vs nginx "
        "| errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    direct_p99 = m("half", "direct", "p99_us")
    nginx_p99 = m("half", "nginx", "p99_us")
    for config in CONFIGS:
        p99 = m("half", config, "p99_us")
        if p99 is None:
            continue
        added = None if direct_p99 is None else p99 - direct_p99
        print(
            f"| {config} | {rate(m('half', config, 'rps'))} | {rate(stored('half', config))} | "
            f"{pct(shed('half', config))} | {ms(m('half', config, 'p50_us'))} | {ms(p99)} | "
            f"{ms(m('half', config, 'p999_us'))} | {ms(added)} | {times(ratio(p99, nginx_p99))} | "
            f"{m('half', config, 'errors'):.0f} |"
        )

    reps = max((rounds(rows, "candidate-normal", config) for config in CONFIGS), default=0)
    print(f"\n### Faulty candidate (medians of {of_rounds(reps)} at the half-load rate)\n")
    print(
        "| configuration | candidate | requests/s | stored/s | shed | p50 | p99 | p99.9 | p99 vs normal candidate "
        "| RSS max | RSS at end | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for config in ["shadowdiff-sqlite", "nginx"]:
        normal = m("candidate-normal", config, "p99_us")
        for candidate in ["normal", "slow", "blackhole"]:
            phase = f"candidate-{candidate}"
            if m(phase, config, "rps") is None:
                continue
            p99 = m(phase, config, "p99_us")
            print(
                f"| {config} | {candidate} | {rate(m(phase, config, 'rps'))} | {rate(stored(phase, config))} | "
                f"{pct(shed(phase, config))} | {ms(m(phase, config, 'p50_us'))} | {ms(p99)} | "
                f"{ms(m(phase, config, 'p999_us'))} | {times(ratio(p99, normal))} | "
                f"{mib(m(phase, config, 'rss_max_kib'))} | {mib(m(phase, config, 'rss_end_kib'))} | "
                f"{m(phase, config, 'errors'):.0f} |"
            )

    targets = []  # (target, measured, verdict)

    for config in ["shadowdiff-sqlite", "shadowdiff-postgres"]:
        p99 = m("half", config, "p99_us")
        added = None if p99 is None or direct_p99 is None else p99 - direct_p99
        lost = shed("half", config)
        met = None if added is None or lost is None else added <= 1000 and lost <= 1
        targets.append(
            (
                f"{config}: p99 added over direct at half load ≤ 1 ms, with ≤ 1 % shed",
                f"{ms(added)} added ({ms(p99)} vs {ms(direct_p99)}), {pct(lost)} shed",
                verdict(met),
            )
        )

    hop = m("saturation", "shadowdiff-unshadowed", "rps")
    nginx_hop = m("saturation", "nginx-proxy-only", "rps")
    hop_ratio = ratio(hop, nginx_hop)
    targets.append(
        (
            "the hop at saturation: shadowdiff-unshadowed requests/s ≥ 1.0x nginx-proxy-only's",
            f"{rate(hop)} vs {rate(nginx_hop)} requests/s ({times(hop_ratio)})",
            verdict(None if hop_ratio is None else hop_ratio >= 1.0),
        )
    )

    hop_p99 = m("half", "shadowdiff-unshadowed", "p99_us")
    nginx_hop_p99 = m("half", "nginx-proxy-only", "p99_us")
    targets.append(
        (
            "the hop at half load: shadowdiff-unshadowed p99 ≤ nginx-proxy-only's",
            f"{ms(hop_p99)} vs {ms(nginx_hop_p99)}",
            verdict(None if hop_p99 is None or nginx_hop_p99 is None else hop_p99 <= nginx_hop_p99),
        )
    )

    sqlite_stored = stored("saturation", "shadowdiff-sqlite")
    shadowed_ratio = ratio(sqlite_stored, hop)
    targets.append(
        (
            "at saturation: shadowdiff-sqlite stored/s ≥ 1/3 of shadowdiff-unshadowed's requests/s",
            f"{rate(sqlite_stored)} stored/s vs {rate(hop)} requests/s ({times(shadowed_ratio)}, needs 0.33x)",
            verdict(None if shadowed_ratio is None else shadowed_ratio >= 1 / 3),
        )
    )

    nginx_rps = m("saturation", "nginx", "rps")
    long_ratio = ratio(sqlite_stored, nginx_rps)
    durations = [
        float(r["duration_s"])
        for r in rows
        if r["phase"] == "saturation" and r["config"] in ("shadowdiff-sqlite", "nginx")
    ]
    shortest = min(durations, default=None)
    long_enough = shortest is not None and shortest >= LONG_SECONDS - 0.5
    long_verdict = verdict(None if long_ratio is None else long_ratio >= 2.0)
    if long_ratio is not None and not long_enough:
        long_verdict = f"**missed** (runs of {shortest:.0f} s, under {LONG_SECONDS} s)"
    targets.append(
        (
            f"in the ≥ {LONG_SECONDS} s saturation runs: shadowdiff-sqlite stored/s ≥ 2x nginx mirror's "
            "requests/s",
            f"{rate(sqlite_stored)} stored/s vs {rate(nginx_rps)} requests/s ({times(long_ratio)}), "
            f"shortest run {DASH if shortest is None else f'{shortest:.0f} s'}",
            long_verdict,
        )
    )

    for config in ["shadowdiff-sqlite", "shadowdiff-postgres"]:
        rps = m("saturation", config, "rps")
        throughput = ratio(rps, nginx_rps)
        targets.append(
            (
                f"{config}: requests/s at saturation ≥ 1.0x nginx mirror's",
                f"{rate(rps)} vs {rate(nginx_rps)} requests/s ({times(throughput)})",
                verdict(None if throughput is None else throughput >= 1.0),
            )
        )

    normal = m("candidate-normal", "shadowdiff-sqlite", "p99_us")
    for candidate in ["slow", "blackhole"]:
        p99 = m(f"candidate-{candidate}", "shadowdiff-sqlite", "p99_us")
        fault_ratio = ratio(p99, normal)
        targets.append(
            (
                f"shadowdiff-sqlite with a {candidate} candidate: caller p99 ≤ 1.1x the normal candidate's",
                f"{ms(p99)} vs {ms(normal)} ({times(fault_ratio)})",
                verdict(None if fault_ratio is None else fault_ratio <= 1.1),
            )
        )

    peaks = [float(r["rss_max_kib"]) for r in rows if r["config"].startswith("shadowdiff")]
    peak = max(peaks, default=None)
    targets.append(
        (
            "shadowdiff's RSS < 200 MiB over every run",
            f"at most {mib(peak)}",
            verdict(None if peak is None else peak < 200 * 1024),
        )
    )

    print("\n### Targets\n")
    print("| # | target | measured (medians) | verdict |")
    print("|---|---|---|---|")
    for number, (target, measured, outcome) in enumerate(targets, 1):
        print(f"| {number} | {target} | {measured} | {outcome} |")


if __name__ == "__main__":
    main(sys.argv[1])
