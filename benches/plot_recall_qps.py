#!/usr/bin/env python3
"""Plots recall@10 (x) against QPS (y, log scale) from a benches/lsh_vs_pgvector.py results file.

Uses only Pillow (already in scripts/requirements.txt), no matplotlib.

  python benches/plot_recall_qps.py target/bench/results_100000.json [--cpu] [-o OUT.png]
(default output beside the results: recall_qps_100000.png, or recall_qps_cpu_100000.png with --cpu)
"""

import argparse
import json
import math
import os

from PIL import Image, ImageDraw, ImageFont

W, H = 1300, 800
LEFT, RIGHT, TOP, BOTTOM = 90, 430, 60, 70
LEGEND_X = 60  # legend starts this far right of the plot (room for point labels at recall 1.0)
PALETTE = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


SWEPT = ("probes=", "ef_search=", "rerank=")


def _split(setting):
    """'lists=100 probes=4' -> ('p4', 'lists=100'): the swept knob (short) and the rest (the variant)."""
    toks = setting.split()
    swept = [t for t in toks if t.startswith(SWEPT)]
    rest = [t for t in toks if not t.startswith(SWEPT)]
    short = swept[0].replace("probes=", "p").replace("ef_search=", "ef").replace("rerank=", "r") if swept else ""
    return short, " ".join(rest)


def _series(doc, key):
    """series name -> result rows with `key` (qps or qps_cpu) and recall, in file order. A series is one
    method with one fixed variant (index options, extra GUCs); its points are the swept knob."""
    out = {}
    for r in doc["results"]:
        if r.get(key) and r.get("recall") is not None:
            short, rest = _split(r["setting"])
            name = r["method"] if (not rest or rest == "seq scan" or not short) else f"{r['method']} {rest}"
            out.setdefault(name, []).append(dict(r, qps=r[key], label=short))
    return out


def plot(doc, path, key="qps"):
    """key: "qps" (queries / in-server wall time) or "qps_cpu" (queries / backend CPU second)."""
    series = _series(doc, key)
    if not series:
        raise ValueError("no measured rows to plot")
    pts = [r for rs in series.values() for r in rs]
    rmin = min(r["recall"] for r in pts)
    x0 = max(0.0, math.floor((rmin - 0.02) * 10) / 10)
    x1 = 1.0
    lq = [math.log10(r["qps"]) for r in pts]
    exact = next((r for r in pts if r["method"].startswith("exact (pg_imgsim")), None)
    if exact:
        lq.append(math.log10(exact["qps"] * 100))
    y0, y1 = math.floor(min(lq)), math.ceil(max(lq))
    if y1 == y0:
        y1 += 1

    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f, fs, fb = _font(15), _font(12), _font(18)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(rec, qps):
        return (LEFT + (rec - x0) / (x1 - x0) * pw, TOP + ph - (math.log10(qps) - y0) / (y1 - y0) * ph)

    # grid and axes
    for e in range(y0, y1 + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if not (10 ** y0 <= v <= 10 ** y1):
                continue
            _, yy = px(x0, v)
            d.line([(LEFT, yy), (LEFT + pw, yy)], fill=(200, 200, 200) if m == 1 else (235, 235, 235))
            lbl = f"{v:g}" if v < 1e6 else f"1e{e}"
            d.text((LEFT - 8, yy), lbl, fill="black", font=fs if m != 1 else f, anchor="rm")
    step = 0.05 if x1 - x0 <= 0.5 else 0.1
    t = x0
    while t <= x1 + 1e-9:
        xx, _ = px(t, 10 ** y0)
        d.line([(xx, TOP), (xx, TOP + ph)], fill=(225, 225, 225))
        d.text((xx, TOP + ph + 8), f"{t:.2f}", fill="black", font=f, anchor="mt")
        t += step
    d.rectangle([LEFT, TOP, LEFT + pw, TOP + ph], outline="black")
    d.text((LEFT + pw / 2, H - 22), "recall@10", fill="black", font=f, anchor="mm")
    ylabel = "QPS\n(log)" if key == "qps" else "QPS per\nCPU s\n(log)"
    d.text((12, TOP + ph / 2), ylabel, fill="black", font=f, anchor="lm")
    title = (f"recall@10 vs {'QPS' if key == 'qps' else 'QPS per backend CPU second'}: {doc['rows']:,} rows x {doc['dims']}-d {doc.get('data_desc', 'clustered')}, {doc['queries']} queries, "
             f"{doc['machine']['cpus']} shared CPUs, one backend")
    d.text((LEFT, 22), title, fill="black", font=fb, anchor="lm")

    # goal guides: recall 0.95 and 100x exact
    if x0 < 0.95:
        xx, _ = px(0.95, 10 ** y0)
        for yy in range(TOP, TOP + ph, 12):
            d.line([(xx, yy), (xx, yy + 6)], fill=(120, 120, 120))
    if exact:
        _, yy = px(x0, exact["qps"] * 100)
        for xx in range(LEFT, LEFT + pw, 12):
            d.line([(xx, yy), (xx + 6, yy)], fill=(120, 120, 120))
        d.text((LEFT + 6, yy - 4), "100x exact scan", fill=(90, 90, 90), font=fs, anchor="lb")

    # series
    ly = TOP
    for i, (name, rs) in enumerate(series.items()):
        col = PALETTE[i % len(PALETTE)]
        xy = [px(r["recall"], r["qps"]) for r in rs]
        if len(xy) > 1:
            d.line(xy, fill=col, width=2)
        for (xx, yy), r in zip(xy, rs):
            d.ellipse([xx - 4, yy - 4, xx + 4, yy + 4], fill=col, outline="black")
            lbl = r["label"]
            if lbl:
                d.text((xx + 6, yy - 6), lbl, fill=col, font=fs, anchor="lb")
        build = rs[0].get("build_s")
        legend = name + (f"  (build {build:.1f} s)" if build else "")
        d.rectangle([LEFT + pw + LEGEND_X, ly + 4, LEFT + pw + LEGEND_X + 14, ly + 18], fill=col, outline="black")
        d.text((LEFT + pw + LEGEND_X + 20, ly + 11), legend, fill="black", font=fs, anchor="lm")
        ly += 24
    ly += 10
    for line in ("p = lsh.probes / ivfflat.probes", "ef = hnsw.ef_search", "r = lsh.rerank[@scan_fraction]",
                 "dashed: recall 0.95, 100x exact",
                 f"{doc['date']}"):
        d.text((LEFT + pw + LEGEND_X, ly), line, fill=(80, 80, 80), font=fs, anchor="lm")
        ly += 18
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="target/bench/results_N.json")
    ap.add_argument("-o", "--output", help="PNG path (default: beside the results, recall_qps[_cpu]_<suffix>.png)")
    ap.add_argument("--cpu", action="store_true", help="plot QPS per backend CPU second instead of wall-clock QPS")
    a = ap.parse_args()
    with open(a.results) as fh:
        doc = json.load(fh)
    suffix = os.path.basename(a.results)[len("results_"):-len(".json")] if \
        os.path.basename(a.results).startswith("results_") else str(doc["rows"])
    name = f"recall_qps_cpu_{suffix}.png" if a.cpu else f"recall_qps_{suffix}.png"
    out = a.output or os.path.join(os.path.dirname(os.path.abspath(a.results)), name)
    print(plot(doc, out, "qps_cpu" if a.cpu else "qps"))


if __name__ == "__main__":
    main()
