"""Turns bench/proxy.sh's raw figures (results.tsv) into the Markdown tables and target verdicts of BENCHMARKS.md."""

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
]


def load(path):
    with open(path) as file:
        return list(csv.DictReader(file, delimiter="\t"))


def median(rows, phase, config, column):
    values = [float(r[column]) for r in rows if r["phase"] == phase and r["config"] == config]
    return statistics.median(values) if values else None


def ms(micros):
    return f"{micros / 1000:.2f} ms"


def mib(kib):
    return f"{kib / 1024:.0f} MiB"


def verdict(met):
    return "**met**" if met else "**missed**"


def main(path):
    rows = load(path)
    m = lambda phase, config, column: median(rows, phase, config, column)  # noqa: E731

    print("### Saturation (medians)\n")
    print("| configuration | requests/s | p50 | p99 | p99.9 | vs direct | vs nginx | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for config in CONFIGS:
        rps = m("saturation", config, "rps")
        if rps is None:
            continue
        print(
            f"| {config} | {rps:,.0f} | {ms(m('saturation', config, 'p50_us'))} | "
            f"{ms(m('saturation', config, 'p99_us'))} | {ms(m('saturation', config, 'p999_us'))} | "
            f"{rps / m('saturation', 'direct', 'rps'):.2f}x | {rps / m('saturation', 'nginx', 'rps'):.2f}x | "
            f"{m('saturation', config, 'errors'):.0f} |"
        )

    print("\n### Half of saturation (medians, the same offered rate for every configuration)\n")
    print("| configuration | requests/s | p50 | p99 | p99.9 | p99 added over direct | p99 vs nginx | errors |")
    print("|---|---|---|---|---|---|---|---|")
    direct_p99 = m("half", "direct", "p99_us")
    nginx_p99 = m("half", "nginx", "p99_us")
    for config in CONFIGS:
        p99 = m("half", config, "p99_us")
        if p99 is None:
            continue
        print(
            f"| {config} | {m('half', config, 'rps'):,.0f} | {ms(m('half', config, 'p50_us'))} | {ms(p99)} | "
            f"{ms(m('half', config, 'p999_us'))} | {ms(p99 - direct_p99)} | {p99 / nginx_p99:.2f}x | "
            f"{m('half', config, 'errors'):.0f} |"
        )

    print("\n### Faulty candidate (one run each at the half-load rate)\n")
    print("| configuration | candidate | requests/s | p50 | p99 | p99.9 | p99 vs normal candidate | RSS max | RSS at end | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config in ["shadowdiff-sqlite", "nginx"]:
        normal = m("candidate-normal", config, "p99_us")
        for candidate in ["normal", "slow", "blackhole"]:
            phase = f"candidate-{candidate}"
            if m(phase, config, "rps") is None:
                continue
            p99 = m(phase, config, "p99_us")
            print(
                f"| {config} | {candidate} | {m(phase, config, 'rps'):,.0f} | {ms(m(phase, config, 'p50_us'))} | "
                f"{ms(p99)} | {ms(m(phase, config, 'p999_us'))} | {p99 / normal:.2f}x | "
                f"{mib(m(phase, config, 'rss_max_kib'))} | {mib(m(phase, config, 'rss_end_kib'))} | "
                f"{m(phase, config, 'errors'):.0f} |"
            )

    print("\n### Targets\n")
    for config in ["shadowdiff-sqlite", "shadowdiff-postgres"]:
        ratio = m("saturation", config, "rps") / m("saturation", "nginx", "rps")
        print(f"- {config}: throughput {ratio:.2f}x nginx's mirror (target >= 1.0x): {verdict(ratio >= 1.0)}")
        added = m("half", config, "p99_us") - direct_p99
        print(f"- {config}: p99 added over direct at half load {ms(added)} (target <= 1 ms): {verdict(added <= 1000)}")
    normal = m("candidate-normal", "shadowdiff-sqlite", "p99_us")
    for candidate in ["slow", "blackhole"]:
        ratio = m(f"candidate-{candidate}", "shadowdiff-sqlite", "p99_us") / normal
        print(f"- {candidate} candidate: caller p99 {ratio:.2f}x the normal one (target <= 1.1x): {verdict(ratio <= 1.1)}")
    peak = max(
        float(r["rss_max_kib"]) for r in rows if r["config"].startswith("shadowdiff")
    )
    print(f"- shadowdiff's RSS at most {mib(peak)} over every run (target < 200 MiB): {verdict(peak < 200 * 1024)}")


if __name__ == "__main__":
    main(sys.argv[1])
