#!/usr/bin/env python3
"""Where a decode step's time goes, from a DINFER_CUDA_TRACE_OUT file (not a test; run on the GPU
machine after a run of a -DDINFER_CUDA_TRACE=ON build):

    DINFER_CUDA_TRACE_OUT=/tmp/t.txt build-trace/launch/dinfer-run --model M --bench ...
    tests/gpu/trace_step.py /tmp/t.txt [--show FIRST:LAST]   (default 14:8: the step's first 14
                                                          launches and its last 8)
    tests/gpu/trace_step.py /tmp/t.txt --clusters       (the split attention's clusters: when each
                                                          block's keys were done against its siblings')

Each launch's blocks recorded when they reached pdl_wait, when they passed it (the kernel ahead
done) and, for the weight-streaming products and the split attention, when each block's math was
done (its mark: the epilogue after it; the split attention's second mark, `to-mk2`, after its
cluster's barrier) and when its work ended. Launches are ordered
by their first release (a kernel's blocks cannot pass the wait before the one ahead ends), the
step's repeating launches found, and for each launch of the step: when it was released (from the
step's first launch), its span (to the next launch's release: its share of the step's critical
path), how long its first blocks sat resident before the release (the overlap programmatic
dependent launch buys), when its last block was released (waves) and when its last block ended,
the time from that end to the next launch's release (the dependency's own cost), and the share of its
blocks that had reached their wait by its release (resident%: those that were not, waited for room on
an SM). Then the
same summed by launch shape (grid x block) over the step."""
import collections
import sys


def load(path):
    """the records by launch: a graph node keeps its %gridid over replays, so a grid's records are
    split by replay, the k-th record of each block (in time) in replay k"""
    by_grid = collections.defaultdict(list)
    sig, header = {}, []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                header.append(line.strip())
                continue
            p = line.split()
            if len(p) not in (10, 11, 12):
                continue
            grid, block, sm, t_pre, t_post, t_end = (int(v) for v in p[:6])
            sig[grid] = tuple(int(v) for v in p[6:10])
            t_mark = int(p[10]) if len(p) >= 11 else 0
            t_mark2 = int(p[11]) if len(p) == 12 else 0
            by_grid[grid].append((t_post, block, sm, t_pre, t_end, t_mark, t_mark2))
    launches = collections.defaultdict(list)
    for grid, recs in by_grid.items():
        recs.sort()
        seen = collections.Counter()
        for t_post, block, sm, t_pre, t_end, t_mark, t_mark2 in recs:
            k = seen[block]
            seen[block] += 1
            launches[(grid, k)].append((block, sm, t_pre, t_post, t_end, t_mark, t_mark2))
    return launches, sig, header


def period(seq):
    """the shortest p with seq[i] == seq[i + p] for (nearly) every i"""
    n = len(seq)
    for p in range(1, n // 2 + 1):
        same = sum(1 for i in range(n - p) if seq[i] == seq[i + p])
        if same >= 0.995 * (n - p):
            return p
    return n


def clusters(groups, sig):
    """the split attention's clusters (launches whose grid has z > 1: a cluster is the z blocks of one
    x, y), each block's times against its cluster's: whether the combine's barrier waits for a late
    sibling or costs its own time"""
    rows = collections.defaultdict(list)
    by_split = collections.defaultdict(lambda: collections.defaultdict(list))
    for (g, _k), w in groups.items():
        gx, gy, gz, _bx = sig[g]
        if gz < 2:
            continue
        by = collections.defaultdict(list)
        for block, _sm, t_pre, t_post, t_end, t_mark, t_mark2 in w:
            by[block % (gx * gy)].append((t_pre, t_post, t_end, t_mark, t_mark2, block // (gx * gy)))
        for c in by.values():
            if len(c) < 2 or not all(r[3] and r[4] for r in c):
                continue
            post = [r[1] for r in c]
            mark = [r[3] for r in c]
            mark2 = [r[4] for r in c]
            for r in c:
                by_split[sig[g]][r[5]].append(((r[1] - min(post)) / 1e3, (r[3] - r[1]) / 1e3, (r[3] - min(mark)) / 1e3))
            rows[sig[g]].append(dict(
                arrive=(max(r[0] for r in c) - min(r[0] for r in c)) / 1e3,
                release=(max(post) - min(post)) / 1e3,
                keys=(max(mark) - min(mark)) / 1e3,
                keys_own=sum(m - p for m, p in zip(mark, post)) / len(c) / 1e3,
                slowest=(max(mark) - min(post)) / 1e3,
                barrier=(min(mark2) - max(mark)) / 1e3,
                passed=(max(mark2) - min(mark2)) / 1e3,
                end=(max(r[2] for r in c) - max(mark2)) / 1e3))
    if not rows:
        print("no split attention's clusters with both marks in the trace")
        return
    print("\nThe split attention's clusters (us; means over the clusters; spreads are the latest block's time"
          " less the earliest's):")
    print("  grid x block        clusters  arrive-spread  release-spread  keys-own  keys-spread  first-release"
          "->last-keys  last-keys->first-barrier  barrier-spread  last-barrier->last-end")
    for g, rs in rows.items():
        def m(key):
            return sum(r[key] for r in rs) / len(rs)
        print(f"  {g[0]}x{g[1]}x{g[2]} x {g[3]:<4d}".ljust(22)
              + f"{len(rs):8d} {m('arrive'):14.2f} {m('release'):15.2f} {m('keys_own'):9.2f}"
              f" {m('keys'):12.2f} {m('slowest'):25.2f} {m('barrier'):25.2f} {m('passed'):15.2f} "
              f"{m('end'):23.2f}")
        print("    by split (the cluster's rank): release after the cluster's first, keys after its own release, "
              "keys done after the cluster's first block's")
        for z, v in sorted(by_split[g].items()):
            print(f"    split {z}: " + " ".join(f"{sum(x[i] for x in v) / len(v):6.2f}" for i in range(3)))


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: trace_step.py TRACE_FILE [--show FIRST:LAST] [--clusters]")
    groups, sig, header = load(sys.argv[1])
    if "--clusters" in sys.argv:
        clusters(groups, sig)
        return
    show_first, show_last = 14, 8
    if "--show" in sys.argv:
        show_first, show_last = (int(v) for v in sys.argv[sys.argv.index("--show") + 1].split(":"))
    for h in header:
        print(h)
    launches = []
    res = None
    for (g, k), w in groups.items():
        post = sorted(r[3] for r in w)
        diffs = [b - a for a, b in zip(post, post[1:]) if b > a]
        if diffs:
            res = min(res, min(diffs)) if res is not None else min(diffs)
        ends = [r[4] for r in w if r[4]]
        durs = [r[4] - r[3] for r in w if r[4]]
        marks = [r[5] - r[3] for r in w if r[5]]
        marks2 = [r[6] - r[3] for r in w if r[6]]
        launches.append(dict(grid=g, sig=sig[g], n=len(w), pre=min(r[2] for r in w), post0=post[0], post1=post[-1],
                             end=max(ends) if ends else None, dur=sum(durs) / len(durs) if durs else None,
                             mark=sum(marks) / len(marks) if marks else None,
                             mark2=sum(marks2) / len(marks2) if marks2 else None, sms=len({r[1] for r in w}),
                             res=100.0 * sum(1 for r in w if r[2] <= post[0]) / len(w)))
    launches.sort(key=lambda l: l["post0"])
    print(f"# {len(launches)} launches; the timer's smallest step between two blocks' releases: {res} ns")
    sigs = [l["sig"] for l in launches]
    p = period(sigs)
    # the step starts where the repeating pattern starts: the launch after the longest span in the first period
    spans = [launches[i + 1]["post0"] - launches[i]["post0"] for i in range(len(launches) - 1)]
    first = max(range(min(p, len(spans))), key=lambda i: spans[i]) + 1 if p < len(launches) else 0
    steps = []
    i = first
    while i + p <= len(launches):
        steps.append(launches[i:i + p + 1] if i + p < len(launches) else launches[i:i + p])
        i += p
    if not steps:
        sys.exit("trace_step: no whole step in the trace")
    full = [s for s in steps if len(s) == p + 1]
    if not full:
        full = steps
    print(f"# a step: {p} launches; {len(full)} whole steps with the next step's first launch")
    step_us = [(s[-1]["post0"] - s[0]["post0"]) / 1e3 for s in full if len(s) == p + 1]
    if step_us:
        print(f"# step time (release to release): {sum(step_us) / len(step_us):.1f} us "
              f"({1e6 / (sum(step_us) / len(step_us)):.1f} steps/s); each: " + " ".join(f"{v:.1f}" for v in step_us))

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    def fmt(v, w=8):
        return f"{v:{w}.2f}" if v is not None else " " * (w - 1) + "-"

    rows = []
    for j in range(p):
        col = [s[j] for s in full]
        nxt = [s[j + 1] for s in full if len(s) > j + 1]
        rows.append(dict(
            sig=col[0]["sig"], n=col[0]["n"], sms=col[0]["sms"],
            rel=mean([(c["post0"] - s[0]["post0"]) / 1e3 for c, s in zip(col, full)]),
            span=mean([(b["post0"] - a["post0"]) / 1e3 for a, b in zip(col, nxt)]),
            early=mean([(c["post0"] - c["pre"]) / 1e3 for c in col]),
            waves=mean([(c["post1"] - c["post0"]) / 1e3 for c in col]),
            end=mean([(c["end"] - c["post0"]) / 1e3 if c["end"] else None for c in col]),
            dur=mean([c["dur"] / 1e3 if c["dur"] else None for c in col]),
            mark=mean([c["mark"] / 1e3 if c["mark"] else None for c in col]),
            mark2=mean([c["mark2"] / 1e3 if c["mark2"] else None for c in col]),
            gap=mean([(b["post0"] - a["end"]) / 1e3 if a["end"] else None for a, b in zip(col, nxt)]),
            res=mean([c["res"] for c in col])))
    hdr = ("  pos  grid x block            blocks  SMs  release     span    early  last-rel  last-end  blk-dur  to-mark"
           "  end->next   to-mk2  resident%")
    print("\nEach launch of a step (us; means over the steps):")
    print(hdr)
    show = sorted(set(range(min(show_first, p))) | set(range(max(p - show_last, 0), p)))
    for k, j in enumerate(show):
        if k and show[k - 1] != j - 1:
            print("  ...")
        r = rows[j]
        g = r["sig"]
        print(f"{j:5d}  {g[0]}x{g[1]}x{g[2]} x {g[3]:<4d}".ljust(30) + f"{r['n']:6d} {r['sms']:4d} {fmt(r['rel'])} "
              f"{fmt(r['span'])} {fmt(r['early'])} {fmt(r['waves'], 9)} {fmt(r['end'], 9)} {fmt(r['dur'])} "
              f"{fmt(r['mark'])} {fmt(r['gap'], 10)} {fmt(r['mark2'])} {fmt(r['res'], 10)}")
    by = collections.OrderedDict()
    for r in rows:
        a = by.setdefault(r["sig"], dict(k=0, span=0.0, early=[], end=[], gap=[], dur=[], mark=[], res=[], n=r["n"]))
        a["k"] += 1
        a["span"] += r["span"] or 0.0
        for key in ("early", "end", "gap", "dur", "mark", "res"):
            a[key].append(r[key])
    total = sum(a["span"] for a in by.values())
    print(f"\nBy launch shape (a step's spans summed: {total:.1f} us):")
    print("  grid x block                 blocks  a step   span/launch  span/step   share  early  last-end  blk-dur"
          "  to-mark  end->next  resident%")
    for g, a in sorted(by.items(), key=lambda kv: -kv[1]["span"]):
        print(f"  {g[0]}x{g[1]}x{g[2]} x {g[3]:<4d}".ljust(30) + f"{a['n']:6d} {a['k']:7d} {a['span'] / a['k']:12.2f} "
              f"{a['span']:10.1f} {100 * a['span'] / total:6.1f}% {fmt(mean(a['early']), 6)} {fmt(mean(a['end']), 9)} "
              f"{fmt(mean(a['dur']))} {fmt(mean(a['mark']))} {fmt(mean(a['gap']), 10)} {fmt(mean(a['res']), 10)}")


if __name__ == "__main__":
    main()
